//! What listwarden's two programs share, and nothing else: the milter
//! (`listwarden`) and the thin list expander (`listwarden-expand`) agree on
//! addresses and their BATV/VERP signatures ([`address`]), on the signing
//! key ring and how the config names it ([`signing`]), on the
//! `X-Listwarden-Bounce:` header the milter writes and the expander reads
//! ([`tag`]), and on how a config file is read and its errors are reported
//! with file, line and column ([`diag`]). Both write their man pages the
//! same way ([`man`]).

pub mod address;
pub mod bounded;
pub mod canary;
pub mod clock;
pub mod diag;
pub mod man;
pub mod signing;
pub mod tag;
