//! The settlement webhooks' outbox: a payment settled through an API key that has a webhook
//! gets one event per final state (`settlement.settled`, `settlement.failed`,
//! `settlement.expired`), written into the outbox by the same atomic step that records the
//! state ([`crate::replay::ReplayStore::swap_emitting`]), so no event is lost when a process
//! dies. Delivery workers (any replica) claim due events with a lease ([`Outbox::claim`]),
//! deliver them and then complete, reschedule or dead-letter them: at-least-once, with a stable
//! event id for deduplication.
//!
//! Redis layout (see [`crate::replay::keys`]), per shard `s` (the shard of the payment's
//! record, written with it): `{prefix}:webhooks:outbox:{prefix:s}` (sorted set of event ids by
//! the Unix ms they are due), `{prefix}:webhooks:event:{id}:{prefix:s}` (hash: `key`, `type`,
//! `body`, `created_ms`, `attempts`, `claim`, `last_error`), `{prefix}:webhooks:dead:{prefix:s}`
//! (sorted set of dead-lettered ids by Unix ms; their hashes expire after [`DEAD_RETENTION`]).
//! Workers walk the shards.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::record::SettlementRecord;
use crate::status::SettlementStatus;
use crate::store_error::StoreError;

/// Event type of a payment that landed (first `confirmed` or `delivered`).
pub const SETTLED: &str = "settlement.settled";
/// Event type of a payment whose transaction failed on chain.
pub const FAILED: &str = "settlement.failed";
/// Event type of a payment that can no longer land (nothing moved).
pub const EXPIRED: &str = "settlement.expired";

/// How long a dead-lettered event stays readable in the store.
pub const DEAD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One notification, as stored in the outbox. The body is fixed when the event is written and
/// sent unchanged on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Event id (`evt_` + 32 hex), the `webhook-id` header: the same on every attempt, so the
    /// receiver can drop duplicates.
    pub id: String,
    /// Name of the API key whose webhook receives it.
    pub key: String,
    /// [`SETTLED`], [`FAILED`] or [`EXPIRED`].
    pub kind: String,
    /// The JSON payload: `{"type", "timestamp" (RFC 3339), "data": {settlement record view,
    /// "eventId", "key"}}`.
    pub body: String,
    /// Unix milliseconds when the event was written.
    pub created_ms: u64,
}

/// An event claimed by one delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEvent {
    /// The event.
    pub event: OutboxEvent,
    /// Delivery attempts so far, this one included (1 on the first).
    pub attempts: u32,
}

/// Events waiting and dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxDepth {
    /// Events not delivered yet (due or waiting for a retry).
    pub pending: u64,
    /// Events given up on, kept for [`DEAD_RETENTION`].
    pub dead: u64,
}

/// The outbox of a replay store (events are written by
/// [`crate::replay::ReplayStore::swap_emitting`]).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` events due now for `lease`: they are not handed to anyone else
    /// until the lease ends (then they are due again: a worker that died loses nothing).
    /// `claim` identifies this claim for [`Outbox::retry`] and [`Outbox::dead_letter`]. On
    /// Redis with `min_replicas_acked`, only events whose claim the replicas acknowledged are
    /// returned (a shard that fails is skipped; an error when none could be claimed).
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        claim: &str,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;
    /// Removes a delivered event. Idempotent (a worker repeats a completion that failed);
    /// on Redis with `min_replicas_acked`, fails unless the replicas acknowledged it.
    async fn complete(&self, id: &str) -> Result<(), StoreError>;
    /// Makes the event due again at Unix ms `at_ms`, if `claim` still holds it.
    async fn retry(&self, id: &str, claim: &str, at_ms: u64, error: &str)
    -> Result<(), StoreError>;
    /// Gives up on the event (kept as dead for [`DEAD_RETENTION`]), if `claim` still holds it.
    async fn dead_letter(&self, id: &str, claim: &str, error: &str) -> Result<(), StoreError>;
    /// How many events wait and how many are dead.
    async fn depth(&self) -> Result<OutboxDepth, StoreError>;
}

/// Called after an event was written (e.g. to wake this process's delivery worker).
pub type OnWritten = Arc<dyn Fn() + Send + Sync>;

/// Which API keys have a webhook: the engine writes events only for payments they settled.
#[derive(Clone, Default)]
pub struct Notify {
    keys: Arc<HashSet<String>>,
    on_written: Option<OnWritten>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify").field("keys", &self.keys).finish()
    }
}

/// The `data` of an event: the record as `GET /settlements/…` shows it, with the event id
/// and the key name.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventData<'a> {
    event_id: &'a str,
    key: &'a str,
    #[serde(flatten)]
    settlement: SettlementStatus,
}

/// The Standard Webhooks payload shape.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: EventData<'a>,
}

impl Notify {
    /// Events for the payments of the API keys named in `keys`.
    pub fn for_keys(keys: impl IntoIterator<Item = String>) -> Self {
        Notify {
            keys: Arc::new(keys.into_iter().collect()),
            on_written: None,
        }
    }

    /// Calls `f` after each event the engine wrote (the delivery then need not wait for the
    /// worker's next poll).
    pub fn on_written(mut self, f: OnWritten) -> Self {
        self.on_written = Some(f);
        self
    }

    /// Reports that an event was written.
    pub fn written(&self) {
        if let Some(f) = &self.on_written {
            f();
        }
    }

    /// Whether no key has a webhook.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The event to write with the transition of the record under `replay_key` into `next`:
    /// `Some` for a final state (`confirmed`/`delivered`: [`SETTLED`]; `failed`, `expired`) of
    /// a payment whose key has a webhook. The caller writes it only on the first transition
    /// into that state. `now_ms`: Unix milliseconds (the engine's clock).
    pub fn event(
        &self,
        replay_key: &str,
        next: &SettlementRecord,
        now_ms: u64,
    ) -> Option<OutboxEvent> {
        let key = next.payment().key.as_deref()?;
        if !self.keys.contains(key) {
            return None;
        }
        let kind = match next {
            SettlementRecord::Confirmed(_) | SettlementRecord::Delivered(_) => SETTLED,
            SettlementRecord::Failed(_) => FAILED,
            SettlementRecord::Expired(_) => EXPIRED,
            SettlementRecord::Reserved(_) | SettlementRecord::Broadcast(_) => return None,
        };
        let id = event_id(replay_key, kind);
        let settlement = SettlementStatus::of(next);
        let at = settlement.resolved_at.unwrap_or(now_ms / 1000);
        let body = serde_json::to_string(&Payload {
            kind,
            timestamp: rfc3339(at),
            data: EventData {
                event_id: &id,
                key,
                settlement,
            },
        })
        .ok()?;
        Some(OutboxEvent {
            id,
            key: key.to_string(),
            kind: kind.to_string(),
            body,
            created_ms: now_ms,
        })
    }
}

/// The event id of `kind` for the payment under `replay_key`: `evt_` + the first 16 bytes of
/// keccak256(`replay_key|kind`), hex. Stable, so a receiver can deduplicate on it.
pub fn event_id(replay_key: &str, kind: &str) -> String {
    let digest = alloy::primitives::keccak256(format!("{replay_key}|{kind}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// Unix seconds as RFC 3339 UTC (`2026-11-25T18:40:19Z`).
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Closed, Cost, PaymentFacts, Settled};

    fn facts(key: Option<&str>) -> PaymentFacts {
        PaymentFacts {
            binding: "0x01".into(),
            network: "eip155:8453".into(),
            payer: "0xA".into(),
            amount: "10000".into(),
            asset: "0xB".into(),
            pay_to: "0xC".into(),
            created_at: 1_795_309_347,
            valid_until: 1_795_309_400,
            key: key.map(str::to_string),
            answer_keys: vec![],
            kind: None,
        }
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_309_347), "2026-11-22T01:02:27Z");
    }

    #[test]
    fn events_only_for_final_states_of_keys_with_webhooks() {
        let notify = Notify::for_keys(["shop".to_string()]);
        let settled = SettlementRecord::Delivered(Settled {
            payment: facts(Some("shop")),
            transaction: "0xab".into(),
            cost: Cost::default(),
            settled_at: 1_795_309_350,
            preconfirmed: None,
        });
        let event = notify.event("x402:replay:evm:1", &settled, 1_000).unwrap();
        assert_eq!(event.kind, SETTLED);
        assert_eq!(event.key, "shop");
        assert_eq!(event.id, event_id("x402:replay:evm:1", SETTLED));
        assert!(event.id.starts_with("evt_") && event.id.len() == 36);
        let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["type"], SETTLED);
        assert_eq!(body["timestamp"], "2026-11-22T01:02:30Z");
        assert_eq!(body["data"]["eventId"], event.id.as_str());
        assert_eq!(body["data"]["state"], "settled");
        assert_eq!(body["data"]["transaction"], "0xab");
        assert_eq!(body["data"]["payTo"], "0xC");
        assert_eq!(body["data"]["key"], "shop");

        let failed = SettlementRecord::Failed(Closed {
            payment: facts(Some("shop")),
            transaction: "0xab".into(),
            reason: "invalid_exact_evm_transaction_failed".into(),
            message: "reverted".into(),
            cost: Cost::default(),
            closed_at: 1,
        });
        let event = notify.event("k", &failed, 1_000).unwrap();
        assert_eq!(event.kind, FAILED);
        let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(
            body["data"]["errorReason"],
            "invalid_exact_evm_transaction_failed"
        );

        let other = SettlementRecord::Delivered(Settled {
            payment: facts(Some("other")),
            transaction: "0xab".into(),
            cost: Cost::default(),
            settled_at: 1,
            preconfirmed: None,
        });
        assert!(notify.event("k", &other, 1_000).is_none());
        let anonymous = SettlementRecord::Delivered(Settled {
            payment: facts(None),
            transaction: "0xab".into(),
            cost: Cost::default(),
            settled_at: 1,
            preconfirmed: None,
        });
        assert!(notify.event("k", &anonymous, 1_000).is_none());
    }

    #[test]
    fn records_without_a_key_still_parse() {
        let old = r#"{"state":"delivered","payment":{"binding":"0x01","network":"eip155:8453","payer":"0xA","amount":"1","asset":"0xB","pay_to":"0xC","created_at":1,"valid_until":2},"transaction":"0xab","settled_at":3}"#;
        let record: SettlementRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.payment().key, None);
        assert!(!serde_json::to_string(&record).unwrap().contains("\"key\""));
    }
}
