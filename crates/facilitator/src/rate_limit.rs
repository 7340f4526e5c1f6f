//! Rate limits on `/verify` and `/settle`, per API key and per client IP: the generic cell
//! rate algorithm (GCRA: a steady rate plus a burst).
//!
//! With `[redis]` configured the budgets live in Redis (one Lua script, [`GCRA_SCRIPT`], keyed
//! `{prefix}:ratelimit:{ip|key}:{id}`), so replicas sharing Redis share them; otherwise, or
//! with `rate_limit.local_only`, in this process (`governor`). If a Redis call fails the
//! request is judged by the in-process budget instead (counted in
//! `x402_redis_call_errors_total{op="rate_limit"}`), so a Redis blip never refuses traffic
//! that a single replica would accept.
//!
//! Per-IP budgets are per [`crate::client_ip::bucket`]: an IPv4 address, or the /64 network
//! of an IPv6 address.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use x402_settle::redis_conn::RedisConn;

use crate::config::RedisConfig;
use crate::config::ops::{LimitConfig, RateLimitConfig};
use crate::http_metrics::OpsMetrics;

/// GCRA in one round trip. `KEYS[1]`: the budget; `ARGV[1]`: emission interval (1 / rate),
/// microseconds; `ARGV[2]`: burst. Uses the server's clock, so replicas need no clock sync.
/// Returns `{1, 0}` when allowed, `{0, wait_µs}` when limited.
pub const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - interval * (burst - 1)
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

/// Time limit of one Redis call of the limiter.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within budget.
    Allowed,
    /// Over budget: the next request fits after `retry_after`.
    Limited {
        /// Wait before the next request can pass.
        retry_after: Duration,
    },
}

struct Budget<K: Hash + Eq + Clone> {
    interval_us: u64,
    burst: u32,
    local: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    fn new(limit: &LimitConfig) -> Self {
        let interval = Duration::from_secs_f64(1.0 / limit.requests_per_second);
        let interval = interval.max(Duration::from_micros(1));
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .expect("non-zero period")
            .allow_burst(burst);
        Budget {
            interval_us: interval.as_micros().max(1) as u64,
            burst: burst.get(),
            local: governor::RateLimiter::keyed(quota),
        }
    }

    fn check_local(&self, key: &K) -> Decision {
        match self.local.check_key(key) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

struct Shared {
    conn: RedisConn,
    script: redis::Script,
    prefix: String,
}

/// The limits of one process (and, with Redis, of every replica sharing it).
pub struct RateLimiter {
    per_key: Option<Budget<String>>,
    per_ip: Option<Budget<IpNet>>,
    shared: Option<Shared>,
    metrics: OpsMetrics,
}

impl RateLimiter {
    /// Builds the limiter of `[rate_limit]`; connects to `redis` unless `local_only`.
    pub async fn new(
        config: &RateLimitConfig,
        redis: Option<&RedisConfig>,
        metrics: OpsMetrics,
    ) -> Result<Self, String> {
        let shared = match redis {
            Some(r) if !config.local_only => {
                // Its own connection (same deployment), with the limiter's shorter deadline.
                let conn = RedisConn::connect(&r.target(REDIS_TIMEOUT))
                    .await
                    .map_err(|e| format!("redis: cannot reach Redis for rate limits: {e}"))?;
                Some(Shared {
                    conn,
                    script: redis::Script::new(GCRA_SCRIPT),
                    prefix: r.key_prefix.clone(),
                })
            }
            _ => None,
        };
        Ok(RateLimiter {
            per_key: config.per_key.as_ref().map(Budget::new),
            per_ip: config.per_ip.as_ref().map(Budget::new),
            shared,
            metrics,
        })
    }

    /// Whether the budgets are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes one request from the budget of client address `ip` (its
    /// [`crate::client_ip::bucket`]: IPv6 per /64).
    pub async fn check_ip(&self, ip: IpAddr) -> Decision {
        match &self.per_ip {
            Some(b) => {
                let bucket = crate::client_ip::bucket(ip);
                let id = match bucket {
                    IpNet::V4(v4) => v4.addr().to_string(),
                    IpNet::V6(v6) => v6.to_string(),
                };
                self.check(b, "ip", &id, &bucket).await
            }
            None => Decision::Allowed,
        }
    }

    /// Takes one request from the budget of the API key named `name`.
    pub async fn check_key(&self, name: &str) -> Decision {
        match &self.per_key {
            Some(b) => self.check(b, "key", name, &name.to_string()).await,
            None => Decision::Allowed,
        }
    }

    async fn check<K: Hash + Eq + Clone>(
        &self,
        budget: &Budget<K>,
        kind: &str,
        id: &str,
        key: &K,
    ) -> Decision {
        let Some(shared) = &self.shared else {
            return budget.check_local(key);
        };
        let redis_key = format!("{}:ratelimit:{kind}:{id}", shared.prefix);
        let mut conn = shared.conn.clone();
        let started = Instant::now();
        let answer: Result<(i64, i64), _> = shared
            .script
            .key(&redis_key)
            .arg(budget.interval_us)
            .arg(budget.burst)
            .invoke_async(&mut conn)
            .await;
        self.metrics
            .redis_call_duration
            .with_label_values(&["rate_limit"])
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok((1, _)) => Decision::Allowed,
            Ok((_, wait_us)) => Decision::Limited {
                retry_after: Duration::from_micros(wait_us.max(0) as u64),
            },
            Err(e) => {
                self.metrics
                    .redis_call_errors
                    .with_label_values(&["rate_limit"])
                    .inc();
                tracing::debug!(error = %e, "rate limit: Redis failed, using the in-process budget");
                budget.check_local(key)
            }
        }
    }

    /// Forgets in-process budgets that are full again (bounds memory under many client IPs).
    pub fn forget_idle(&self) {
        if let Some(b) = &self.per_ip {
            b.local.retain_recent();
            b.local.shrink_to_fit();
        }
        if let Some(b) = &self.per_key {
            b.local.retain_recent();
        }
    }
}

/// `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
    }

    #[tokio::test]
    async fn local_budget_allows_the_burst_then_limits() {
        let config = RateLimitConfig {
            per_ip: Some(LimitConfig {
                requests_per_second: 0.1,
                burst: 3,
            }),
            ..RateLimitConfig::default()
        };
        let limiter = RateLimiter::new(&config, None, OpsMetrics::new())
            .await
            .unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check_ip(a).await, Decision::Allowed);
        }
        let Decision::Limited { retry_after } = limiter.check_ip(a).await else {
            panic!("4th request in a burst of 3 passed");
        };
        assert!(retry_after <= Duration::from_secs(10) && retry_after > Duration::from_secs(9));
        assert_eq!(limiter.check_ip(b).await, Decision::Allowed);
        assert_eq!(limiter.check_key("k").await, Decision::Allowed);
        // IPv6: one budget per /64.
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check_ip(v6).await, Decision::Allowed);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(matches!(
            limiter.check_ip(same_64).await,
            Decision::Limited { .. }
        ));
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter.check_ip(other_64).await, Decision::Allowed);
    }
}
