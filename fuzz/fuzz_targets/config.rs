//! `Config::parse` on arbitrary text, as if it were config/listwarden.yaml
//! (so relative key and rules files resolve to the shipped examples).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let origin = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/listwarden.yaml");
    listwarden_fuzz::inputs::config(data, Path::new(origin));
});
