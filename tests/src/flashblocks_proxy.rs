//! **A mock of Base's flashblocks-aware JSON-RPC** (e.g. `https://mainnet-preconf.base.org`):
//! no flashblocks node (op-rbuilder, base node-reth) can run here, so this HTTP proxy on
//! 127.0.0.1 emulates the one behaviour the facilitator's `[[evm]] preconfirmations` relies on,
//! in front of a real anvil mining slow blocks (e.g. `evm_setIntervalMining(3)`):
//!
//! - every JSON-RPC call is forwarded to anvil and answered with anvil's answer;
//! - `eth_getTransactionReceipt` of a transaction anvil still holds unmined, once
//!   [`FlashblocksProxy::set_delay`] (default 200 ms, Base's flashblock interval) has passed
//!   since the transaction went through the proxy's `eth_sendRawTransaction` (or since it was
//!   first asked for), is answered with a pre-confirmation receipt instead of `null`, as a
//!   flashblocks node answers for a transaction in the block being built.
//!
//! The pre-confirmation receipt is built from anvil alone, without changing its state: the
//! pending block (`eth_getBlockByNumber("pending", true)`: the transactions anvil would mine
//! next, in its mining order) is replayed up to the transaction with `eth_simulateV1` on the
//! latest block (no validation), which gives its status, gas used and logs; its block number and
//! hash are the pending block's. So a transaction that an earlier one in the same block makes
//! revert is pre-confirmed as reverted, as the sequencer would. Batches are forwarded untouched.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use alloy::primitives::{Address, B256, Bloom};
use serde_json::{Value, json};

/// Base's flashblock interval, the default delay before a pre-confirmation is served.
pub const FLASHBLOCK_INTERVAL: Duration = Duration::from_millis(200);

/// The proxy's shared state.
struct State {
    /// anvil's HTTP URL.
    target: String,
    client: reqwest::Client,
    /// How long after its arrival a pending transaction is pre-confirmed.
    delay: Mutex<Duration>,
    /// Transaction hash (lowercase 0x-hex) → when the proxy first saw it.
    seen: Mutex<HashMap<String, Instant>>,
    /// Transactions sent through the proxy, in order.
    sent: Mutex<Vec<String>>,
    /// Pre-confirmation receipts served, with status 1 and with status 0.
    served_ok: AtomicU64,
    served_reverted: AtomicU64,
}

/// A running proxy; stopped when dropped.
pub struct FlashblocksProxy {
    url: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl FlashblocksProxy {
    /// Proxies 127.0.0.1:<free port> to the node at `target` (an `http://` URL), serving
    /// pre-confirmations after [`FLASHBLOCK_INTERVAL`].
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            target: target.to_string(),
            client: reqwest::Client::new(),
            delay: Mutex::new(FLASHBLOCK_INTERVAL),
            seen: Mutex::new(HashMap::new()),
            sent: Mutex::new(Vec::new()),
            served_ok: AtomicU64::new(0),
            served_reverted: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(handle))
        })
        .workers(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(FlashblocksProxy { url, state, handle })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves pre-confirmations this long after a transaction's arrival from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Hashes (lowercase 0x-hex) of the transactions sent through the proxy so far, in order.
    pub fn sent(&self) -> Vec<String> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Pre-confirmation receipts served so far: (status 1, status 0).
    pub fn served(&self) -> (u64, u64) {
        (
            self.state.served_ok.load(Ordering::SeqCst),
            self.state.served_reverted.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FlashblocksProxy {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// One HTTP request: a JSON-RPC call (or batch).
async fn handle(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(call) if call.is_object() => answer(&state, &call).await,
        _ => forward_raw(&state, body.to_vec()).await,
    };
    match answer {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

/// Forwards a body untouched.
async fn forward_raw(state: &State, body: Vec<u8>) -> anyhow::Result<Value> {
    Ok(state
        .client
        .post(&state.target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .json()
        .await?)
}

/// One call: forwarded, with the flashblocks behaviours on top.
async fn answer(state: &State, call: &Value) -> anyhow::Result<Value> {
    let mut reply = forward_raw(state, serde_json::to_vec(call)?).await?;
    match call["method"].as_str() {
        Some("eth_sendRawTransaction") => {
            if let Some(hash) = reply["result"].as_str() {
                let hash = hash.to_lowercase();
                state
                    .seen
                    .lock()
                    .unwrap()
                    .entry(hash.clone())
                    .or_insert_with(Instant::now);
                state.sent.lock().unwrap().push(hash);
            }
        }
        Some("eth_getTransactionReceipt") if reply["result"].is_null() => {
            if let Some(hash) = call["params"][0].as_str()
                && let Some(receipt) = preconfirmation(state, &hash.to_lowercase()).await?
            {
                reply["result"] = receipt;
            }
        }
        _ => {}
    }
    Ok(reply)
}

/// Calls `method` on anvil; its `result`.
async fn rpc(state: &State, method: &str, params: Value) -> anyhow::Result<Value> {
    let reply = forward_raw(
        state,
        serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        )?,
    )
    .await?;
    if let Some(e) = reply.get("error") {
        anyhow::bail!("{method}: {e}");
    }
    Ok(reply["result"].clone())
}

/// The pre-confirmation receipt of `hash` if anvil holds it in its pending block and the delay
/// has passed since its arrival.
async fn preconfirmation(state: &State, hash: &str) -> anyhow::Result<Option<Value>> {
    let arrived = *state
        .seen
        .lock()
        .unwrap()
        .entry(hash.to_string())
        .or_insert_with(Instant::now);
    if arrived.elapsed() < *state.delay.lock().unwrap() {
        return Ok(None);
    }
    let pending = rpc(state, "eth_getBlockByNumber", json!(["pending", true])).await?;
    let Some(txs) = pending["transactions"].as_array() else {
        return Ok(None);
    };
    let Some(index) = txs
        .iter()
        .position(|t| t["hash"].as_str().map(str::to_lowercase).as_deref() == Some(hash))
    else {
        return Ok(None);
    };
    let calls: Vec<Value> = txs[..=index]
        .iter()
        .map(|t| {
            json!({
                "from": t["from"], "to": t["to"], "gas": t["gas"], "value": t["value"],
                "input": t["input"], "nonce": t["nonce"],
            })
        })
        .collect();
    let simulated = rpc(
        state,
        "eth_simulateV1",
        json!([{"blockStateCalls": [{"calls": calls}], "validation": false}, "latest"]),
    )
    .await?;
    let results = simulated[0]["calls"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("eth_simulateV1 answered {simulated}"))?;
    let tx = &txs[index];
    let (block_number, block_hash) = (pending["number"].clone(), pending["hash"].clone());
    let mut cumulative = 0u64;
    let mut log_index = 0u64;
    let mut receipt_logs = Vec::new();
    let mut bloom = Bloom::default();
    for (i, result) in results.iter().enumerate().take(index + 1) {
        cumulative += hex_u64(&result["gasUsed"]);
        for log in result["logs"].as_array().into_iter().flatten() {
            if i == index {
                let address: Address = serde_json::from_value(log["address"].clone())?;
                let topics: Vec<B256> = serde_json::from_value(log["topics"].clone())?;
                bloom.accrue_raw_log(address, &topics);
                receipt_logs.push(json!({
                    "address": log["address"], "topics": log["topics"], "data": log["data"],
                    "blockNumber": block_number, "blockHash": block_hash,
                    "transactionHash": hash, "transactionIndex": format!("{index:#x}"),
                    "logIndex": format!("{log_index:#x}"), "removed": false,
                }));
            }
            log_index += 1;
        }
    }
    let result = &results[index];
    let base_fee = hex_u128(&pending["baseFeePerGas"]);
    let max_fee = hex_u128(&tx["maxFeePerGas"]);
    let tip = hex_u128(&tx["maxPriorityFeePerGas"]);
    let effective = if max_fee == 0 {
        hex_u128(&tx["gasPrice"])
    } else {
        max_fee.min(base_fee + tip)
    };
    let status = result["status"].clone();
    if hex_u64(&status) == 1 {
        state.served_ok.fetch_add(1, Ordering::SeqCst);
    } else {
        state.served_reverted.fetch_add(1, Ordering::SeqCst);
    }
    Ok(Some(json!({
        "type": tx["type"],
        "status": status,
        "cumulativeGasUsed": format!("{cumulative:#x}"),
        "logs": receipt_logs,
        "logsBloom": bloom,
        "transactionHash": hash,
        "transactionIndex": format!("{index:#x}"),
        "blockHash": block_hash,
        "blockNumber": block_number,
        "gasUsed": result["gasUsed"],
        "effectiveGasPrice": format!("{effective:#x}"),
        "from": tx["from"],
        "to": tx["to"],
        "contractAddress": null,
    })))
}

/// A `0x`-hex quantity (0 when absent or malformed).
fn hex_u64(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// A `0x`-hex quantity (0 when absent or malformed).
fn hex_u128(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| u128::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}
