//! [`AppState`]: what the HTTP routes ([`crate::routes`], [`crate::settlements`]) share.

use std::sync::Arc;

use crate::facilitator::Facilitator;
use crate::metrics::Metrics;

/// Shared state of the routes.
pub struct AppState {
    /// The handler registry.
    pub facilitator: Arc<Facilitator>,
    /// Metrics.
    pub metrics: Metrics,
    /// The webhook delivery loop, kept as long as the routes.
    pub _webhooks: Option<crate::webhooks::Worker>,
}
