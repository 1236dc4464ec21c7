//! The non-protocol fuzz entry points: addresses, configs, bounces. Each
//! function is what one fuzz target runs on its input, and what the stable
//! replay test runs on the stored corpus. Each panics on a broken invariant
//! (that is how a fuzzer reports it).

use listwarden::address::{self, Address, Key, KeyRing, PrvsResult, VerpResult, prvs, verp};
use listwarden::config::Config;
use std::path::Path;
use std::sync::LazyLock;

/// The simple Postfix-style path reading `parse_path` is checked against
/// (shared with the crate's proptest).
#[path = "../../crates/core/src/address/reference.rs"]
mod reference;

/// The day the address target verifies on (days since the epoch), near a
/// prvs wrap (mod 1000) so window arithmetic across the wrap is exercised.
pub const TODAY: u64 = 20_998;

/// Validity of the fixed ring, in days.
pub const VALIDITY_DAYS: u32 = 7;

/// A fixed ring: key 1 signs, key 2 verifies (rotation), key 9 exists.
pub static RING: LazyLock<KeyRing> = LazyLock::new(|| {
    let key = |id, secret: &[u8]| Key::new(id, secret).expect("fixed fuzz key is valid");
    KeyRing::new(
        vec![
            key(1, b"listwarden-fuzz-key-one-0123456789"),
            key(2, b"listwarden-fuzz-key-two-0123456789"),
            key(9, b"listwarden-fuzz-key-nine-012345678"),
        ],
        1,
        VALIDITY_DAYS,
    )
    .expect("fixed fuzz ring is valid")
});

/// Address target: byte 0 picks a day offset (-8..=8 around [`TODAY`]);
/// the rest, as (lossy) UTF-8, goes through every address entry point.
pub fn address(data: &[u8]) {
    let (offset, text) = match data.split_first() {
        Some((b, rest)) => (i64::from(*b % 17) - 8, rest),
        None => (0, data),
    };
    let today = TODAY.saturating_add_signed(offset);
    let text = String::from_utf8_lossy(text);
    let text = text.as_ref();

    for addr in address::mailboxes_in_header(text) {
        check_display_round_trip(&addr);
    }
    if let Ok(addr) = Address::parse(text) {
        check_display_round_trip(&addr);
    }
    check_reference_agreement(text);
    let Ok(Some(addr)) = address::parse_path(text) else {
        return;
    };
    check_display_round_trip(&addr);
    if let Some(decoded) = verp::decode(&addr) {
        // The list bounce and member rebuild an address of the same shape.
        let again = verp::encode(&decoded.list_bounce, &decoded.member);
        if let Ok(again) = again {
            assert_eq!(
                verp::decode(&again).map(|d| d.member),
                Some(decoded.member.clone()),
                "VERP decode(encode(x)) != x for {addr}"
            );
        }
    }
    let _ = verp::base_address(&addr);
    match prvs::verify(&addr, &RING, today) {
        PrvsResult::Valid { original, key_id } => {
            assert!(
                RING.get(key_id).is_some(),
                "valid with a key not in the ring"
            );
            assert!(
                original.len() < addr.len(),
                "prvs original not shorter than the tag"
            );
        }
        PrvsResult::Unsigned => assert!(
            prvs::strip(&addr).is_none(),
            "unsigned yet strippable: {addr}"
        ),
        _ => {}
    }
    if let VerpResult::Valid { key_id, .. } = verp::verify_verp(&addr, &RING, today, VALIDITY_DAYS)
    {
        assert!(
            RING.get(key_id).is_some(),
            "valid VERP with a key not in the ring"
        );
    }
    // What we sign must verify, on the day of signing and within validity.
    // (Addresses close to the length cap cannot grow a tag; see prvs::sign.)
    if addr.len() + prvs::PRVS_TAG_LEN < address::MAX_ADDRESS_LEN {
        let signed = prvs::sign(&addr, &RING, today);
        for day in [today, today + u64::from(VALIDITY_DAYS) - 1] {
            assert!(
                matches!(
                    prvs::verify(&signed, &RING, day),
                    PrvsResult::Valid { key_id: 1, .. }
                ),
                "prvs sign/verify round trip failed for {addr} -> {signed} on day {day}"
            );
        }
        // Its display form parses back to the same thing (it goes on the wire).
        check_display_round_trip(&signed);
    }
}

/// `parse_path` reads what the simple Postfix-style reference reads
/// whenever both read something (the reference declines odd shapes).
fn check_reference_agreement(text: &str) {
    let (Ok(got), Some(want)) = (address::parse_path(text), reference::postfix_path(text)) else {
        return;
    };
    match want {
        None => assert_eq!(got, None, "reference reads the null path in {text:?}"),
        Some((local, domain)) => {
            if let Ok(want) = Address::new(&local, &domain) {
                assert_eq!(
                    got,
                    Some(want),
                    "parse_path and the reference differ on {text:?}"
                );
            }
        }
    }
}

/// `Address::parse(display(a)) == a` (documented on `Display for Address`).
fn check_display_round_trip(addr: &Address) {
    let shown = addr.to_string();
    let again = Address::parse(&shown);
    assert_eq!(
        again.as_ref(),
        Ok(addr),
        "display round trip: {addr:?} shown as {shown:?}"
    );
}

/// Path fragments a config under fuzzing may not name: a rules file there
/// would be read without end (`/dev/zero`) or block (a FIFO). That hazard
/// is a finding with its own test (FINDINGS.md), not something to rediscover
/// on every run.
const UNSAFE_PATHS: [&str; 4] = ["dev/", "proc/", "sys/", "fd/"];

/// Config target: the input as YAML, parsed and validated as if it were
/// `origin` (relative key and rules files resolve next to it). A config
/// that parses must render its errors and warnings without panicking.
pub fn config(data: &[u8], origin: &Path) {
    let text = String::from_utf8_lossy(data);
    if UNSAFE_PATHS.iter().any(|p| text.contains(p)) {
        return;
    }
    match Config::parse(&text, origin) {
        Ok(config) => {
            for w in &config.warnings {
                assert!(!w.is_empty());
            }
            assert!(config.milter.max_connections >= 1);
            assert!(config.limits.max_recipients >= 1);
        }
        Err(e) => {
            // Every diagnostic renders on its own line.
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
}

/// DSN target: parse, classify with the built-in rules, render; exactly
/// the crate's own fuzz entry point.
pub fn dsn(data: &[u8]) {
    listwarden::dsn::fuzz_parse_classify(data);
}
