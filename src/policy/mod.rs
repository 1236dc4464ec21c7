//! The decision core. Pure: it takes the facts of a message known so far
//! and a config snapshot, and returns a [`Verdict`]. No I/O, no clock, no
//! globals, so unit tests, the benchmarks and the milter all call the same
//! function.

mod verdict;

pub use verdict::{Action, Reason, Reply, Verdict};

use crate::address::Address;
use crate::config::{Config, List};
use std::net::IpAddr;

/// Where in the SMTP transaction a decision is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    EndOfHeaders,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Mail => "mail",
            Stage::EndOfHeaders => "eoh",
        }
    }
}

/// The SMTP client, as Postfix described it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// `None` when Postfix knew no address (unix socket, unknown family).
    pub ip: Option<IpAddr>,
    /// SASL login name (`{auth_authen}`), if the client authenticated.
    pub authenticated_as: Option<String>,
}

/// What is known about a message at some stage.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub stage: Stage,
    pub client: &'a Client,
    /// Envelope sender; `None` is the null sender `<>`.
    pub sender: Option<&'a Address>,
    /// Every mailbox of every `From:` header (empty before end of headers).
    pub from: &'a [Address],
}

/// Decides what to do with a message at `facts.stage`.
pub fn decide(facts: &Facts<'_>, config: &Config) -> Verdict {
    if is_privileged(facts.client, config) {
        // Trusted and authenticated clients may send as the list; nothing
        // else the foundation checks applies to them.
        return Verdict::accept(Reason::TrustedClient);
    }
    match facts.stage {
        Stage::Mail => match facts
            .sender
            .and_then(|s| config.protected(s).map(|p| (s, p)))
        {
            Some((sender, hit)) => forged(config, hit.list, Reason::ForgedEnvelopeSender, sender),
            None => Verdict::cont(),
        },
        Stage::EndOfHeaders => {
            match facts
                .from
                .iter()
                .find_map(|a| config.protected(a).map(|p| (a, p)))
            {
                Some((author, hit)) => forged(config, hit.list, Reason::ForgedFromHeader, author),
                None => Verdict::accept(Reason::Clean),
            }
        }
    }
}

fn is_privileged(client: &Client, config: &Config) -> bool {
    client.authenticated_as.is_some() || client.ip.is_some_and(|ip| config.is_trusted(ip))
}

fn forged(config: &Config, list: &List, reason: Reason, addr: &Address) -> Verdict {
    let reply = Reply::permanent(
        "550",
        "5.7.1",
        format!(
            "<{addr}> is a mailing list address of this site; only the list server may send as it"
        ),
    );
    Verdict {
        action: Action::Reject(reply),
        reason,
        list: Some(list.name.clone()),
        observe: config.observe || list.observe,
    }
}

#[cfg(test)]
mod tests;
