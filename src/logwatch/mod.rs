//! Postfix log follower: turns Postfix's log into outbound delivery events.
//!
//! listwarden counts deferrals (such as Yahoo's `[TS01]` complaint deferrals),
//! bounces per provider and messages sent per list. Postfix only tells us
//! about delivery results in its log, so this module follows the log
//! (`follow`), parses each line (`line`) and offers the small bounded
//! structures the counting needs (`window`). Classification is done elsewhere.

mod follow;
mod line;
pub mod outbound;
mod window;

pub use follow::{FollowError, FollowOptions, Source, StartAt, follow};
pub(crate) use line::parse_line;
pub use line::{Delivery, DeliveryStatus, LogEvent};
pub use window::{QueueMap, SlidingCounter, WindowError};

/// Longest log line kept, in bytes. Postfix's own lines are far shorter; a
/// longer one is cut so a hostile or broken writer cannot grow our buffers.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
