//! What both stores share about their backend: the key bound and the
//! error counters the metrics read (zero for the memory store).

/// Longest key accepted, in bytes, before the prefix and braces are added.
///
/// Keys are built by listwarden from bounded parts (a network, a list address of at most 254
/// bytes, a class), so anything longer is a bug, refused rather than sent to Redis.
pub const MAX_KEY_LEN: usize = 512;

/// What went wrong on one backend call, for `listwarden_ratelimit_backend_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendErrorKind {
    /// The deadline passed (slow server, blackholed link, still connecting).
    Timeout,
    /// Connecting failed, or the connection broke.
    Connection,
    /// `OOM command not allowed` (maxmemory with noeviction).
    OutOfMemory,
    /// `READONLY`: the server is a replica (typically after a failover).
    ReadOnly,
    /// Anything else: a script error, an unexpected reply, a wrong key type.
    Other,
}

impl BackendErrorKind {
    pub const ALL: [BackendErrorKind; 5] = [
        BackendErrorKind::Timeout,
        BackendErrorKind::Connection,
        BackendErrorKind::OutOfMemory,
        BackendErrorKind::ReadOnly,
        BackendErrorKind::Other,
    ];

    /// A short label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Connection => "connection",
            BackendErrorKind::OutOfMemory => "oom",
            BackendErrorKind::ReadOnly => "readonly",
            BackendErrorKind::Other => "other",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            BackendErrorKind::Timeout => 0,
            BackendErrorKind::Connection => 1,
            BackendErrorKind::OutOfMemory => 2,
            BackendErrorKind::ReadOnly => 3,
            BackendErrorKind::Other => 4,
        }
    }
}

/// Counters since the store was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Failed backend calls, in the order of [`BackendErrorKind::ALL`]; read with `errors()`.
    pub(super) errors: [u64; 5],
    /// Decisions made by the local fallback (breaker open, not connected, or a failed call).
    pub fallback_decisions: u64,
    /// Decisions made by Redis.
    pub backend_decisions: u64,
    /// Round trips to Redis on decision paths: one per decision, whatever its budgets count
    /// (in a Cluster the per-slot calls go out together and count as one).
    pub round_trips: u64,
    /// Cluster only: budgets charged after another denied, given back in the background.
    pub refunds: u64,
}

impl BackendStats {
    pub fn errors(&self, kind: BackendErrorKind) -> u64 {
        self.errors.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}
