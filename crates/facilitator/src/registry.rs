//! The handler registry: a map from `(x402Version, scheme, network)` to the
//! [`SchemeHandler`] serving it, built once at start, and the `/supported` answer it implies.
//! Routes do no dispatching of their own, and nothing here knows a scheme by name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use x402_proto::{Network, ParseError, PaymentRequest, Reason, SupportedKind, SupportedResponse};

use crate::scheme::{SchemeHandler, StartError};

/// `(x402Version, scheme, CAIP-2 network)`.
type Key = (u8, String, Network);

/// Every registered handler, by what it serves.
pub struct Registry {
    by_kind: HashMap<Key, Arc<dyn SchemeHandler>>,
    /// In registration order (the order of `/supported` and of the default scheme of a network).
    handlers: Vec<Arc<dyn SchemeHandler>>,
    supported: SupportedResponse,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            by_kind: HashMap::new(),
            handlers: Vec::new(),
            supported: SupportedResponse {
                kinds: Vec::new(),
                extensions: vec![x402_proto::payment_identifier::PAYMENT_IDENTIFIER.to_string()],
                signers: BTreeMap::new(),
            },
        }
    }

    /// Registers `handler` for each of its versions on its network and adds its kinds and
    /// signers to `/supported`. Errors: a `(version, scheme, network)` already registered.
    pub fn register(&mut self, handler: Arc<dyn SchemeHandler>) -> Result<(), StartError> {
        let network = handler.network().clone();
        let scheme = handler.scheme().to_string();
        for &version in handler.versions() {
            let key = (version, scheme.clone(), network.clone());
            if self.by_kind.contains_key(&key) {
                return Err(StartError::Duplicate {
                    version,
                    scheme,
                    network: network.to_string(),
                });
            }
            self.by_kind.insert(key, handler.clone());
        }
        let extra = handler.extra();
        for &version in handler.versions() {
            let wire = match version {
                1 => network.v1_name().map(str::to_string),
                _ => Some(network.to_string()),
            };
            if let Some(wire) = wire {
                self.supported.kinds.push(SupportedKind {
                    x402_version: version,
                    scheme: scheme.clone(),
                    network: wire,
                    extra: extra.clone(),
                });
            }
        }
        for extension in handler.extensions() {
            if !self.supported.extensions.contains(&extension) {
                self.supported.extensions.push(extension);
            }
        }
        let signers = handler.signers();
        if !signers.is_empty() {
            let list = self
                .supported
                .signers
                .entry(network.wildcard())
                .or_default();
            for s in signers {
                if !list.contains(&s) {
                    list.push(s);
                }
            }
        }
        self.handlers.push(handler);
        Ok(())
    }

    /// `GET /supported`.
    pub fn supported(&self) -> &SupportedResponse {
        &self.supported
    }

    /// Every handler, in registration order.
    pub fn handlers(&self) -> &[Arc<dyn SchemeHandler>] {
        &self.handlers
    }

    /// The handler of a `/verify` or `/settle` request. Errors: the reason of the 200 answer,
    /// `invalid_network` for a network nothing serves, `unsupported_scheme` for a scheme or
    /// version not served on it.
    pub fn handler(&self, req: &PaymentRequest) -> Result<&Arc<dyn SchemeHandler>, Reason> {
        let network = req.network().ok_or(Reason::InvalidNetwork)?;
        if !self.handlers.iter().any(|h| *h.network() == network) {
            return Err(Reason::InvalidNetwork);
        }
        self.by_kind
            .get(&(req.version.number(), req.scheme().to_string(), network))
            .ok_or(Reason::UnsupportedScheme)
    }

    /// The handler pricing `/quote` and `/requirements` on `network` (CAIP-2 or v1 name):
    /// the one of `scheme`, default the first registered on the network. Errors name the field.
    pub fn pricing_handler(
        &self,
        network: &str,
        scheme: Option<&str>,
    ) -> Result<(Network, &Arc<dyn SchemeHandler>), ParseError> {
        let net = Network::parse(network)
            .ok_or_else(|| ParseError::new("network", format!("unknown network {network:?}")))?;
        let mut on_network = self.handlers.iter().filter(|h| *h.network() == net);
        let found = match scheme {
            None => on_network.next(),
            Some(s) => on_network.find(|h| h.scheme() == s),
        };
        match (found, scheme) {
            (Some(h), _) => Ok((net, h)),
            (None, Some(s)) if self.handlers.iter().any(|h| *h.network() == net) => Err(
                ParseError::new("scheme", format!("scheme {s:?} is not served on {net}")),
            ),
            (None, _) => Err(ParseError::new(
                "network",
                format!("{net} is not configured"),
            )),
        }
    }
}
