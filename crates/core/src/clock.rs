//! The one wall clock of the milter and the expander: Unix seconds, and
//! the day number signatures carry. (Durations and rate limits use the
//! milter's monotonic `ratelimit::Clock`.)

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): the
/// canary's times, compared between hosts.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Days since the Unix epoch for a Unix time in seconds.
pub fn day_of(unix_seconds: u64) -> u64 {
    unix_seconds / 86_400
}

/// Days since the Unix epoch, today: the day signatures are made and
/// checked against.
pub fn today() -> u64 {
    day_of(unix_now())
}
