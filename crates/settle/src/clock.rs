//! The settlement clock: every wall-time read in settlement (leases, re-send and replacement
//! timers, `validBefore`, record timestamps) goes through one injected [`Clock`], so that
//! tests can move time (`tokio::time::pause` / `advance`) without waiting.
//!
//! Records and leases are shared by replicas, so production uses wall time ([`Clock::system`]),
//! not a monotonic clock. Monotonic intervals inside one process (poll deadlines, fill delays)
//! use `tokio::time::Instant`, which follows a paused runtime as well.

pub use x402_chain::clock::{unix_ms, unix_now};

/// Where a [`Clock`] reads the time.
#[derive(Debug, Clone)]
enum Source {
    /// The system's wall clock.
    System,
    /// Wall time that starts at `base_unix_ms` and moves with tokio's clock (which a test may
    /// pause and advance).
    Tokio {
        base_unix_ms: u64,
        base: tokio::time::Instant,
    },
}

/// Unix time for settlement decisions, in milliseconds or seconds.
#[derive(Debug, Clone)]
pub struct Clock(Source);

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system's wall clock (production).
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A clock that reads `base_unix_ms` now and then moves with tokio's clock: under a paused
    /// runtime (`#[tokio::test(start_paused = true)]`) time moves only when the test advances
    /// it or every task waits on a timer. Must be created inside a runtime.
    pub fn following_tokio(base_unix_ms: u64) -> Self {
        Clock(Source::Tokio {
            base_unix_ms,
            base: tokio::time::Instant::now(),
        })
    }

    /// Unix time, milliseconds.
    pub fn unix_ms(&self) -> u64 {
        match &self.0 {
            Source::System => unix_ms(),
            Source::Tokio { base_unix_ms, base } => {
                base_unix_ms + base.elapsed().as_millis() as u64
            }
        }
    }

    /// Unix time, seconds.
    pub fn unix_now(&self) -> u64 {
        self.unix_ms() / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let clock = Clock::following_tokio(1_000_000);
        assert_eq!(clock.unix_ms(), 1_000_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.unix_ms(), 1_002_500);
        assert_eq!(clock.unix_now(), 1_002);
    }
}
