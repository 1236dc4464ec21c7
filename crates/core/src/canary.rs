//! The canary probe's token: `X-Listwarden-Canary: KEY ID TIME MAC`, where KEY is the
//! signing key's id, ID 16 hex digits chosen by `listwarden canary`, TIME the sending
//! time in Unix milliseconds, and MAC the first 16 bytes (32 hex digits) of
//! HMAC-SHA256 over a label, the canary address, ID and TIME.
//!
//! Only a holder of the key ring can write a token that verifies, so an outsider can
//! neither make listwarden record a probe's arrival nor make it discard a real message.
//! A token older than the configured age (or dated in the future beyond a small skew) is
//! refused; each ID is recorded once per hop (the milter's sighting record), so a copy
//! replayed within the age is ordinary mail.

use hmac::Mac;

use crate::address::KeyRing;

/// The header that carries the token.
pub const HEADER: &str = "X-Listwarden-Canary";
/// Bytes of MAC kept (hex-encoded: twice as many digits).
const MAC_BYTES: usize = 16;
/// Hex digits of a probe id.
pub const ID_DIGITS: usize = 16;
/// Longest token text read.
pub const MAX_TOKEN_LEN: usize = 100;
/// How far a sender's clock may run ahead of ours.
pub const FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;
/// Starts every MAC'd message. A VERP message starts with a binary length, so no
/// canary MAC can ever stand in for a VERP tag made with the same key.
const LABEL: &[u8] = b"listwarden canary v1\0";

/// A verified probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub id: String,
    /// When `listwarden canary` signed it (Unix ms, its clock).
    pub sent_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a canary token")]
    Malformed,
    #[error("signed with key {0}, which is not in the key ring")]
    UnknownKey(u8),
    #[error("the signature does not match")]
    BadMac,
    #[error("older than the accepted age")]
    Expired,
    #[error("dated in the future")]
    Future,
}

fn mac(
    ring: &KeyRing,
    key_id: u8,
    address: &str,
    id: &str,
    sent_ms: u64,
) -> Option<hmac::Hmac<sha2::Sha256>> {
    let mut mac = ring.get(key_id)?.verp_mac();
    mac.update(LABEL);
    mac.update(address.to_ascii_lowercase().as_bytes());
    mac.update(b"\0");
    mac.update(id.as_bytes());
    mac.update(b"\0");
    mac.update(sent_ms.to_string().as_bytes());
    Some(mac)
}

/// The token for probe `id` to `address`, signed now (`sent_ms`) with the signing key.
/// `id` must be [`ID_DIGITS`] lower-case hex digits.
pub fn sign(ring: &KeyRing, address: &str, id: &str, sent_ms: u64) -> String {
    let key_id = ring.signing_id();
    let tag = mac(ring, key_id, address, id, sent_ms)
        .map(|m| hex(&m.finalize().into_bytes()[..MAC_BYTES]))
        .unwrap_or_default();
    format!("{key_id} {id} {sent_ms} {tag}")
}

/// Checks a token sent to `address`, `now_ms`, accepting it up to `max_age_ms` old.
pub fn verify(
    ring: &KeyRing,
    address: &str,
    token: &str,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<Probe, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut fields = token.split_ascii_whitespace();
    let (Some(key), Some(id), Some(sent), Some(tag), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let key_id: u8 = key.parse().map_err(|_| TokenError::Malformed)?;
    let digits = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !digits(id, ID_DIGITS)
        || !digits(tag, 2 * MAC_BYTES)
        || !sent.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(TokenError::Malformed);
    }
    let sent_ms: u64 = sent.parse().map_err(|_| TokenError::Malformed)?;
    let tag = unhex(tag).ok_or(TokenError::Malformed)?;
    let mac = mac(ring, key_id, address, id, sent_ms).ok_or(TokenError::UnknownKey(key_id))?;
    mac.verify_truncated_left(&tag)
        .map_err(|_| TokenError::BadMac)?;
    if sent_ms > now_ms.saturating_add(FUTURE_SKEW_MS) {
        return Err(TokenError::Future);
    }
    if now_ms.saturating_sub(sent_ms) > max_age_ms {
        return Err(TokenError::Expired);
    }
    Ok(Probe {
        id: id.to_owned(),
        sent_ms,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Key;

    const ADDR: &str = "canary@lists.example.org";
    const ID: &str = "0123456789abcdef";
    const NOW: u64 = 1_764_900_000_000;
    const HOUR: u64 = 3_600_000;

    fn ring(secret: &[u8], id: u8) -> KeyRing {
        KeyRing::new(vec![Key::new(id, secret).unwrap()], id, 7).unwrap()
    }

    fn ours() -> KeyRing {
        ring(b"a secret of at least sixteen bytes", 1)
    }

    #[test]
    fn a_signed_token_verifies() {
        let t = sign(&ours(), ADDR, ID, NOW);
        assert_eq!(
            verify(&ours(), ADDR, &t, NOW + 1000, HOUR),
            Ok(Probe {
                id: ID.into(),
                sent_ms: NOW
            })
        );
        // The address is compared without regard to case.
        assert!(verify(&ours(), "Canary@Lists.Example.ORG", &t, NOW, HOUR).is_ok());
    }

    #[test]
    fn another_key_does_not_verify() {
        let t = sign(&ring(b"someone else's secret, 16+ bytes", 1), ADDR, ID, NOW);
        assert_eq!(
            verify(&ours(), ADDR, &t, NOW, HOUR),
            Err(TokenError::BadMac)
        );
        let t = sign(
            &ring(b"a secret of at least sixteen bytes", 2),
            ADDR,
            ID,
            NOW,
        );
        assert_eq!(
            verify(&ours(), ADDR, &t, NOW, HOUR),
            Err(TokenError::UnknownKey(2))
        );
    }

    #[test]
    fn an_old_or_future_token_is_refused() {
        let t = sign(&ours(), ADDR, ID, NOW);
        assert_eq!(
            verify(&ours(), ADDR, &t, NOW + HOUR + 1, HOUR),
            Err(TokenError::Expired)
        );
        assert!(verify(&ours(), ADDR, &t, NOW + HOUR, HOUR).is_ok());
        let t = sign(&ours(), ADDR, ID, NOW + FUTURE_SKEW_MS + 1);
        assert_eq!(
            verify(&ours(), ADDR, &t, NOW, HOUR),
            Err(TokenError::Future)
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let t = sign(&ours(), ADDR, ID, NOW);
        let f: Vec<&str> = t.split(' ').collect();
        // A later time (to outlive the age), another id, another address, a flipped MAC digit.
        let later = format!("{} {} {} {}", f[0], f[1], NOW + 1, f[3]);
        assert_eq!(
            verify(&ours(), ADDR, &later, NOW, HOUR),
            Err(TokenError::BadMac)
        );
        let other = format!("{} {} {} {}", f[0], "fedcba9876543210", f[2], f[3]);
        assert_eq!(
            verify(&ours(), ADDR, &other, NOW, HOUR),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            verify(&ours(), "members@lists.example.org", &t, NOW, HOUR),
            Err(TokenError::BadMac)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            verify(&ours(), ADDR, &flipped, NOW, HOUR),
            Err(TokenError::BadMac)
        );
        for bad in [
            "",
            "1",
            &format!("{t} extra"),
            &t.to_uppercase(),
            &format!("{} {} {} {}", f[0], f[1], f[2], &f[3][..30]),
        ] {
            assert_eq!(
                verify(&ours(), ADDR, bad, NOW, HOUR),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}
