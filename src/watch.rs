//! Following the log for real: lines in, counters (inside `listwarden
//! run`) or JSON lines (the `listwarden logwatch` command) out.

use crate::Shared;
use crate::address::parse_path;
use crate::config::Config;
use crate::dsn::Classification;
use crate::logwatch::outbound::{Seen, Tracker, classify_delivery};
use crate::logwatch::{
    Delivery, DeliveryStatus, FollowError, FollowOptions, Source, follow, parse_line,
};
use crate::record::Event;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Lines buffered between the reader and the classifier.
const CHANNEL_LINES: usize = 1024;

/// The list a sender address belongs to, if it is a protected address.
fn list_of(config: &Config, sender: &str) -> Option<String> {
    let addr = parse_path(sender).ok().flatten()?;
    config.protected(&addr).map(|p| p.owner.label().to_string())
}

/// Calls `each` for every delivery result read from `source`.
pub async fn for_each_delivery(
    source: Source,
    options: FollowOptions,
    config: impl Fn() -> Arc<Config>,
    mut each: impl FnMut(&Delivery, Option<&str>, &Classification),
) -> Result<(), FollowError> {
    let (tx, mut rx) = mpsc::channel(CHANNEL_LINES);
    let reader = tokio::spawn(follow(source, options, tx));
    let mut tracker = Tracker::new();
    while let Some(line) = rx.recv().await {
        let cfg = config();
        if let Seen::Delivery(d, list) = tracker.see(parse_line(&line), |s| list_of(&cfg, s)) {
            let c = classify_delivery(&d, &cfg.rules);
            each(&d, list.as_deref(), &c);
        }
    }
    match reader.await {
        Ok(result) => result,
        Err(e) => Err(FollowError::Read(std::io::Error::other(e))),
    }
}

/// The provider a delivery counts under in the complaint rates: the
/// recipient's domain first (as complaints are counted), else the relay
/// as the rules read it.
fn provider_for_rates(recipient: &str, classified: &str) -> String {
    let domain = recipient.rsplit_once('@').map_or("", |(_, d)| d);
    match crate::feedback::provider_of(domain) {
        Some(p) => p.to_string(),
        None if classified != "unknown" => classified.to_string(),
        None => "other".to_string(),
    }
}

/// Counts outbound results into the metrics and the complaint rates; runs
/// inside `listwarden run` when `logwatch.file` is set.
pub(crate) async fn count_into(shared: Arc<Shared>, source: Source) {
    let config = || shared.config.load_full();
    let result = for_each_delivery(source, FollowOptions::default(), config, |d, list, c| {
        // A delivered list message counts toward the list's complaint
        // rates, overall and for the recipient's provider.
        let sent_for = list
            .filter(|_| d.status == DeliveryStatus::Sent)
            .map(|list| {
                (
                    list.to_string(),
                    provider_for_rates(&d.recipient, &c.provider),
                )
            });
        shared.recorder().record(Event::Outbound {
            sent_for,
            class: c.clone(),
        });
        let cfg = shared.config.load();
        if let Some(t) = cfg.throttle.as_ref()
            && let Some(change) = shared.throttle.on_delivery(t, d, c, crate::unix_now())
        {
            crate::throttle::report(&shared, t, &change);
        }
    })
    .await;
    if let Err(e) = result {
        tracing::error!("log watch stopped: {e}");
    }
}
