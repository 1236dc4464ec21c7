//! Every default value of the config file, in one place. The man page
//! listwarden.yaml(5) states the same values; a test checks they agree.

use std::time::Duration;

/// Default `milter.negotiate_timeout`: Postfix negotiates at once.
pub const DEFAULT_NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `milter.timeout`: above Postfix's `smtpd_timeout` (300 s), so a
/// slow but legitimate SMTP client never loses its milter mid-message.
pub const DEFAULT_MILTER_TIMEOUT: Duration = Duration::from_secs(330);

/// Deepest `limits.max_mime_depth` accepted: real reports nest 2-3 levels.
pub const MAX_MIME_DEPTH: usize = 32;

/// `limits.max_recipients`: Postfix's own cap is 1000.
pub const MAX_RECIPIENTS: usize = 1000;
/// `limits.max_header_bytes`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// `limits.max_body_bytes`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// `limits.max_mime_depth`.
pub const MIME_DEPTH: usize = 3;
/// `milter.socket_mode`.
pub const SOCKET_MODE: u32 = 0o660;
/// `milter.max_connections`.
pub const MAX_CONNECTIONS: usize = 200;
/// `ratelimit.max_keys`.
pub const MAX_KEYS: usize = 1_000_000;
/// `ratelimit.redis_deadline_ms`.
pub const REDIS_DEADLINE_MS: u64 = 50;
/// `ratelimit.redis_prefix`.
pub const REDIS_PREFIX: &str = "lw:";
/// `ratelimit.node_count`.
pub const NODE_COUNT: u32 = 1;
/// `ratelimit.ipv4_prefix`, `ratelimit.ipv6_prefix`.
pub const IPV4_PREFIX: u8 = 24;
pub const IPV6_PREFIX: u8 = 48;
/// Budgets as `(rate, per seconds, burst)`.
pub const BUDGET_LIST_VALID: (u32, u64, u32) = (600, 60, 1200);
pub const BUDGET_LIST_INVALID: (u32, u64, u32) = (60, 60, 120);
pub const BUDGET_NETWORK: (u32, u64, u32) = (60, 60, 120);
pub const BUDGET_ADDRESS: (u32, u64, u32) = (6000, 3600, 6000);
/// `shield.trigger`, `shield.within`, `shield.hold` (seconds).
pub const SHIELD_TRIGGER: u32 = 500;
pub const SHIELD_WITHIN_SECS: u64 = 600;
pub const SHIELD_HOLD_SECS: u64 = 3600;
/// `feedback.queue`.
pub const FEEDBACK_QUEUE: &str = "/var/lib/listwarden/feedback";
/// `feedback.act_on`: only spam complaints act on the member.
pub const FEEDBACK_ACT_ON: &[&str] = &["abuse"];
/// `feedback.sympa_command`: Debian's path.
pub const SYMPA_COMMAND: &str = "/usr/lib/sympa/bin/sympa.pl";
/// `feedback.sendmail`.
pub const SENDMAIL: &str = "/usr/sbin/sendmail";
/// `feedback.retry` (seconds): providers give 48 hours to honour an
/// unsubscribe; a list manager down for a while still makes that.
pub const FEEDBACK_RETRY_SECS: u64 = 30;
/// `throttle.name`: the socketmap name.
pub const THROTTLE_MAP_NAME: &str = "transport";
/// `throttle.slow`: the transport of packaging/postfix/master.cf.
pub const THROTTLE_SLOW: &str = "listwarden-slow:";
/// `throttle.hold`: the error(8) agent as `retry` defers without a connection.
pub const THROTTLE_HOLD: &str = "retry:4.7.0 held by listwarden while the provider pushes back";
/// `throttle.providers[].window`.
pub const THROTTLE_WINDOW_SECS: u64 = 300;
/// `throttle.providers[].slow`: per minute, share (per mille), for (seconds).
pub const THROTTLE_SLOW_STEP: (u32, u32, u64) = (5, 50, 900);
/// Relay host suffixes known without config: (suffix, provider).
pub const THROTTLE_RELAYS: [(&str, &str); 8] = [
    ("yahoodns.net", "yahoo"),
    ("aol.com", "yahoo"),
    ("protection.outlook.com", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("outlook.com", "microsoft"),
    ("google.com", "gmail"),
    ("googlemail.com", "gmail"),
    ("icloud.com", "apple"),
];

/// `classification.incident.trigger`, `.within`, `.hold` (seconds) and
/// `.max_keys`: 20 members at one provider failing with one rule within
/// 10 minutes is a storm, held an hour past its last failure.
pub const INCIDENT_TRIGGER: u32 = 20;
pub const INCIDENT_WITHIN_SECS: u64 = 600;
pub const INCIDENT_HOLD_SECS: u64 = 3600;
pub const INCIDENT_MAX_KEYS: usize = 1000;
