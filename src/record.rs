//! The one recorder: what the parts observed, turned into log lines and
//! metrics. The milter session decides and returns [`Event`]s; the log
//! watcher and the daemon report theirs here too. Adding a metric means
//! declaring it in [`crate::metrics`] and counting it in
//! [`Recorder::record`], nowhere else.

use crate::Shared;
use crate::address::Address;
use crate::config::OnError;
use crate::dsn::{self, Classification};
use crate::policy::{Action, BounceVerdict, Budget, Stage, Verdict};
use crate::shield::Change;
use std::net::IpAddr;
use std::time::Duration;

/// Label and tag value for "no list".
pub(crate) const NO_LIST: &str = "-";
/// Log value for a message without a queue id yet.
pub(crate) const NO_QUEUE: &str = "NOQUEUE";

/// Something worth a log line or a metric.
#[derive(Debug)]
pub(crate) enum Event {
    /// A bounce storm began or ended (the storm detector).
    Incident(crate::incident::Change),
    /// A message accepted for a list's posting address.
    Inbound {
        list: String,
    },
    /// A milter connection opened or closed.
    ConnectionOpened,
    ConnectionClosed,
    /// A verdict on a message (or a refused recipient): one log line, one
    /// count.
    Verdict {
        stage: Stage,
        verdict: Verdict,
        queue_id: Option<String>,
        sender: Option<Address>,
        client: Option<IpAddr>,
        rcpt: Option<Address>,
    },
    /// A panic in a handler, and the verdict given for it.
    InternalError {
        stage: Stage,
        queue_id: Option<String>,
        answer: OnError,
        verdict: Verdict,
    },
    /// What the check of a bounce to a list found.
    BounceChecked {
        list: String,
        result: BounceVerdict,
    },
    /// A bounce or report that reached a list, classified.
    Classified {
        queue_id: Option<String>,
        list: String,
        /// When it came back to a validly signed address (only then does
        /// a complaint move the complaint rate): its mark, from that
        /// address and the original's Message-ID (a copy counts once).
        signed: Option<crate::rates::Mark>,
        classes: Vec<Classification>,
    },
    /// Inbound `X-Listwarden-*` headers about to be removed.
    SpoofedHeaders {
        queue_id: Option<String>,
        count: usize,
    },
    /// The envelope sender about to be signed.
    Signing {
        queue_id: Option<String>,
        list: Option<String>,
        sender: Address,
    },
    /// Postfix took the signed envelope sender.
    Signed {
        list: Option<String>,
    },
    /// A bounce budget's answer, and how long the store took to give it.
    Budgets {
        /// Each budget asked, with its answer, up to the first refusal.
        results: Vec<(Budget, bool)>,
        /// The one store call (one Redis round trip) for all of them.
        took: Duration,
    },
    /// A list's shield went up or down.
    Shield(Change),
    /// One outbound delivery result from Postfix's log, classified;
    /// `sent_for` is (list, provider) of a delivered list message.
    Outbound {
        sent_for: Option<(String, String)>,
        class: Classification,
    },
    /// A feedback-loop report and what became of it.
    FeedbackReport {
        list: String,
        provider: String,
        result: &'static str,
    },
    /// A complaint about list mail we sent: moves the list's complaint
    /// rates (overall and for the provider), once per mark.
    Complaint {
        list: String,
        provider: String,
        mark: crate::rates::Mark,
    },
    /// How many other hosts sharing the Redis differ in key ring or lists.
    PeersMismatched(usize),
    /// Our canary probe, seen at one of its legs (and discarded at the last).
    Canary {
        leg: crate::canary::Leg,
        id: String,
        /// When `listwarden canary` signed it (Unix ms).
        sent_ms: u64,
        queue_id: Option<String>,
    },
    /// A config (re)load, successful or not.
    ConfigLoad {
        ok: bool,
    },
}

/// Applies [`Event`]s to the logs, the metrics and the complaint rates.
pub(crate) struct Recorder<'a> {
    shared: &'a Shared,
}

impl Shared {
    /// The recorder of this process's logs and metrics.
    pub(crate) fn recorder(&self) -> Recorder<'_> {
        Recorder { shared: self }
    }
}

impl Recorder<'_> {
    pub(crate) fn record_all(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.record(e);
        }
    }

    pub(crate) fn record(&self, event: Event) {
        let m = &self.shared.metrics;
        match event {
            Event::ConnectionOpened => m.connections_active.inc(),
            Event::ConnectionClosed => m.connections_active.dec(),
            Event::Verdict {
                stage,
                verdict,
                queue_id,
                sender,
                client,
                rcpt,
            } => {
                log_verdict(stage, &verdict, queue_id, sender, client, rcpt);
                self.count(&verdict);
            }
            Event::InternalError {
                stage,
                queue_id,
                answer,
                verdict,
            } => {
                tracing::error!(
                    queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE),
                    stage = stage.as_str(),
                    "internal error while handling the message; answering {answer:?}"
                );
                self.count(&verdict);
            }
            Event::BounceChecked { list, result } => m
                .bounces
                .with_label_values(&[list.as_str(), result.as_str()])
                .inc(),
            Event::Classified {
                queue_id,
                list,
                signed,
                classes,
            } => self.classified(queue_id, &list, signed, &classes),
            Event::SpoofedHeaders { queue_id, count } => {
                tracing::info!(
                    queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE),
                    count,
                    "removing inbound X-Listwarden-* headers"
                );
                m.spoofed_headers_removed.inc_by(count as u64);
            }
            Event::Signing {
                queue_id,
                list,
                sender,
            } => tracing::info!(
                queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE),
                list = list.as_deref().unwrap_or(NO_LIST),
                sender = %sender,
                "signing envelope sender"
            ),
            Event::Signed { list } => m
                .signed
                .with_label_values(&[list.as_deref().unwrap_or(NO_LIST)])
                .inc(),
            Event::Budgets { results, took } => {
                m.ratelimit_seconds.observe(took.as_secs_f64());
                for (budget, allowed) in results {
                    let result = if allowed { "allowed" } else { "denied" };
                    m.ratelimit_decisions
                        .with_label_values(&[budget.as_str(), result])
                        .inc();
                }
            }
            Event::Shield(Change::Raised(list)) => {
                tracing::warn!(
                    list,
                    "shield raised: too many invalid bounces; only signed bounces get in"
                );
                m.shield_active.with_label_values(&[&list]).set(1);
            }
            Event::Shield(Change::Lowered(list)) => {
                tracing::info!(list, "shield lowered");
                m.shield_active.with_label_values(&[&list]).set(0);
            }
            Event::Incident(crate::incident::Change::Raised((provider, rule))) => {
                tracing::warn!(
                    provider,
                    rule,
                    "bounce incident: many members at one provider fail with one rule; their bounces are tagged fault=us incident=1 and not scored"
                );
                m.bounce_incident
                    .with_label_values(&[&provider, &rule])
                    .set(1);
            }
            Event::Incident(crate::incident::Change::Lowered((provider, rule))) => {
                tracing::info!(provider, rule, "bounce incident over");
                // The series goes, so labels stay bounded by live incidents.
                let _ = m.bounce_incident.remove_label_values(&[&provider, &rule]);
            }
            Event::Inbound { list } => {
                m.list_inbound.with_label_values(&[&list]).inc();
                m.list_inbound_last
                    .with_label_values(&[&list])
                    .set(crate::unix_now() as f64);
            }
            Event::Outbound { sent_for, class } => {
                m.outbound_deliveries
                    .with_label_values(&[
                        &class.provider,
                        class.class.as_str(),
                        class.reason.as_str(),
                        class.fault.as_str(),
                    ])
                    .inc();
                if let Some((list, provider)) = sent_for {
                    self.rates().sent_to(&list, &provider, crate::unix_now());
                }
            }
            Event::FeedbackReport {
                list,
                provider,
                result,
            } => m
                .feedback_reports
                .with_label_values(&[&list, &provider, result])
                .inc(),
            Event::Complaint {
                list,
                provider,
                mark,
            } => {
                self.rates()
                    .complaint(&list, Some(&provider), mark, crate::unix_now());
            }
            Event::Canary {
                leg,
                id,
                sent_ms,
                queue_id,
            } => {
                let now = crate::canary::now_ms();
                tracing::info!(
                    queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE),
                    leg = leg.as_str(),
                    probe = %id,
                    after_ms = now.saturating_sub(sent_ms),
                    "canary probe seen{}",
                    if leg == crate::canary::Leg::List { "; discarded" } else { "; passed on" }
                );
                m.canary_last_seen
                    .with_label_values(&[leg.as_str()])
                    .set(now as f64 / 1000.0);
            }
            Event::PeersMismatched(n) => {
                m.peers_mismatched.set(i64::try_from(n).unwrap_or(i64::MAX))
            }
            Event::ConfigLoad { ok: true } => {
                m.config_reloads
                    .with_label_values(&[crate::metrics::reload_result(true)])
                    .inc();
                m.config_loaded();
            }
            Event::ConfigLoad { ok: false } => {
                m.config_reloads
                    .with_label_values(&[crate::metrics::reload_result(false)])
                    .inc();
            }
        }
    }

    /// How long one milter stage took.
    pub(crate) fn stage_time(&self, stage: Stage, took: Duration) {
        self.shared.metrics.observe_stage(stage, took.as_secs_f64());
    }

    /// Copies the store's state and the complaint rates into the metrics;
    /// called periodically. `last_errors` is the backend error count seen
    /// at the previous call.
    pub(crate) fn refresh(&self, last_errors: &mut u64) {
        let m = &self.shared.metrics;
        let store = &self.shared.store;
        let (rates, by_provider) = {
            let r = self.rates();
            let now = crate::unix_now();
            (r.rates(now), r.provider_rates(now))
        };
        // Without deliveries a rate is unknown, not 0: its series goes.
        m.complaint_rate.reset();
        for (list, rate) in rates {
            m.complaint_rate.with_label_values(&[&list]).set(rate);
        }
        m.provider_complaint_rate.reset();
        for (list, provider, rate) in by_provider {
            m.provider_complaint_rate
                .with_label_values(&[&list, &provider])
                .set(rate);
        }
        m.ratelimit_keys
            .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        m.ratelimit_fallback_active
            .set(i64::from(store.fallback_active()));
        let errors = store.stats().errors_total();
        if errors > *last_errors {
            m.ratelimit_backend_errors
                .with_label_values(&[store.backend()])
                .inc_by(errors - *last_errors);
            *last_errors = errors;
        }
    }

    fn rates(&self) -> std::sync::MutexGuard<'_, crate::rates::ComplaintRates> {
        self.shared.rates.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, verdict: &Verdict) {
        self.shared
            .metrics
            .messages
            .with_label_values(&[verdict.label(), verdict.reason.as_str()])
            .inc();
    }

    /// `signed`: the mark of a report that came back to a validly signed
    /// address.
    fn classified(
        &self,
        queue_id: Option<String>,
        list: &str,
        signed: Option<crate::rates::Mark>,
        classes: &[Classification],
    ) {
        for c in classes {
            let arf_complaint = c.feedback_type.is_some() && c.class == dsn::Class::Complaint;
            // Anyone can send a feedback report: only one that came back
            // to a validly signed address moves the complaint rate that
            // alerts read; the others are counted under their own class.
            let class = if arf_complaint && signed.is_none() {
                "complaint_unsigned"
            } else {
                c.class.as_str()
            };
            self.shared
                .metrics
                .bounces_classified
                .with_label_values(&[
                    list,
                    class,
                    c.reason.as_str(),
                    &c.provider,
                    c.fault.as_str(),
                ])
                .inc();
            if arf_complaint && let Some(mark) = signed {
                self.rates().complaint(list, None, mark, crate::unix_now());
            }
        }
        let queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE);
        for c in classes.iter().take(dsn::tag::MAX_TAGS) {
            tracing::info!(
                queue_id,
                list,
                class = c.class.as_str(),
                reason = c.reason.as_str(),
                provider = %c.provider,
                rule = %c.rule,
                fault = c.fault.as_str(),
                incident = c.incident,
                status = c.status.as_deref().unwrap_or("-"),
                "bounce classified"
            );
        }
    }
}

/// The one info line per verdict.
fn log_verdict(
    stage: Stage,
    verdict: &Verdict,
    queue_id: Option<String>,
    sender: Option<Address>,
    client: Option<IpAddr>,
    rcpt: Option<Address>,
) {
    // The strings below cost allocations on every message; build them only
    // when the line is written (not under LISTWARDEN_LOG=warn).
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let queue_id = queue_id.as_deref().unwrap_or(NO_QUEUE);
    let sender = sender.map(|a| a.to_string()).unwrap_or_default();
    let client = client
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into());
    let reply = match &verdict.action {
        Action::Reject(r) | Action::Tempfail(r) => r.to_string(),
        _ => String::new(),
    };
    tracing::info!(
        queue_id,
        stage = stage.as_str(),
        verdict = verdict.label(),
        reason = verdict.reason.as_str(),
        list = verdict.list.as_deref().unwrap_or(NO_LIST),
        bounce = verdict.bounce.map(BounceVerdict::as_str).unwrap_or("-"),
        client,
        sender = format!("<{sender}>"),
        rcpt = rcpt.map(|r| format!("<{r}>")).unwrap_or_default(),
        reply,
        "verdict"
    );
}
