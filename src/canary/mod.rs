//! The canary: `listwarden canary` ([`command`]) sends a probe carrying a signed token
//! (`listwarden_core::canary`) to the configured canary address through the public MX,
//! and waits until the milter reports it at the list manager's side.
//!
//! The milter recognises its own probe at end of headers (`recognise`, pure): a valid,
//! fresh token, exactly one `X-Listwarden-Canary` header, and the canary address as the
//! message's only recipient (a discard drops every recipient). It then notes the
//! sighting in the [`Sightings`] book, which answers which hop this is: the first
//! sighting of a probe id is the MX leg (recorded, the message goes on, the header
//! kept); the second is the list manager's side (recorded, the message discarded). A
//! third sighting, or one the book could not record, is ordinary mail: its header is
//! removed like any forged `X-Listwarden-*`, and nothing is discarded.
//!
//! So listwarden must see the probe twice: on the MX's smtpd and on the smtpd of the
//! list server that the MX relays the canary address to (one host: a second loopback
//! smtpd with the milter, reached through `transport_maps`). Both hops share the book:
//! Redis when `ratelimit.state` is Redis, else files in `canary.dir` (one host).

pub mod command;
mod sightings;

pub use listwarden_core::canary::{HEADER, Probe};
pub use sightings::{Arrivals, Sightings};

use crate::address::Address;
use crate::config::Config;

/// Where a probe was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Arrived from the internet at the MX: recorded, passed on.
    Mx,
    /// Arrived at the list manager's side: recorded, discarded.
    List,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Mx => "mx",
            Leg::List => "list",
        }
    }
}

/// What end of headers knows about a possible probe.
#[derive(Debug, Default)]
pub(crate) struct Candidate<'a> {
    /// The first `X-Listwarden-Canary` value.
    pub token: Option<&'a str>,
    /// How many such headers the message has.
    pub headers: u32,
    /// Recipients given (accepted or not).
    pub recipients: usize,
    /// Whether one of them is the canary address.
    pub to_canary: bool,
}

/// The probe this message is, if it is one of ours (a positive, authenticated finding).
pub(crate) fn recognise(config: &Config, c: &Candidate<'_>, now_ms: u64) -> Option<Probe> {
    let canary = config.canary.as_ref()?;
    let ring = config.signing.as_ref()?;
    if c.headers != 1 || c.recipients != 1 || !c.to_canary {
        return None;
    }
    let max_age = u64::try_from(canary.max_age.as_millis()).unwrap_or(u64::MAX);
    listwarden_core::canary::verify(ring, &canary.address.to_string(), c.token?, now_ms, max_age)
        .map_err(|e| tracing::debug!("X-Listwarden-Canary not ours: {e}"))
        .ok()
}

/// True when `rcpt` is the configured canary address.
pub(crate) fn is_canary(config: &Config, rcpt: &Address) -> bool {
    config
        .canary
        .as_ref()
        .is_some_and(|c| c.address.same_mailbox(rcpt))
}

pub use listwarden_core::clock::unix_now_ms as now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/keys/EXAMPLE-PUBLIC-KEY.key"
    );
    const NOW: u64 = 1_764_900_000_000;

    fn config() -> Config {
        let yaml = format!(
            "milter:\n  listen: inet:127.0.0.1:1\n\
             signing:\n  keys: [{{id: 1, file: {KEY}}}]\n  sign_with: 1\n  demo: true\n\
             canary:\n  address: canary@lists.example.org\n  sender: probe@ops.example.net\n  smtp: 127.0.0.1:25\n"
        );
        Config::parse(&yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn token(config: &Config, sent: u64) -> String {
        let ring = config.signing.as_ref().unwrap();
        listwarden_core::canary::sign(ring, "canary@lists.example.org", "00112233aabbccdd", sent)
    }

    #[test]
    fn only_a_lone_valid_probe_to_the_canary_address_is_one() {
        let c = config();
        let t = token(&c, NOW - 1000);
        let good = Candidate {
            token: Some(&t),
            headers: 1,
            recipients: 1,
            to_canary: true,
        };
        assert_eq!(
            recognise(&c, &good, NOW).map(|p| p.sent_ms),
            Some(NOW - 1000)
        );
        // Another recipient beside it would be lost with the discard.
        let two = Candidate {
            recipients: 2,
            ..good
        };
        assert_eq!(recognise(&c, &two, NOW), None);
        let two_headers = Candidate {
            token: Some(&t),
            headers: 2,
            recipients: 1,
            to_canary: true,
        };
        assert_eq!(recognise(&c, &two_headers, NOW), None);
        let elsewhere = Candidate {
            token: Some(&t),
            headers: 1,
            recipients: 1,
            to_canary: false,
        };
        assert_eq!(recognise(&c, &elsewhere, NOW), None);
        // Older than canary.max_age (1h by default).
        assert_eq!(
            recognise(
                &c,
                &Candidate {
                    token: Some(&t),
                    headers: 1,
                    recipients: 1,
                    to_canary: true
                },
                NOW + 3_600_000
            ),
            None
        );
        let forged = t.replace(' ', "  ").replacen('0', "1", 1);
        let forged = Candidate {
            token: Some(&forged),
            headers: 1,
            recipients: 1,
            to_canary: true,
        };
        assert_eq!(recognise(&c, &forged, NOW), None);
    }
}
