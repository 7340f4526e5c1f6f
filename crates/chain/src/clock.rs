//! Wall-clock time in Unix units (records and leases are shared by replicas, so they use wall
//! time, not a monotonic clock).

/// Unix time, seconds.
pub fn unix_now() -> u64 {
    unix_ms() / 1000
}

/// Unix time, milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
