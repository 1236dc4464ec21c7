//! Prometheus metrics and the small HTTP endpoint that serves them.
//!
//! Labels come only from bounded sets: verdict and reason enums, stage
//! names, and list names from the config. Never an IP or a mail address.
//! The HTTP server runs on its own thread and runtime with a connection cap
//! (overall and per client address), header and body timeouts, so a slow
//! or abusive client cannot touch the milter. One-click unsubscribe is
//! served by a second listener of its own, never beside `/metrics`.

use crate::policy::Stage;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Open HTTP connections; a connection beyond this is closed at once. Slow
/// clients only hold a small task each, so /healthz stays reachable.
const MAX_HTTP_CONNECTIONS: usize = 512;
/// A request must send its headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric listwarden exports, registered in one registry. To add
/// one: a field here, one line in [`Metrics::new`], and the event that
/// counts it in the recorder (`src/record.rs`).
pub struct Metrics {
    registry: Registry,
    pub messages: IntCounterVec,
    pub decision_seconds: HistogramVec,
    /// `decision_seconds` per stage (indexed by [`Stage::index`]),
    /// resolved at start so the per-header path takes no label lookup.
    stage_histograms: Vec<Histogram>,
    pub connections_active: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_last_success: prometheus::Gauge,
    pub spoofed_headers_removed: prometheus::IntCounter,
    pub bounces: IntCounterVec,
    pub signed: IntCounterVec,
    pub ratelimit_decisions: IntCounterVec,
    pub ratelimit_backend_errors: IntCounterVec,
    pub ratelimit_fallback_active: IntGauge,
    pub ratelimit_keys: IntGauge,
    pub shield_active: IntGaugeVec,
    pub bounces_classified: IntCounterVec,
    pub outbound_deliveries: IntCounterVec,
    pub complaint_rate: prometheus::GaugeVec,
    pub provider_complaint_rate: prometheus::GaugeVec,
    pub feedback_reports: IntCounterVec,
    pub peers_mismatched: IntGauge,
    pub ratelimit_seconds: Histogram,
    pub bounce_incident: IntGaugeVec,
    pub throttle_state: IntGaugeVec,
    pub throttle_seconds: IntCounterVec,
    pub throttle_changes: IntCounterVec,
    pub throttle_map_entries: IntGauge,
    pub throttle_map_writes: IntCounterVec,
    pub list_inbound: IntCounterVec,
    pub list_inbound_last: prometheus::GaugeVec,
    pub canary_last_seen: prometheus::GaugeVec,
}

/// The `result` label of `config_reloads_total`.
pub(crate) fn reload_result(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// Builds metrics and registers each as it is built: a metric is added
/// by one field of [`Metrics`] and one line of [`Metrics::new`].
struct Registrar(Registry);

impl Registrar {
    /// Registers `metric`. The definitions are static, so a failure is a
    /// programming error found by any test that starts the milter.
    fn add<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: prometheus::Result<M>,
    ) -> M {
        let metric = metric.expect("static metric definition");
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::IntCounter {
        self.add(prometheus::IntCounter::new(name, help))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauge(&self, name: &str, help: &str) -> prometheus::Gauge {
        self.add(prometheus::Gauge::new(name, help))
    }

    fn float_gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
        self.add(prometheus::GaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.add(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets),
        ))
    }

    fn histograms(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> HistogramVec {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        ))
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registrar(Registry::new());
        r.gauges(
            "listwarden_build_info",
            "Build information; always 1.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let decision_seconds = r.histograms(
            "listwarden_decision_seconds",
            "Time listwarden spent handling one milter stage.",
            vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25,
            ],
            &["stage"],
        );
        let config_reloads = r.counters(
            "listwarden_config_reloads_total",
            "Config reloads by result (success, failure).",
            &["result"],
        );
        for ok in [true, false] {
            config_reloads.with_label_values(&[reload_result(ok)]);
        }
        Metrics {
            messages: r.counters(
                "listwarden_messages_total",
                "Messages by final verdict (accept, reject, tempfail, observe_*) and reason.",
                &["verdict", "reason"],
            ),
            stage_histograms: Stage::ALL
                .iter()
                .map(|stage| decision_seconds.with_label_values(&[stage.as_str()]))
                .collect(),
            decision_seconds,
            connections_active: r.gauge(
                "listwarden_connections_active",
                "Milter connections from Postfix currently open.",
            ),
            config_reloads,
            config_last_success: r.float_gauge(
                "listwarden_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            ),
            spoofed_headers_removed: r.counter(
                "listwarden_spoofed_headers_removed_total",
                "Inbound X-Listwarden-* headers removed so senders cannot forge tags.",
            ),
            bounces: r.counters(
                "listwarden_bounces_total",
                "Bounces to list addresses by check result (valid, invalid, expired, unsigned, trace_ok, trace_fail).",
                &["list", "verdict"],
            ),
            signed: r.counters(
                "listwarden_signed_total",
                "Outbound list messages whose envelope sender was signed.",
                &["list"],
            ),
            ratelimit_decisions: r.counters(
                "listwarden_ratelimit_decisions_total",
                "Bounce budget decisions by budget and result (allowed, denied).",
                &["budget", "result"],
            ),
            ratelimit_backend_errors: r.counters(
                "listwarden_ratelimit_backend_errors_total",
                "Errors of the shared rate-limit backend (timeouts, refused connections, OOM, ...).",
                &["backend"],
            ),
            ratelimit_fallback_active: r.gauge(
                "listwarden_ratelimit_fallback_active",
                "1 while limits are decided locally because Redis is slow or down.",
            ),
            ratelimit_keys: r.gauge(
                "listwarden_ratelimit_keys",
                "Keys held by the local rate-limit store.",
            ),
            shield_active: r.gauges(
                "listwarden_shield_active",
                "1 while a list's shield is up (only signed bounces get in).",
                &["list"],
            ),
            bounces_classified: r.counters(
                "listwarden_bounces_classified_total",
                "Bounces that reached a list, by class, reason, provider and fault (them, us, unknown; labels from the rules and the config).",
                &["list", "class", "reason", "provider", "fault"],
            ),
            outbound_deliveries: r.counters(
                "listwarden_outbound_deliveries_total",
                "Outbound delivery results from Postfix's log, by provider, class, reason and fault.",
                &["provider", "class", "reason", "fault"],
            ),
            complaint_rate: r.float_gauges(
                "listwarden_complaint_rate",
                "Feedback-report complaints over delivered list mail in the last 24 hours (0.001 = 0.1%).",
                &["list"],
            ),
            provider_complaint_rate: r.float_gauges(
                "listwarden_provider_complaint_rate",
                "Complaints from one mailbox provider's users over list mail delivered to that provider in the last 24 hours; absent without deliveries.",
                &["list", "provider"],
            ),
            feedback_reports: r.counters(
                "listwarden_feedback_reports_total",
                "Feedback-loop reports received, by list, provider and result (attributed, member_reported, list_only, unattributed, signature_invalid, queue_error).",
                &["list", "provider", "result"],
            ),
            bounce_incident: r.gauges(
                "listwarden_bounce_incident",
                "1 while many members at one provider fail with one rule (a bounce storm: their bounces are tagged fault=us, incident=1).",
                &["provider", "rule"],
            ),
            throttle_state: r.gauges(
                "listwarden_throttle_state",
                "1 for a provider's current throttle state (normal, slow, hold), 0 for the others.",
                &["provider", "state"],
            ),
            throttle_seconds: r.counters(
                "listwarden_throttle_state_seconds_total",
                "Seconds each provider spent in each throttle state.",
                &["provider", "state"],
            ),
            throttle_changes: r.counters(
                "listwarden_throttle_changes_total",
                "Throttle state changes per provider, by the state entered.",
                &["provider", "state"],
            ),
            throttle_map_entries: r.gauge(
                "listwarden_throttle_map_entries",
                "Recipient domains in the transport table listwarden last wrote (slowed or held).",
            ),
            throttle_map_writes: r.counters(
                "listwarden_throttle_map_writes_total",
                "Transport table writes by result (ok, error); after an error Postfix keeps the previous table.",
                &["result"],
            ),
            list_inbound: r.counters(
                "listwarden_list_inbound_total",
                "Messages accepted for a list's posting address.",
                &["list"],
            ),
            list_inbound_last: r.float_gauges(
                "listwarden_list_inbound_last_timestamp_seconds",
                "Unix time of the last message accepted for a list's posting address.",
                &["list"],
            ),
            canary_last_seen: r.float_gauges(
                "listwarden_canary_last_seen_timestamp_seconds",
                "Unix time this milter last saw a valid canary probe, per leg: mx (first sighting, passed on) and list (second sighting, at the list server, discarded).",
                &["leg"],
            ),
            peers_mismatched: r.gauge(
                "listwarden_peers_mismatched",
                "Other hosts sharing this Redis whose signing key ring or list set differs from this host's (fingerprints, never secrets).",
            ),
            ratelimit_seconds: r.histogram(
                "listwarden_ratelimit_decision_seconds",
                "Time one recipient's budget decision took (all its budgets in one store call), Redis round trip or local fallback included.",
                vec![
                    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                    0.5,
                ],
            ),
            registry: r.0,
        }
    }

    /// Marks a successful (re)load now.
    pub(crate) fn config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.config_last_success.set(now);
    }

    /// Records how long one milter stage took.
    pub(crate) fn observe_stage(&self, stage: Stage, seconds: f64) {
        if let Some(h) = self.stage_histograms.get(stage.index()) {
            h.observe(seconds);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on metric families that are
        // malformed, which our static definitions are not.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Answers an RFC 8058 one-click unsubscribe: (query, body, client) →
/// (HTTP status, text). It may block on file locks; it runs on a blocking
/// thread.
pub type UnsubscribeHandler = Arc<dyn Fn(&str, &[u8], IpAddr) -> (u16, String) + Send + Sync>;

/// Largest one-click request body read (`List-Unsubscribe=One-Click`).
const MAX_UNSUBSCRIBE_BODY: usize = 4096;
/// Open one-click connections per client address; one more is closed at
/// once. Behind a reverse proxy the proxy is one client: limit there too.
const MAX_UNSUBSCRIBE_PER_IP: usize = 16;
/// Open metrics connections per client address: half the slots, so one
/// host cannot take them all from the scraper (which often shares an
/// address with the health probe, so not fewer).
const MAX_METRICS_PER_IP: usize = MAX_HTTP_CONNECTIONS / 2;
/// A request body must arrive within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What one listener serves. One-click unsubscribe gets a listener of its
/// own: it faces the Internet (behind a proxy), `/metrics` should not.
#[derive(Clone)]
enum Site {
    /// `GET /metrics` and `GET /healthz`.
    Metrics(Arc<Metrics>),
    /// `POST /unsubscribe` (and `GET /healthz`).
    Unsubscribe(UnsubscribeHandler),
}

/// Binds the metrics endpoint and serves it on a thread of its own.
/// Returns the bound address (useful with port 0).
pub fn spawn_http(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    spawn(addr, Site::Metrics(metrics), "listwarden-http")
}

/// Binds the one-click unsubscribe endpoint (`unsubscribe_listen`)
/// and serves it on a thread of its own.
pub fn spawn_unsubscribe_http(
    addr: SocketAddr,
    handler: UnsubscribeHandler,
) -> std::io::Result<SocketAddr> {
    spawn(addr, Site::Unsubscribe(handler), "listwarden-unsub")
}

fn spawn(addr: SocketAddr, site: Site, name: &str) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("HTTP endpoint {local} failed: {e}");
                        return;
                    }
                };
                serve(listener, site).await;
            });
        })?;
    Ok(local)
}

/// Connections open per client address.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One client's connection slot, given back when dropped.
struct IpSlot {
    ip: IpAddr,
    table: PerIp,
}

impl IpSlot {
    fn take(table: &PerIp, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut map = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: table.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, site: Site) {
    let permits = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let per_ip: PerIp = Arc::default();
    let cap = match site {
        Site::Metrics(_) => MAX_METRICS_PER_IP,
        Site::Unsubscribe(_) => MAX_UNSUBSCRIBE_PER_IP,
    };
    loop {
        // Accept first: a backlog of slow clients must not keep a probe
        // waiting in the kernel queue.
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("HTTP endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let Some(slot) = IpSlot::take(&per_ip, peer.ip(), cap) else {
            drop(stream);
            continue;
        };
        let site = site.clone();
        let client = peer.ip();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let site = site.clone();
                async move {
                    let response = match (&site, req.method().as_str(), req.uri().path()) {
                        (Site::Unsubscribe(h), "POST", "/unsubscribe") => {
                            one_click(req, h.clone(), client).await
                        }
                        (Site::Unsubscribe(_), _, _) => respond_unsubscribe(&req),
                        (Site::Metrics(m), _, _) => respond(&req, m),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
            drop(permit);
        });
    }
}

/// `POST /unsubscribe?list=..&m=..&t=..` with body `List-Unsubscribe=One-Click`.
async fn one_click(
    req: Request<Incoming>,
    handler: UnsubscribeHandler,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let query = req.uri().query().unwrap_or("").to_string();
    let limited = http_body_util::Limited::new(req.into_body(), MAX_UNSUBSCRIBE_BODY);
    let body = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large\n".into(),
            );
        }
        Err(_) => {
            let mut resp = text_response(StatusCode::REQUEST_TIMEOUT, "request timeout\n".into());
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    let answer = tokio::task::spawn_blocking(move || handler(&query, &body, client)).await;
    let (status, text) = answer.unwrap_or((503, "try again later\n".into()));
    text_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        text,
    )
}

fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// The one-click listener's answer to anything but `POST /unsubscribe`.
fn respond_unsubscribe(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, "ok\n"),
        // RFC 8058: only a POST unsubscribes (link scanners GET every URL).
        (_, "/unsubscribe") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "one-click unsubscribe: POST with body List-Unsubscribe=One-Click\n",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    text_response(status, body.into())
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        ("GET", _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
