//! VERP bounce addresses: plain (Postfix XVERP style) and listwarden's signed form.
//!
//! Grammar (the list bounce local part must not contain `+`):
//!
//! ```text
//! plain  = bounce-local "+" member-local "=" member-domain "@" list-domain
//! signed = bounce-local "+" "lw-" K DDDD TAG "=" member-local "=" member-domain
//!          "@" list-domain
//! K      = DIGIT          ; key id, 0-9
//! DDDD   = 4DIGIT         ; signing day: unix_day mod 10000
//! TAG    = 16base32       ; RFC 4648 alphabet, lowercase on output, either case on input
//! ```
//!
//! Decoding splits at the *first* `+` (what Postfix's `recipient_delimiter` does) and
//! at the *last* `=` (domains never contain `=`; member local parts may contain both
//! `+` and `=`). `lw-` is matched case-insensitively.
//!
//! TAG is the first 80 bits of HMAC-SHA256(key, message) with
//!
//! ```text
//! message = "listwarden-verp-v1" %x00 K DDDD
//!           len16(bounce-local) bounce-local   len16(list-domain) list-domain
//!           len16(member-local) member-local   len16(member-domain) member-domain
//! ```
//!
//! where `len16` is the byte length as big-endian u16, local parts are ASCII-lowercased
//! and domains in canonical lowercase, so the tag survives MTAs that case-fold the
//! local part. Length prefixes make the field split unambiguous, and signing the list
//! bounce address means a tag minted for one list is worthless at another.
//!
//! Unlike prvs the stamp is the *signing* day, so the validity window is a verifier
//! setting: [`verify_verp`] takes it as a parameter and changing it applies to tags
//! already out there. A tag up to [`FUTURE_SKEW_DAYS`] ahead of the verifier's clock is
//! accepted (another signer's clock may be ahead); further ahead is
//! [`VerpResult::Invalid`], older than the window is [`VerpResult::Expired`], with the
//! same nearer-reading rule for the wrapping counter as prvs.

use hmac::Mac;

use super::keys::{Key, KeyRing, MAX_VALIDITY_DAYS};
use super::{
    Address, AddressError, DayWindow, MAX_ADDRESS_LEN, classify_day, fold_domain,
    update_ascii_lower,
};

/// Separates the list bounce local part from the extension (Postfix `+`).
pub const DELIMITER: char = '+';
/// Separates member local part and member domain (Postfix XVERP `=`).
pub const SEPARATOR: char = '=';
/// Marks a signed extension; matched case-insensitively.
pub const SIGNED_MARKER: &str = "lw-";
/// Days a signed stamp may lie ahead of the verifier's clock.
pub const FUTURE_SKEW_DAYS: u32 = 1;

const STAMP_MODULUS: u64 = 10_000;
const TAG_CHARS: usize = 16;
const TAG_BYTES: usize = 10;
/// `lw-` K DDDD TAG: everything before the `=` that starts the member.
const SIGNED_HEAD_LEN: usize = 3 + 1 + 4 + TAG_CHARS;
const DOMAIN_SEPARATION: &[u8] = b"listwarden-verp-v1\0";
const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("list bounce address is invalid: {0}")]
    BadBounceAddress(AddressError),
    #[error("list bounce local part contains the '+' delimiter")]
    DelimiterInBounceLocal,
    #[error("member address is invalid: {0}")]
    BadMember(AddressError),
    #[error("member local part would be read back as a signed tag")]
    LooksSigned,
    #[error("encoded address would exceed {MAX_ADDRESS_LEN} bytes")]
    TooLong,
}

/// A decoded plain VERP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerpAddress {
    /// `bounce-local@list-domain`, the list's own bounce address.
    pub list_bounce: Address,
    /// The subscriber the bounce is about, local part as received.
    pub member: Address,
}

/// Outcome of [`verify_verp`]. Anything but `Valid` means "not a bounce of ours".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerpResult {
    /// Correct tag inside the window. `member`'s local part is as received (possibly
    /// case-folded): compare with [`Address::same_mailbox`].
    Valid { member: Address, key_id: u8 },
    /// No `+lw-` extension (may still be plain VERP: try [`decode`]).
    Unsigned,
    /// Malformed, too long, wrong HMAC, or future-dated beyond the skew.
    Invalid,
    /// Correct HMAC, but older than the validity window.
    Expired,
    /// Well-formed tag naming a key id that is not in the ring.
    UnknownKey,
}

/// Encodes `member` into `list_bounce` as plain VERP: `bounce+user=domain@listdomain`.
pub fn encode(list_bounce: &Address, member: &Address) -> Result<Address, VerpError> {
    let (bounce, member) = checked_parts(list_bounce, member)?;
    let extension = format!("{}{SEPARATOR}{}", member.local, member.domain);
    if signed_shape(&extension).is_some() {
        return Err(VerpError::LooksSigned);
    }
    join(&bounce, &extension)
}

/// Decodes a plain VERP address. `None` if `addr` has no extension, the member part is
/// not a valid address, lengths are out of bounds, or the extension is a signed tag
/// (use [`verify_verp`] for those; never trust an unverified signed form).
pub fn decode(addr: &Address) -> Option<VerpAddress> {
    if addr.len() > MAX_ADDRESS_LEN {
        return None;
    }
    let (bounce_local, extension) = addr.local.split_once(DELIMITER)?;
    if signed_shape(extension).is_some() {
        return None;
    }
    let (member_local, member_domain) = extension.rsplit_once(SEPARATOR)?;
    Some(VerpAddress {
        list_bounce: Address::new(bounce_local, &addr.domain).ok()?,
        member: Address::new(member_local, member_domain).ok()?,
    })
}

/// The address with any `+extension` removed (`bounce+x=y@list` → `bounce@list`), for
/// looking up which list a bounce belongs to. `None` without an extension.
pub fn base_address(addr: &Address) -> Option<Address> {
    let (bounce_local, _) = addr.local.split_once(DELIMITER)?;
    Address::new(bounce_local, &addr.domain).ok()
}

/// Mints a signed VERP address for `member` under `list_bounce`, stamped with `today`
/// (days since the Unix epoch) and the ring's signing key.
pub fn sign_verp(
    list_bounce: &Address,
    member: &Address,
    keys: &KeyRing,
    today: u64,
) -> Result<Address, VerpError> {
    let (bounce, member) = checked_parts(list_bounce, member)?;
    let key = keys.signing_key();
    let key_and_stamp = format!("{}{:04}", key.id(), today % STAMP_MODULUS);
    let message = Message {
        key_and_stamp: key_and_stamp.as_bytes(),
        bounce_local: &bounce.local,
        list_domain: &bounce.domain,
        member_local: &member.local,
        member_domain: &member.domain,
    };
    let tag = encode_base32(&compute_tag(key, &message));
    let extension = format!(
        "{SIGNED_MARKER}{key_and_stamp}{tag}{SEPARATOR}{}{SEPARATOR}{}",
        member.local, member.domain
    );
    join(&bounce, &extension)
}

/// Checks a signed VERP address on day `today` with a window of `validity_days`
/// (clamped to [`MAX_VALIDITY_DAYS`]). Lengths and shape are checked before any
/// decoding or HMAC work; the comparison is constant-time.
pub fn verify_verp(addr: &Address, keys: &KeyRing, today: u64, validity_days: u32) -> VerpResult {
    let Some((bounce_local, extension)) = addr.local.split_once(DELIMITER) else {
        return VerpResult::Unsigned;
    };
    let is_marked = extension
        .get(..SIGNED_MARKER.len())
        .is_some_and(|m| m.eq_ignore_ascii_case(SIGNED_MARKER));
    if !is_marked {
        return VerpResult::Unsigned;
    }
    if addr.len() > MAX_ADDRESS_LEN || bounce_local.is_empty() || addr.domain.is_empty() {
        return VerpResult::Invalid;
    }
    let Some(signed) = signed_shape(extension) else {
        return VerpResult::Invalid;
    };
    let Ok(member) = Address::new(signed.member_local, signed.member_domain) else {
        return VerpResult::Invalid;
    };
    let Some(key) = keys.get(signed.key_id) else {
        return VerpResult::UnknownKey;
    };
    let message = Message {
        key_and_stamp: signed.key_and_stamp,
        bounce_local,
        list_domain: &addr.domain,
        member_local: &member.local,
        member_domain: &member.domain,
    };
    let mut mac = key.verp_mac();
    message.feed(&mut mac);
    if mac.verify_truncated_left(&signed.tag).is_err() {
        return VerpResult::Invalid;
    }
    let validity = u64::from(validity_days.min(MAX_VALIDITY_DAYS));
    let last_day = signed.stamp + validity;
    let width = validity + u64::from(FUTURE_SKEW_DAYS);
    match classify_day(last_day, today, width, STAMP_MODULUS) {
        DayWindow::Inside => VerpResult::Valid {
            member,
            key_id: signed.key_id,
        },
        DayWindow::Expired => VerpResult::Expired,
        DayWindow::Future => VerpResult::Invalid,
    }
}

/// Validated, canonical copies of the two inputs to an encoder.
fn checked_parts(list_bounce: &Address, member: &Address) -> Result<(Address, Address), VerpError> {
    let bounce = Address::new(&list_bounce.local, &list_bounce.domain)
        .map_err(VerpError::BadBounceAddress)?;
    if bounce.local.contains(DELIMITER) {
        return Err(VerpError::DelimiterInBounceLocal);
    }
    let member = Address::new(&member.local, &member.domain).map_err(VerpError::BadMember)?;
    Ok((bounce, member))
}

fn join(bounce: &Address, extension: &str) -> Result<Address, VerpError> {
    let local = format!("{}{DELIMITER}{extension}", bounce.local);
    if local.len() + 1 + bounce.domain.len() > MAX_ADDRESS_LEN {
        return Err(VerpError::TooLong);
    }
    Ok(Address {
        local,
        domain: bounce.domain.clone(),
    })
}

/// A syntactically valid signed extension, split up. Nothing here is verified.
struct SignedParts<'a> {
    key_id: u8,
    /// `K DDDD` exactly as received (digits only).
    key_and_stamp: &'a [u8],
    stamp: u64,
    tag: [u8; TAG_BYTES],
    member_local: &'a str,
    member_domain: &'a str,
}

/// Parses `lw-KDDDDTAG=member-local=member-domain`; `None` unless every fixed-width
/// field has the right length and alphabet and both member parts are non-empty.
fn signed_shape(extension: &str) -> Option<SignedParts<'_>> {
    let bytes = extension.as_bytes();
    let marker = extension.get(..SIGNED_MARKER.len())?;
    if !marker.eq_ignore_ascii_case(SIGNED_MARKER) {
        return None;
    }
    let key_and_stamp = bytes.get(SIGNED_MARKER.len()..SIGNED_MARKER.len() + 5)?;
    let tag_text = bytes.get(SIGNED_MARKER.len() + 5..SIGNED_HEAD_LEN)?;
    if bytes.get(SIGNED_HEAD_LEN) != Some(&(SEPARATOR as u8)) {
        return None;
    }
    let member = extension.get(SIGNED_HEAD_LEN + 1..)?;
    let (member_local, member_domain) = member.rsplit_once(SEPARATOR)?;
    if member_local.is_empty() || member_domain.is_empty() {
        return None;
    }
    if !key_and_stamp.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (&key_digit, stamp_digits) = key_and_stamp.split_first()?;
    let stamp = stamp_digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(SignedParts {
        key_id: key_digit - b'0',
        key_and_stamp,
        stamp,
        tag: decode_base32(tag_text)?,
        member_local,
        member_domain,
    })
}

/// The authenticated fields of a signed VERP address, in their received case.
struct Message<'a> {
    key_and_stamp: &'a [u8],
    bounce_local: &'a str,
    list_domain: &'a str,
    member_local: &'a str,
    member_domain: &'a str,
}

impl Message<'_> {
    /// Feeds the fields in the documented order, each behind its length.
    fn feed(&self, mac: &mut impl Mac) {
        mac.update(DOMAIN_SEPARATION);
        mac.update(self.key_and_stamp);
        feed_local(mac, self.bounce_local);
        feed_domain(mac, self.list_domain);
        feed_local(mac, self.member_local);
        feed_domain(mac, self.member_domain);
    }
}

fn feed_local(mac: &mut impl Mac, local: &str) {
    // ASCII lowercasing keeps the length, so the prefix can be written first.
    mac.update(&len16(local.len()));
    update_ascii_lower(mac, local.as_bytes());
}

fn feed_domain(mac: &mut impl Mac, domain: &str) {
    let folded = fold_domain(domain);
    mac.update(&len16(folded.len()));
    mac.update(folded.as_bytes());
}

fn compute_tag(key: &Key, message: &Message<'_>) -> [u8; TAG_BYTES] {
    let mut mac = key.verp_mac();
    message.feed(&mut mac);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_BYTES];
    for (dst, src) in out.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    out
}

/// Big-endian u16 length prefix. Inputs are bounded by [`MAX_ADDRESS_LEN`] long before
/// they get here, so saturation never happens in practice.
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

fn encode_base32(bytes: &[u8; TAG_BYTES]) -> String {
    let mut out = String::with_capacity(TAG_CHARS);
    for group in bytes.chunks_exact(5) {
        let bits = group.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for shift in (0..8).rev() {
            let index = usize::try_from((bits >> (shift * 5)) & 0x1f).unwrap_or(0);
            if let Some(&c) = BASE32_ALPHABET.get(index) {
                out.push(char::from(c));
            }
        }
    }
    out
}

fn decode_base32(text: &[u8]) -> Option<[u8; TAG_BYTES]> {
    if text.len() != TAG_CHARS {
        return None;
    }
    let mut out = [0u8; TAG_BYTES];
    for (group, chars) in out.chunks_exact_mut(5).zip(text.chunks_exact(8)) {
        let mut bits = 0u64;
        for &c in chars {
            bits = (bits << 5) | u64::from(base32_value(c)?);
        }
        for (i, byte) in group.iter_mut().enumerate() {
            *byte = u8::try_from((bits >> (32 - 8 * i)) & 0xff).ok()?;
        }
    }
    Some(out)
}

fn base32_value(c: u8) -> Option<u8> {
    match c.to_ascii_lowercase() {
        c @ b'a'..=b'z' => Some(c - b'a'),
        c @ b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    fn ring(keys: &[(u8, &[u8])], signing: u8, validity: u32) -> KeyRing {
        let keys = keys
            .iter()
            .map(|(id, secret)| Key::new(*id, secret).expect("key"))
            .collect();
        KeyRing::new(keys, signing, validity).expect("ring")
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).expect("test address")
    }

    // Generated by tests/prvs_vectors.py (independent Python hmac/hashlib/base64 code).
    // (secret, key id, today, list bounce, member, expected signed local part)
    const VERP_VECTORS: &[(&str, u8, u64, &str, &str, &str)] = &[
        (
            "listwarden-test-key-one",
            0,
            19000,
            "list-bounces@lists.example.org",
            "alice@example.com",
            "list-bounces+lw-09000oahzdsosuwuquitw=alice=example.com",
        ),
        (
            "listwarden-test-key-one",
            4,
            29999,
            "list-bounces@lists.example.org",
            "Alice.Smith@example.com",
            "list-bounces+lw-499997pdkoakxuejqg6wv=Alice.Smith=example.com",
        ),
        (
            "0123456789abcdef0123456789abcdef",
            7,
            20000,
            "b@l.example",
            "a+b=c@x.org",
            "b+lw-70000bjbayx3tzmk744nf=a+b=c=x.org",
        ),
        (
            "0123456789abcdef0123456789abcdef",
            9,
            123456,
            "sympa-bounce@bücher.example",
            "jöhn@例子.广告",
            "sympa-bounce+lw-93456ej3gw6dn3whklxid=jöhn=例子.广告",
        ),
    ];

    const SECRET_A: &[u8] = b"secret-a-0123456789";
    const SECRET_B: &[u8] = b"secret-b-0123456789";
    const WINDOW: u32 = 10;

    #[test]
    fn python_vectors() {
        for &(secret, id, today, bounce, member, want) in VERP_VECTORS {
            let keys = ring(&[(id, secret.as_bytes())], id, 7);
            let (bounce, member) = (addr(bounce), addr(member));
            let signed = sign_verp(&bounce, &member, &keys, today).expect("sign");
            assert_eq!(signed.local, want);
            assert_eq!(signed.domain, bounce.domain);
            let valid = VerpResult::Valid {
                member: member.clone(),
                key_id: id,
            };
            assert_eq!(verify_verp(&signed, &keys, today, WINDOW), valid);
            assert_eq!(verify_verp(&signed, &keys, today + 10, WINDOW), valid);
            assert_eq!(
                verify_verp(&signed, &keys, today + 11, WINDOW),
                VerpResult::Expired
            );
            assert_eq!(base_address(&signed), Some(bounce));
        }
        assert!(VERP_VECTORS.len() >= 4);
    }

    #[test]
    fn plain_round_trip_and_table() {
        let bounce = addr("list-bounces@Lists.Example.org");
        let member = addr("a+b=c@Example.COM");
        let encoded = encode(&bounce, &member).expect("encode");
        assert_eq!(
            encoded.to_string(),
            "list-bounces+a+b=c=example.com@lists.example.org"
        );
        let want = VerpAddress {
            list_bounce: bounce.clone(),
            member: member.clone(),
        };
        assert_eq!(decode(&encoded), Some(want.clone()));
        let shouted = addr("LIST-BOUNCES+A+B=C=EXAMPLE.COM@LISTS.EXAMPLE.ORG");
        let decoded = decode(&shouted).expect("case-tolerant decode");
        assert_eq!(decoded.member.domain, "example.com");
        assert!(decoded.member.same_mailbox(&member));

        for bad in [
            "list@x",
            "list+@x",
            "+a=b@x",
            "list+a@x",
            "list+a=@x",
            "list+=b@x",
            "list+a=b c@x",
            "list+lw-01234abcdefghijklmnop=a=b@x",
        ] {
            let parsed = Address {
                local: bad.rsplit_once('@').expect("@").0.into(),
                domain: "x".into(),
            };
            assert_eq!(decode(&parsed), None, "{bad}");
        }
        assert_eq!(
            encode(&addr("a+b@x"), &member),
            Err(VerpError::DelimiterInBounceLocal)
        );
        let odd = Address {
            local: "m".into(),
            domain: "bad domain".into(),
        };
        assert_eq!(
            encode(&bounce, &odd),
            Err(VerpError::BadMember(AddressError::BadDomain))
        );
        let looks = addr("lw-01234abcdefghijklmnop=q@x.org");
        assert_eq!(encode(&bounce, &looks), Err(VerpError::LooksSigned));
        let long = Address::new(&"m".repeat(490), "x.org").expect("long member");
        assert_eq!(encode(&bounce, &long), Err(VerpError::TooLong));
        assert_eq!(
            sign_verp(&bounce, &long, &ring(&[(0, SECRET_A)], 0, 7), 1),
            Err(VerpError::TooLong)
        );
    }

    #[test]
    fn signed_shape_table() {
        let keys = ring(&[(0, SECRET_A)], 0, 7);
        let cases = [
            ("list", VerpResult::Unsigned),
            ("list+alice=x.org", VerpResult::Unsigned),
            ("list+lw", VerpResult::Unsigned),
            ("list+lw-", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop=", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop=a", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop=a=", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop==x.org", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmno=a=x.org", VerpResult::Invalid),
            (
                "list+lw-01234abcdefghijklmnopq=a=x.org",
                VerpResult::Invalid,
            ),
            ("list+lw-01234abcdefghijklmno1=a=x.org", VerpResult::Invalid),
            ("list+lw-0123xabcdefghijklmnop=a=x.org", VerpResult::Invalid),
            ("list+lw-01234abcdefghijklmnop=a=x y", VerpResult::Invalid),
            ("+lw-01234abcdefghijklmnop=a=x.org", VerpResult::Invalid),
            (
                "list+lw-51234abcdefghijklmnop=a=x.org",
                VerpResult::UnknownKey,
            ),
            ("list+lw-01234abcdefghijklmnop=a=x.org", VerpResult::Invalid),
        ];
        for (local, want) in cases {
            let a = Address {
                local: local.into(),
                domain: "lists.example.org".into(),
            };
            assert_eq!(verify_verp(&a, &keys, 1234, WINDOW), want, "{local}");
        }
    }

    #[test]
    fn window_edges_and_skew() {
        let keys = ring(&[(0, SECRET_A)], 0, 7);
        let (bounce, member) = (addr("b@l.org"), addr("m@x.org"));
        let signed = sign_verp(&bounce, &member, &keys, 9_999).expect("sign");
        let ok = |day| {
            matches!(
                verify_verp(&signed, &keys, day, WINDOW),
                VerpResult::Valid { .. }
            )
        };
        assert!(ok(9_999) && ok(10_000) && ok(10_009) && ok(9_998));
        assert_eq!(
            verify_verp(&signed, &keys, 10_010, WINDOW),
            VerpResult::Expired
        );
        assert_eq!(
            verify_verp(&signed, &keys, 9_997, WINDOW),
            VerpResult::Invalid
        );
        // The window is the verifier's: a shorter one applies to outstanding tags.
        assert_eq!(verify_verp(&signed, &keys, 10_003, 3), VerpResult::Expired);
        // Clamped, never unbounded.
        assert_eq!(
            verify_verp(&signed, &keys, 9_999 + 400, u32::MAX),
            VerpResult::Expired
        );
    }

    #[test]
    fn key_rotation() {
        let (bounce, member) = (addr("b@l.org"), addr("m@x.org"));
        let signed = sign_verp(&bounce, &member, &ring(&[(1, SECRET_A)], 1, 7), 500).expect("sign");
        let overlap = ring(&[(1, SECRET_A), (2, SECRET_B)], 2, 7);
        assert_eq!(
            verify_verp(&signed, &overlap, 501, WINDOW),
            VerpResult::Valid {
                member: member.clone(),
                key_id: 1
            }
        );
        let after = ring(&[(2, SECRET_B)], 2, 7);
        assert_eq!(
            verify_verp(&signed, &after, 501, WINDOW),
            VerpResult::UnknownKey
        );
    }

    #[test]
    fn tag_is_bound_to_the_list() {
        let keys = ring(&[(0, SECRET_A)], 0, 7);
        let member = addr("m@x.org");
        let signed = sign_verp(&addr("list-a@l.org"), &member, &keys, 500).expect("sign");
        let moved_local = Address {
            local: signed.local.replacen("list-a", "list-b", 1),
            domain: signed.domain.clone(),
        };
        let moved_domain = Address {
            local: signed.local.clone(),
            domain: "other.org".into(),
        };
        let other_member = Address {
            local: signed.local.replace("=m=", "=n="),
            domain: signed.domain.clone(),
        };
        for forged in [moved_local, moved_domain, other_member] {
            assert_eq!(
                verify_verp(&forged, &keys, 500, WINDOW),
                VerpResult::Invalid,
                "{forged}"
            );
        }
    }

    #[test]
    fn huge_inputs_are_cheap_and_invalid() {
        let keys = ring(&[(0, SECRET_A)], 0, 7);
        let big = "a".repeat(10_000);
        let huge = [
            Address {
                local: format!("list+lw-{big}=a=x.org"),
                domain: "l.org".into(),
            },
            Address {
                local: format!("list+lw-01234abcdefghijklmnop={big}=x.org"),
                domain: "l.org".into(),
            },
            Address {
                local: "list+lw-01234abcdefghijklmnop=a=x.org".into(),
                domain: big.clone(),
            },
        ];
        let start = Instant::now();
        for _ in 0..1000 {
            for a in &huge {
                assert_eq!(verify_verp(a, &keys, 1, WINDOW), VerpResult::Invalid);
                assert_eq!(decode(a), None);
            }
        }
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
    }

    #[test]
    fn base32_known_answers() {
        // RFC 4648 section 10 vector "fooba" twice, lowercased, no padding.
        let bytes = *b"foobafooba";
        assert_eq!(encode_base32(&bytes), "mzxw6ytbmzxw6ytb");
        assert_eq!(decode_base32(b"MZXW6YTBmzxw6ytb"), Some(bytes));
        assert_eq!(decode_base32(b"mzxw6ytbmzxw6yt1"), None);
        assert_eq!(decode_base32(b"mzxw6ytbmzxw6yt"), None);
    }

    fn member_strategy() -> impl Strategy<Value = Address> {
        (
            prop_oneof!["[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,30}", "\\PC{1,10}"],
            "[a-zA-Z0-9-]{1,15}(\\.[a-z0-9-]{1,10}){0,2}",
        )
            .prop_filter_map("valid member", |(l, d)| Address::new(&l, &d).ok())
    }

    fn bounce_strategy() -> impl Strategy<Value = Address> {
        ("[a-z0-9._-]{1,20}", "[a-z0-9-]{1,15}\\.[a-z]{2,6}")
            .prop_filter_map("valid bounce", |(l, d)| Address::new(&l, &d).ok())
    }

    proptest! {
        #[test]
        fn plain_round_trip(bounce in bounce_strategy(), member in member_strategy()) {
            let encoded = encode(&bounce, &member).expect("encode");
            let want = VerpAddress { list_bounce: bounce.clone(), member: member.clone() };
            prop_assert_eq!(decode(&encoded), Some(want));
            let reparsed = super::super::parse_path(&format!("<{encoded}>")).expect("parse");
            prop_assert_eq!(reparsed.as_ref(), Some(&encoded));
            prop_assert_eq!(verify_verp(&encoded, &ring(&[(0, SECRET_A)], 0, 7), 1, WINDOW), VerpResult::Unsigned);
        }

        #[test]
        fn signed_round_trip(bounce in bounce_strategy(), member in member_strategy(),
                             today in 0u64..100_000, key_id in 0u8..=9, window in 0u32..=60) {
            let keys = ring(&[(key_id, SECRET_A)], key_id, 7);
            let signed = sign_verp(&bounce, &member, &keys, today).expect("sign");
            let want = VerpResult::Valid { member: member.clone(), key_id };
            prop_assert_eq!(&verify_verp(&signed, &keys, today, window), &want);
            let last = today + u64::from(window);
            prop_assert_eq!(&verify_verp(&signed, &keys, last, window), &want);
            prop_assert_eq!(verify_verp(&signed, &keys, last + 1, window), VerpResult::Expired);
            prop_assert_eq!(&verify_verp(&signed, &keys, today + 10_000, window), &want);
            if today >= 2 {
                prop_assert_eq!(&verify_verp(&signed, &keys, today - 1, window), &want);
                prop_assert_eq!(verify_verp(&signed, &keys, today - 2, window), VerpResult::Invalid);
            }
            let variants = [
                signed.local.to_ascii_uppercase(),
                signed.local.to_ascii_lowercase(),
                super::super::tests::alternate_case(&signed.local),
            ];
            for folded in variants {
                let folded = Address { local: folded, domain: signed.domain.clone() };
                let ok = match verify_verp(&folded, &keys, today, window) {
                    VerpResult::Valid { member: m, key_id: k } => k == key_id && m.same_mailbox(&member),
                    _ => false,
                };
                prop_assert!(ok);
            }
            prop_assert_eq!(decode(&signed), None);
            let reparsed = super::super::parse_path(&format!("<{signed}>")).expect("parse");
            prop_assert_eq!(reparsed, Some(signed));
        }

        #[test]
        fn every_single_char_mutation_fails(member in member_strategy(), today in 0u64..100_000) {
            let keys = ring(&[(0, SECRET_A), (1, SECRET_B)], 0, 7);
            let bounce = addr("list-bounces@lists.example.org");
            let signed = sign_verp(&bounce, &member, &keys, today).expect("sign");
            let head_start = bounce.local.len() + 1;
            let alphabet = "0123456789abcdefghijklmnopqrstuvwxyzA2Z7=+-.";
            for pos in head_start..head_start + SIGNED_HEAD_LEN + 1 {
                for c in alphabet.chars() {
                    let mut chars: Vec<char> = signed.local.chars().collect();
                    let Some(slot) = chars.get_mut(pos) else { continue };
                    if slot.eq_ignore_ascii_case(&c) {
                        continue;
                    }
                    *slot = c;
                    let mutated = Address { local: chars.into_iter().collect(), domain: signed.domain.clone() };
                    let ok = !matches!(verify_verp(&mutated, &keys, today, WINDOW), VerpResult::Valid { .. });
                    prop_assert!(ok, "{} passed", mutated.local);
                }
            }
        }
    }
}
