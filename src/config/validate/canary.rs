//! The `canary:` section: where `listwarden canary` sends its probe, to which
//! address, and how long a probe stays valid.

use super::Validator;
use crate::address::Address;
use crate::config::model::RawCanary;
use crate::config::{Canary, defaults};
use listwarden_core::diag::Seg;

impl Validator<'_> {
    pub(super) fn canary(&mut self, raw: &RawCanary, has_keys: bool) -> Option<Canary> {
        let at = |k| [Seg::Key("canary"), Seg::Key(k)];
        if !has_keys {
            // The token is signed with the key ring: without one, no probe verifies.
            self.error(&at("address"), "the canary needs `signing:` keys");
        }
        let address = |v: &mut Self, text: &str, key| match Address::parse(text.trim()) {
            Ok(a) => Some(a),
            Err(e) => {
                v.error(&at(key), format!("`{text}` is not an address: {e}"));
                None
            }
        };
        let to = address(self, &raw.address, "address");
        let sender = address(self, &raw.sender, "sender");
        if let (Some(to), Some(sender)) = (&to, &sender)
            && to.same_mailbox(sender)
        {
            self.error(&at("sender"), "must differ from canary.address");
        }
        let smtp = raw.smtp.trim();
        let port_ok = smtp.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok || smtp.contains(char::is_whitespace) {
            self.error(
                &at("smtp"),
                format!("`{smtp}` is not HOST:PORT such as mx.example.org:25"),
            );
        }
        let helo = raw
            .helo
            .clone()
            .unwrap_or_else(|| defaults::CANARY_HELO.into());
        if helo.is_empty() || helo.contains(|c: char| c.is_whitespace() || c.is_control()) {
            self.error(&at("helo"), "must be one word (a host name)");
        }
        let wait = self.duration_or(raw.wait.as_deref(), defaults::CANARY_WAIT_SECS, &at("wait"));
        let max_age = self.duration_or(
            raw.max_age.as_deref(),
            defaults::CANARY_MAX_AGE_SECS,
            &at("max_age"),
        );
        if wait.is_zero() {
            self.error(&at("wait"), "must be more than 0");
        }
        if max_age <= wait {
            // A probe still on its way must still verify when it arrives.
            self.error(&at("max_age"), "must be longer than canary.wait");
        }
        let dir = self
            .check
            .file(raw.dir.as_deref().unwrap_or(defaults::CANARY_DIR));
        Some(Canary {
            address: to?,
            sender: sender?,
            smtp: smtp.to_owned(),
            helo,
            wait,
            max_age,
            dir,
        })
    }
}
