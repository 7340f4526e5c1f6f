//! New block heads pushed by the node: `eth_subscribe("newHeads")` over a WebSocket
//! (Ethereum JSON-RPC pub/sub), with alloy's WebSocket transport.
//!
//! Used only as a wake-up: whoever follows the heads still reads blocks over the HTTP
//! [`crate::EvmChain`], so a subscription that drops, lags or lies costs latency, never
//! correctness.

use alloy::providers::{DynProvider, Provider, ProviderBuilder, WsConnect};
use alloy::pubsub::SubscriptionStream;
use alloy::rpc::types::Header;

use crate::endpoint::{redacted_detail, redacted_url};

/// A live `newHeads` subscription. Dropping it unsubscribes and closes the socket.
pub struct NewHeads {
    /// Keeps the socket (and its background task) alive while the stream is read.
    _provider: DynProvider,
    stream: SubscriptionStream<Header>,
}

impl NewHeads {
    /// Opens a WebSocket to `ws_url` (`ws://` or `wss://`) and subscribes to `newHeads`,
    /// giving up after `timeout`. Errors name the endpoint without its path or credentials
    /// (a WebSocket URL often holds an API key).
    pub async fn subscribe(ws_url: &str, timeout: std::time::Duration) -> Result<Self, String> {
        let shown = redacted_url(ws_url);
        let connect = async {
            let provider = ProviderBuilder::new()
                .connect_ws(WsConnect::new(ws_url))
                .await
                .map_err(|e| format!("{shown}: cannot connect: {}", redacted_detail(&e, ws_url)))?
                .erased();
            let sub = provider.subscribe_blocks().await.map_err(|e| {
                format!(
                    "{shown}: eth_subscribe(newHeads) refused: {}",
                    redacted_detail(&e, ws_url)
                )
            })?;
            Ok(NewHeads {
                stream: sub.into_stream(),
                _provider: provider,
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| format!("{shown}: no subscription within {timeout:?}"))?
    }

    /// The next head's block number; `None` when the subscription ended (socket closed).
    pub async fn next(&mut self) -> Option<u64> {
        use futures::StreamExt as _;
        self.stream.next().await.map(|h| h.number)
    }
}
