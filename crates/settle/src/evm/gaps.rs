//! Sender nonce gap repair. Nonces come from a shared counter ([`crate::nonces`]), so a nonce
//! handed out and never sent (its process died between taking it and recording the
//! transaction, or a recorded transaction expired unsent) leaves a hole: the node holds every
//! later transaction of that signer back. Each reconciler pass, per signer:
//!
//! 1. The counter is raised to the node's pending nonce, and used nonces are forgotten.
//! 2. If the node's pending nonce `g` is below the counter, the node has no transaction at `g`.
//!    If a recorded, unresolved settlement signed at `g`, its transaction is re-sent (the node
//!    dropped it). Otherwise, once `g` has been missing for the fill delay (longer than taking
//!    a nonce and recording takes), it is filled with a 0-value transfer from the signer to
//!    itself (21,000 gas), which lets the later transactions through.
//!
//! A settlement whose nonce was filled after all (its process was only slow) finds the nonce
//! used on chain and is re-signed at a new nonce ([`super::EvmFamily`]'s replacement).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::rpc::types::TransactionRequest;

use super::EvmFamily;
use crate::family::{ChainFamily, Sent};
use crate::record::{SentTx, SettlementRecord};

/// Gas of a plain value transfer.
const TRANSFER_GAS: u64 = 21_000;

/// What the repair remembers between passes: the missing nonce per signer and since when.
pub struct GapRepair {
    fill_after: Duration,
    missing: Mutex<HashMap<Address, (u64, Instant)>>,
}

impl GapRepair {
    /// Fills a nonce missing for `fill_after`.
    pub fn new(fill_after: Duration) -> Self {
        GapRepair {
            fill_after,
            missing: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that `nonce` is missing for `signer`; whether it has been for the fill delay.
    fn overdue(&self, signer: Address, nonce: u64) -> bool {
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        let since = missing
            .entry(signer)
            .and_modify(|(n, since)| {
                if *n != nonce {
                    *n = nonce;
                    *since = Instant::now();
                }
            })
            .or_insert((nonce, Instant::now()))
            .1;
        since.elapsed() >= self.fill_after
    }

    fn clear(&self, signer: Address) {
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&signer);
    }
}

/// One repair look at every signer of `family` (failures are logged; the next pass retries).
pub async fn repair(family: &EvmFamily) {
    for (signer, _) in &family.signers {
        if let Err(e) = repair_signer(family, *signer).await {
            tracing::warn!(%signer, error = %e, "nonce repair look failed");
        }
    }
}

async fn repair_signer(family: &EvmFamily, signer: Address) -> Result<(), String> {
    let chain = family.chain();
    let chain_id = family.chain_id();
    let mined = chain.mined_nonce(signer).await.map_err(|e| e.to_string())?;
    let pending = chain
        .pending_nonce(signer)
        .await
        .map_err(|e| e.to_string())?
        .max(mined);
    let next = family
        .nonces
        .sync(chain_id, signer, pending, mined)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(observer) = &family.nonce_lag_observer {
        observer(signer, next.saturating_sub(mined));
    }
    if next <= pending {
        family.gaps.clear(signer);
        return Ok(());
    }
    let gap = pending;
    let state = family
        .nonces
        .state(chain_id, signer)
        .await
        .map_err(|e| e.to_string())?;
    if !state.free.contains(&gap) {
        for (_, key) in state.owners.iter().filter(|(n, _)| *n == gap) {
            let Some(stored) = family.store.get(key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            if let SettlementRecord::Broadcast(b) = &stored.record
                && let Some(tx) = signed_at(&b.sent, &b.replaced, signer, gap)
            {
                // A recorded settlement the node dropped: re-send it rather than fill.
                match family.send(tx).await {
                    Sent::Accepted => {
                        tracing::warn!(%signer, nonce = gap, transaction = tx.transaction(), "nonce gap: re-sent the recorded settlement")
                    }
                    Sent::Unknown(e) | Sent::Refused(e) => {
                        tracing::warn!(%signer, nonce = gap, error = %e, "nonce gap: re-send failed")
                    }
                }
                return Ok(());
            }
        }
    }
    if !family.gaps.overdue(signer, gap) {
        return Ok(());
    }
    if state.free.contains(&gap)
        && !family
            .nonces
            .take_free(chain_id, signer, gap)
            .await
            .map_err(|e| e.to_string())?
    {
        // A settlement took the free nonce meanwhile: no gap.
        return Ok(());
    }
    fill(family, signer, gap).await
}

/// The transaction of `signer` at `nonce` among a record's sent ones (the newest first).
fn signed_at<'a>(
    sent: &'a SentTx,
    replaced: &'a [SentTx],
    signer: Address,
    nonce: u64,
) -> Option<&'a SentTx> {
    std::iter::once(sent).chain(replaced.iter().rev()).find(|tx| {
        matches!(tx, SentTx::Evm { signer: s, nonce: n, .. }
            if *n == nonce && s.parse::<Address>().is_ok_and(|s| s == signer))
    })
}

/// Fills `nonce` of `signer` with a 0-value transfer to itself at the current fees.
async fn fill(family: &EvmFamily, signer: Address, nonce: u64) -> Result<(), String> {
    let fees = family.fees.fetch().await.map_err(|e| e.to_string())?;
    let tx = TransactionRequest::default()
        .from(signer)
        .to(signer)
        .value(U256::ZERO)
        .gas_limit(TRANSFER_GAS)
        .nonce(nonce)
        .max_fee_per_gas(fees.max_fee_per_gas)
        .max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
    let signed = family.chain().sign(tx).await.map_err(|e| e.to_string())?;
    let sent = family.chain().send_raw(&signed.raw).await;
    match sent {
        Ok(hash) => {
            tracing::warn!(%signer, nonce, transaction = %hash, "nonce gap filled with a 0-value transfer");
            family.gaps.clear(signer);
            family.events.nonce_gap_filled();
            Ok(())
        }
        Err(e) => Err(format!("gap fill at nonce {nonce} not sent: {e}")),
    }
}
