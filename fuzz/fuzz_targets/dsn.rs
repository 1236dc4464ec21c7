//! Bounce / feedback-report parsing and classification on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listwarden_fuzz::inputs::dsn(data);
});
