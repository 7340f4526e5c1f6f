//! The read-only queries of `GET /settlements/{transaction}` and `POST /settlements/lookup`;
//! the view they answer is [`crate::status::SettlementStatus`].

use x402_proto::PaymentRequest;

use super::Engine;
use crate::SettleError;
use crate::family::{ChainFamily, Identified};
use crate::replay::ReplayStore;
use crate::status::SettlementStatus;

impl<F: ChainFamily> Engine<F> {
    /// The settlement of the payment in `req` under its requirements, acting on nothing;
    /// `None` when there is none (or only one under other requirements).
    pub async fn status(
        &self,
        req: &PaymentRequest,
        now: u64,
    ) -> Result<Option<SettlementStatus>, SettleError> {
        let Identified::Payment(id) = self.family.identify(req, now).await? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get(&id.key)
            .await?
            .filter(|s| s.record.payment().binding == id.facts.binding)
            .map(|s| SettlementStatus::of(&s.record)))
    }
}

/// The settlement that signed `transaction` (EVM hash, any case; Solana signature).
pub async fn by_transaction(
    store: &dyn ReplayStore,
    transaction: &str,
) -> Result<Option<SettlementStatus>, SettleError> {
    let Some(key) = store.key_of_transaction(transaction).await? else {
        return Ok(None);
    };
    Ok(store
        .get(&key)
        .await?
        .map(|stored| SettlementStatus::of(&stored.record)))
}
