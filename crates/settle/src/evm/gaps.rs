//! Sender nonce gap repair. Nonces come from a shared counter ([`crate::nonces`]), so a nonce
//! handed out and never sent (its process died between taking it and recording the
//! transaction, or a recorded transaction expired unsent) leaves a hole: the node holds every
//! later transaction of that signer back. Each reconciler pass, per signer:
//!
//! 1. The counter is raised to the node's pending nonce, and used nonces are forgotten.
//! 2. When the node's pending nonce is below the counter and has not moved since the last pass
//!    (the sender is stuck), every nonce from it up to the counter is looked at through its
//!    owner's record:
//!    - a recorded, unresolved settlement signed at it: its transaction is re-sent (the node
//!      may have dropped it), unless its authorization's `validBefore` has passed (it could only
//!      revert; the nonce is filled and the record expires);
//!    - a settlement answered success at a flashblock pre-confirmation
//!      ([`super::preconfirm`]) signed at it: the sequencer dropped it; its transaction is
//!      re-sent likewise (a nonce filled under it would leave a success answered for nothing);
//!    - a reservation whose owner's lease is live (signing now), or a free nonce (the next
//!      settlement takes it): left alone for the fill delay;
//!    - anything else (the owner's lease lapsed, the record is gone or resolved with another
//!      transaction, no owner at all): nobody will send it, it is filled now.
//!
//!    Filling is a 0-value transfer from the signer to itself (21,000 gas), which lets the later
//!    transactions through.
//!
//! 3. When the node's mined nonce has not moved for the fill delay while later transactions wait,
//!    and the transaction at it is a fill this process sent (fees rose past what it offers), the
//!    fill is sent again at the same nonce with both fee caps raised by 12.5 % and at least the
//!    current fees, as the reconciler does for settlements. Fills are remembered in memory: one
//!    sent before a restart is not raised (the settlements behind it are).
//!
//! A settlement whose nonce was filled after all (its process was only slow) finds the nonce
//! used on chain and is re-signed at a new nonce ([`super::sender::EvmSender::replacement`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use alloy::primitives::{Address, U256};
use alloy::rpc::types::TransactionRequest;
use x402_chain::ChainError;

use super::fees::Fees;
use super::sender::EvmSender;
use crate::family::Sent;
use crate::record::{SentTx, SettlementRecord};

/// Gas of a plain value transfer.
const TRANSFER_GAS: u64 = 21_000;

/// Most nonces looked at in one pass per signer.
const SCAN_LIMIT: u64 = 1024;

/// What the repair remembers between passes, per signer.
#[derive(Default)]
struct Seen {
    /// The node's pending nonce at the last pass.
    pending: Option<u64>,
    /// Nonces waiting for the fill delay, and since when.
    waiting: HashMap<u64, Instant>,
    /// The node's mined nonce, and since when it has not moved.
    mined: Option<(u64, Instant)>,
    /// Fills this process sent and not yet seen mined: nonce → fees offered.
    fills: HashMap<u64, FillFees>,
}

/// The fee caps a fill transaction offered, and when it was sent.
#[derive(Debug, Clone, Copy)]
struct FillFees {
    fees: Fees,
    sent_at: Instant,
}

/// The repair's memory and fill delay.
pub struct GapRepair {
    fill_after: Duration,
    seen: Mutex<HashMap<Address, Seen>>,
}

impl GapRepair {
    /// Fills a nonce that may still be sent (a live reservation, a free nonce) once it has been
    /// missing for `fill_after`.
    pub fn new(fill_after: Duration) -> Self {
        GapRepair {
            fill_after,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, signer: Address, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(seen.entry(signer).or_default())
    }
}

/// What to do with one missing nonce.
enum Missing<'a> {
    /// Re-send this recorded transaction (of the record under the replay key, as stored).
    Resend(SentTx, String, Box<crate::replay::Stored>),
    /// Its owner may still send it: wait for the fill delay.
    Wait,
    /// Nobody will send it: fill it.
    Fill(&'a str),
}

/// One repair look at every signer of `family` (failures are logged; the next pass retries).
pub async fn repair(family: &EvmSender) {
    for (signer, _) in &family.signers {
        if let Err(e) = repair_signer(family, *signer).await {
            tracing::warn!(%signer, error = %e, "nonce repair look failed");
        }
    }
}

async fn repair_signer(family: &EvmSender, signer: Address) -> Result<(), String> {
    let chain_id = family.chain_id();
    let synced = family.sync_nonce(signer).await.map_err(|e| e.to_string())?;
    let (mined, pending, next) = (synced.mined, synced.pending, synced.next);
    if let Some(observer) = &family.nonce_lag_observer {
        observer(signer, next.saturating_sub(mined));
    }
    let stuck_fill = family.gaps.with(signer, |seen| {
        seen.fills.retain(|n, _| *n >= mined);
        let since = match seen.mined {
            Some((m, since)) if m == mined => since,
            _ => Instant::now(),
        };
        seen.mined = Some((mined, since));
        let fill_after = family.gaps.fill_after;
        let stalled = mined < pending && since.elapsed() >= fill_after;
        seen.fills
            .get(&mined)
            .copied()
            .filter(|f| stalled && f.sent_at.elapsed() >= fill_after)
    });
    if let Some(offered) = stuck_fill
        && let Err(e) = fill(family, signer, mined, "stuck fill raised", Some(offered)).await
    {
        tracing::warn!(%signer, nonce = mined, error = %e, "raising a stuck gap fill failed");
    }
    let stuck = family.gaps.with(signer, |seen| {
        let stuck = next > pending && seen.pending == Some(pending);
        seen.pending = Some(pending);
        if next <= pending {
            seen.waiting.clear();
        }
        seen.waiting.retain(|n, _| *n >= pending);
        stuck
    });
    if !stuck {
        return Ok(());
    }
    let state = family
        .nonces
        .state(chain_id, signer)
        .await
        .map_err(|e| e.to_string())?;
    let free: BTreeSet<u64> = state.free.iter().copied().collect();
    let mut fills = Vec::new();
    for nonce in pending..next.min(pending + SCAN_LIMIT) {
        let owners: Vec<&str> = state
            .owners
            .iter()
            .filter(|(n, _)| *n == nonce)
            .map(|(_, k)| k.as_str())
            .collect();
        let missing = if free.contains(&nonce) {
            Missing::Wait
        } else {
            classify(family, signer, nonce, &owners).await?
        };
        match missing {
            Missing::Resend(tx, key, stored) => {
                // Sent only once the record is durable: rewritten as it is, which waits for
                // the replicas (`[redis] min_replicas_acked`) like every write before a
                // broadcast. Not acknowledged, or changed meanwhile: not sent now.
                match family.store.swap(&key, &stored.raw, &stored.record).await {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(%signer, nonce, error = %e, "stuck sender: the record is not durable yet, not re-sent");
                        continue;
                    }
                }
                match family.send(&tx).await {
                    Sent::Accepted => {
                        tracing::warn!(%signer, nonce, transaction = tx.transaction(), "stuck sender: re-sent a recorded settlement");
                        family.events.resend();
                    }
                    Sent::Unknown(e) | Sent::Refused(e) | Sent::NonceUsed(e) => {
                        tracing::warn!(%signer, nonce, error = %e, "stuck sender: re-send failed")
                    }
                }
            }
            Missing::Fill(why) => fills.push((nonce, why)),
            Missing::Wait => {
                let overdue = family.gaps.with(signer, |seen| {
                    seen.waiting
                        .entry(nonce)
                        .or_insert_with(Instant::now)
                        .elapsed()
                        >= family.gaps.fill_after
                });
                if overdue {
                    fills.push((nonce, "missing for the fill delay"));
                }
            }
        }
    }
    for (nonce, why) in fills {
        if free.contains(&nonce)
            && !family
                .nonces
                .take_free(chain_id, signer, nonce)
                .await
                .map_err(|e| e.to_string())?
        {
            continue; // a settlement took the free nonce meanwhile
        }
        match fill(family, signer, nonce, why, None).await {
            Ok(()) => {
                family.gaps.with(signer, |seen| seen.waiting.remove(&nonce));
            }
            Err(e) => tracing::warn!(%signer, nonce, error = %e, "nonce gap fill failed"),
        }
    }
    Ok(())
}

/// Whether anyone may still send `nonce` of `signer`, from its owners' records.
async fn classify<'a>(
    family: &EvmSender,
    signer: Address,
    nonce: u64,
    owners: &[&str],
) -> Result<Missing<'a>, String> {
    let mut why = "no owner";
    for key in owners {
        let Some(stored) = family.store.get(key).await.map_err(|e| e.to_string())? else {
            why = "its record is gone";
            continue;
        };
        match &stored.record {
            SettlementRecord::Broadcast(b) => {
                if family.clock.unix_now() > b.payment.valid_until {
                    // The authorization's validBefore passed: the transaction can only revert
                    // now. Filling the nonce costs less and lets the record expire.
                    why = "its settlement's validBefore passed";
                    continue;
                }
                if let Some(tx) = signed_at(&b.sent, &b.replaced, signer, nonce) {
                    return Ok(Missing::Resend(
                        tx.clone(),
                        key.to_string(),
                        Box::new(stored.clone()),
                    ));
                }
                why = "its settlement was signed at another nonce";
            }
            SettlementRecord::Reserved(r) if r.lease_until_ms > family.clock.unix_ms() => {
                return Ok(Missing::Wait);
            }
            SettlementRecord::Reserved(_) => why = "its owner's lease lapsed",
            SettlementRecord::Delivered(s) | SettlementRecord::Confirmed(s)
                if s.preconfirmed.is_some() =>
            {
                // Answered success at a pre-confirmation that no block holds: the sequencer
                // dropped it. The same bytes are sent again while they can still land.
                if family.clock.unix_now() > s.payment.valid_until {
                    why = "its pre-confirmed settlement's validBefore passed";
                    tracing::error!(%signer, nonce, transaction = %s.transaction, "a settlement answered success at a pre-confirmation never landed and no longer can");
                    continue;
                }
                if let Some(tx) = s
                    .preconfirmed
                    .as_ref()
                    .and_then(|tx| signed_at(tx, &[], signer, nonce))
                {
                    return Ok(Missing::Resend(
                        tx.clone(),
                        key.to_string(),
                        Box::new(stored.clone()),
                    ));
                }
                why = "its settlement is resolved";
            }
            _ => why = "its settlement is resolved",
        }
    }
    Ok(Missing::Fill(why))
}

/// The transaction of `signer` at `nonce` among a record's sent ones (the newest first).
fn signed_at<'a>(
    sent: &'a SentTx,
    replaced: &'a [SentTx],
    signer: Address,
    nonce: u64,
) -> Option<&'a SentTx> {
    std::iter::once(sent)
        .chain(replaced.iter().rev())
        .find(|tx| {
            matches!(tx, SentTx::Evm { signer: s, nonce: n, .. }
            if *n == nonce && s.parse::<Address>().is_ok_and(|s| s == signer))
        })
}

/// Fills `nonce` of `signer` with a 0-value transfer to itself at the current fees, or, when it
/// replaces an earlier fill that offered `previous`, at [`Fees::replacement`] of those. The fees offered are remembered, sent or not, so
/// that a refused replacement is raised again next time.
async fn fill(
    family: &EvmSender,
    signer: Address,
    nonce: u64,
    why: &str,
    previous: Option<FillFees>,
) -> Result<(), String> {
    let now = family.fees.fetch().await.map_err(|e| e.to_string())?;
    let fees = match previous {
        None => now,
        Some(p) => p.fees.replacement(now),
    };
    let offered = FillFees {
        fees,
        sent_at: Instant::now(),
    };
    family
        .gaps
        .with(signer, |seen| seen.fills.insert(nonce, offered));
    let tx = TransactionRequest::default()
        .from(signer)
        .to(signer)
        .value(U256::ZERO)
        .gas_limit(TRANSFER_GAS)
        .nonce(nonce)
        .max_fee_per_gas(fees.max_fee_per_gas)
        .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
    let signed = family.chain().sign(tx).await.map_err(|e| e.to_string())?;
    let sent = match family.chain().send_raw(&signed.raw).await {
        // Sent before (the same bytes): the node has it.
        Err(ChainError::AlreadyKnown(_)) => Ok(signed.hash),
        other => other,
    };
    match sent {
        Ok(hash) => {
            tracing::warn!(%signer, nonce, transaction = %hash, reason = why, max_fee_per_gas = fees.max_fee_per_gas, "nonce gap filled with a 0-value transfer");
            if previous.is_none() {
                family.events.nonce_gap_filled();
            }
            Ok(())
        }
        Err(e) => Err(format!("gap fill at nonce {nonce} not sent: {e}")),
    }
}
