//! The error of the replay store and its outbox (one type for both, so that neither module
//! depends on the other for it).

use std::sync::Arc;

/// The replay store failed: unreachable (retry later), or a stored value that is corrupt
/// (retrying does not help).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Not reachable, timed out, or an answer out of protocol: settlement refuses (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// A stored value does not decode, or holds what no version of this code writes (a record,
    /// a nonce counter below zero): a bug or tampering (HTTP 500).
    #[error("corrupt {what}")]
    Corrupt {
        /// What is corrupt, e.g. `settlement record`.
        what: String,
        /// The decoding error, if any.
        #[source]
        source: Option<Arc<serde_json::Error>>,
    },
}

impl StoreError {
    /// A corrupt `what`, without a decoding error.
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// The error and its source on one line (`corrupt settlement record: expected value at
    /// line 1 column 1`).
    pub fn detail(&self) -> String {
        match self {
            StoreError::Corrupt {
                what,
                source: Some(source),
            } => format!("corrupt {what}: {source}"),
            other => other.to_string(),
        }
    }
}
