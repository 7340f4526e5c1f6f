//! The error of the replay store and its outbox (one type for both, so that neither module
//! depends on the other for it).

/// The replay store could not be reached, timed out or answered garbage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);
