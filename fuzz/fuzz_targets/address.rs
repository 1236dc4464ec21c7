//! SMTP paths, `From:` mailbox lists, VERP and prvs with a fixed key ring.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listwarden_fuzz::inputs::address(data);
});
