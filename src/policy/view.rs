//! What the decision reads of the configuration, and nothing more. The
//! validated [`Config`] is one such view; the unit tests build a small one
//! by hand, with no YAML and no key files.

use crate::address::{Address, KeyRing};
use crate::config::{Config, Protected};
use std::net::IpAddr;

/// The settings [`decide`](super::decide) and its helpers read.
pub trait View {
    /// What protects `addr`, if anything (see [`Config::protected`]).
    fn protected(&self, addr: &Address) -> Option<Protected<'_>>;
    /// True when `ip` is in `trusted_networks`.
    fn is_trusted(&self, ip: IpAddr) -> bool;
    /// The BATV keys; `None` when nothing is signed.
    fn signing(&self) -> Option<&KeyRing>;
    /// Global observe mode.
    fn observe(&self) -> bool;
    /// `Some(shield.tempfail)` when a shield is configured.
    fn shield_tempfail(&self) -> Option<bool>;
    /// The prefix length a client's address is cut to for its budget key.
    fn network_prefix(&self, ip: IpAddr) -> u8;
}

impl View for Config {
    fn protected(&self, addr: &Address) -> Option<Protected<'_>> {
        Config::protected(self, addr)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        Config::is_trusted(self, ip)
    }

    fn signing(&self) -> Option<&KeyRing> {
        self.signing.as_ref()
    }

    fn observe(&self) -> bool {
        self.observe
    }

    fn shield_tempfail(&self) -> Option<bool> {
        self.shield.as_ref().map(|s| s.tempfail)
    }

    fn network_prefix(&self, ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => self.ratelimit.ipv4_prefix,
            IpAddr::V6(_) => self.ratelimit.ipv6_prefix,
        }
    }
}
