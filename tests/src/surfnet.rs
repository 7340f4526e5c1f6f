//! A private offline Solana JSON-RPC server per test ("surfnet": surfpool's simnet wrapped by
//! `tools/surfnet`), on free loopback ports, killed on drop.
//!
//! The binary is `<repo>/.tools/bin/x402-surfnet`, built by `scripts/install-surfnet.sh` (a cold
//! build takes about 18 minutes, so it is never started from here). The server holds the SPL
//! Token, Token-2022, Associated Token Account and Memo programs; the cheat codes
//! `surfnet_setAccount` / `surfnet_setTokenAccount` plant mints and token balances. Slots every
//! 400 ms.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use solana_address::Address as Pubkey;
use solana_program_pack::Pack;

use crate::{net, tools};

/// The USDC mint on Solana devnet (Circle), base58.
pub const DEVNET_USDC: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";

/// The SPL Token program, base58.
pub const SPL_TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

/// Supply written into mints planted by [`Surfnet::plant_mint`] (atomic units).
pub const PLANTED_MINT_SUPPLY: u64 = 1_000_000_000_000_000;

/// Mint authority written into mints planted by [`Surfnet::plant_mint`] (nobody holds its key).
pub const PLANTED_MINT_AUTHORITY: &str = "11111111111111111111111111111112";

/// How long one start attempt may take (the debug build of surfpool starts in a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Bytes of the server's stderr kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// Path of the surfnet binary, `<repo>/.tools/bin/x402-surfnet` (may not exist).
pub fn surfnet_bin_path() -> PathBuf {
    tools::tools_dir().join("bin/x402-surfnet")
}

/// Path of the surfnet binary, or an error telling how to build it.
pub fn surfnet_bin() -> anyhow::Result<PathBuf> {
    let bin = surfnet_bin_path();
    if !bin.is_file() {
        bail!(
            "surfnet binary not found at {}: run scripts/install-surfnet.sh (a cold build takes \
             about 18 minutes)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `x402-surfnet` child process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Surfnet {
    child: Child,
    rpc_port: u16,
    ws_port: u16,
    http: reqwest::Client,
    next_id: AtomicU64,
    stderr: Arc<Mutex<String>>,
}

impl Surfnet {
    /// Starts the server on free 127.0.0.1 ports, waits for its `ready` line and then for a
    /// successful `getLatestBlockhash`.
    pub async fn spawn() -> anyhow::Result<Surfnet> {
        let bin = surfnet_bin()?;
        let mut last_err = None;
        // A free port can be taken by someone else between probing and binding: retry.
        for _ in 0..3 {
            let rpc_port = net::free_port()?;
            let ws_port = net::free_port()?;
            if ws_port == rpc_port {
                continue;
            }
            let mut child = Command::new(&bin)
                .args(["--rpc-port", &rpc_port.to_string()])
                .args(["--ws-port", &ws_port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("spawning {}", bin.display()))?;
            let ready = watch_stdout(child.stdout.take().expect("piped stdout"));
            let stderr = collect_stderr(child.stderr.take().expect("piped stderr"));
            let mut surfnet = Surfnet {
                child,
                rpc_port,
                ws_port,
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .context("building the HTTP client")?,
                next_id: AtomicU64::new(1),
                stderr,
            };
            match surfnet.wait_ready(ready, START_TIMEOUT).await {
                Ok(()) => return Ok(surfnet),
                Err(e) => last_err = Some(anyhow::anyhow!("{e:#}\n{}", surfnet.stderr_tail())),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no free port pair for surfnet")))
    }

    /// The HTTP JSON-RPC endpoint, `http://127.0.0.1:<rpc port>`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// The HTTP JSON-RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// One JSON-RPC call; returns its `result`, or an error naming the method on an `error`
    /// answer (the error object is in the message).
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self
            .http
            .post(self.rpc_url())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{method}: sending to {}", self.rpc_url()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method}: reading the answer"))?;
        let mut answer: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method}: HTTP {status}, not JSON: {text}"))?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            bail!("{method}: RPC error {error}");
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => bail!("{method}: HTTP {status}, answer without result: {text}"),
        }
    }

    /// Lamports of `pubkey` (`getBalance`, confirmed; 0 for a missing account).
    pub async fn balance(&self, pubkey: &Pubkey) -> anyhow::Result<u64> {
        let result = self
            .rpc(
                "getBalance",
                json!([pubkey.to_string(), { "commitment": "confirmed" }]),
            )
            .await?;
        result["value"]
            .as_u64()
            .with_context(|| format!("getBalance: no value in {result}"))
    }

    /// Gives `pubkey` `lamports` more SOL (`requestAirdrop`) and waits until `getBalance` shows
    /// it.
    pub async fn airdrop(&self, pubkey: &Pubkey, lamports: u64) -> anyhow::Result<()> {
        let before = self.balance(pubkey).await?;
        self.rpc("requestAirdrop", json!([pubkey.to_string(), lamports]))
            .await?;
        let target = before.saturating_add(lamports);
        let start = Instant::now();
        loop {
            let now = self.balance(pubkey).await?;
            if now >= target {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("airdrop of {lamports} to {pubkey}: balance still {now} (was {before})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a whole account (`surfnet_setAccount`; data sent as hex, rent epoch 0).
    pub async fn set_account(
        &self,
        pubkey: &Pubkey,
        lamports: u64,
        data: &[u8],
        owner: &Pubkey,
        executable: bool,
    ) -> anyhow::Result<()> {
        let update = json!({
            "lamports": lamports,
            "data": to_hex(data),
            "owner": owner.to_string(),
            "executable": executable,
            "rentEpoch": 0,
        });
        self.rpc("surfnet_setAccount", json!([pubkey.to_string(), update]))
            .await?;
        Ok(())
    }

    /// Plants an initialized SPL mint at `mint`, owned by `token_program` (SPL Token or
    /// Token-2022, base layout without extensions): `decimals`, supply
    /// [`PLANTED_MINT_SUPPLY`], mint authority [`PLANTED_MINT_AUTHORITY`], no freeze authority,
    /// rent-exempt lamports.
    pub async fn plant_mint(
        &self,
        mint: &Pubkey,
        decimals: u8,
        token_program: &Pubkey,
    ) -> anyhow::Result<()> {
        let state = spl_token_interface::state::Mint {
            mint_authority: Some(parse_pubkey(PLANTED_MINT_AUTHORITY)?).into(),
            supply: PLANTED_MINT_SUPPLY,
            decimals,
            is_initialized: true,
            freeze_authority: None.into(),
        };
        let mut data = vec![0u8; spl_token_interface::state::Mint::LEN];
        state.pack_into_slice(&mut data);
        let lamports = self.rent_exempt_minimum(data.len()).await?;
        self.set_account(mint, lamports, &data, token_program, false)
            .await
    }

    /// Sets the token balance of `owner`'s associated token account for `mint` to `amount`
    /// (`surfnet_setTokenAccount`, which creates the account, rent-exempt and initialized, when
    /// missing). Returns the associated token account's address.
    pub async fn set_token_balance(
        &self,
        owner: &Pubkey,
        mint: &Pubkey,
        amount: u64,
        token_program: &Pubkey,
    ) -> anyhow::Result<Pubkey> {
        self.rpc(
            "surfnet_setTokenAccount",
            json!([
                owner.to_string(),
                mint.to_string(),
                { "amount": amount },
                token_program.to_string(),
            ]),
        )
        .await?;
        Ok(associated_token_address(owner, mint, token_program))
    }

    /// The token amount (atomic units) held by token account `ata`
    /// (`getTokenAccountBalance`, confirmed); `None` when the account does not exist.
    pub async fn token_balance(&self, ata: &Pubkey) -> anyhow::Result<Option<u64>> {
        let info = self
            .rpc(
                "getAccountInfo",
                json!([ata.to_string(), { "commitment": "confirmed", "encoding": "base64" }]),
            )
            .await?;
        if info["value"].is_null() {
            return Ok(None);
        }
        let result = self
            .rpc(
                "getTokenAccountBalance",
                json!([ata.to_string(), { "commitment": "confirmed" }]),
            )
            .await?;
        let amount = result["value"]["amount"]
            .as_str()
            .with_context(|| format!("getTokenAccountBalance: no value.amount in {result}"))?;
        Ok(Some(amount.parse().with_context(|| {
            format!("getTokenAccountBalance: amount {amount:?}")
        })?))
    }

    /// `getMinimumBalanceForRentExemption(len)`.
    pub async fn rent_exempt_minimum(&self, len: usize) -> anyhow::Result<u64> {
        let result = self
            .rpc("getMinimumBalanceForRentExemption", json!([len]))
            .await?;
        result
            .as_u64()
            .with_context(|| format!("getMinimumBalanceForRentExemption: {result}"))
    }

    /// The latest blockhash (`getLatestBlockhash`, confirmed).
    pub async fn latest_blockhash(&self) -> anyhow::Result<solana_hash::Hash> {
        let result = self
            .rpc("getLatestBlockhash", json!([{ "commitment": "confirmed" }]))
            .await?;
        let hash = result["value"]["blockhash"]
            .as_str()
            .with_context(|| format!("getLatestBlockhash: no value.blockhash in {result}"))?;
        hash.parse()
            .map_err(|e| anyhow::anyhow!("getLatestBlockhash: bad blockhash {hash:?}: {e:?}"))
    }

    /// The server's stderr so far (its last few KB), for diagnostics.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("surfnet stderr (tail):\n{tail}")
    }

    async fn wait_ready(
        &mut self,
        ready: mpsc::Receiver<()>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut saw_ready = false;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "surfnet exited early (rpc port {}, ws port {}): {status}",
                    self.rpc_port,
                    self.ws_port
                );
            }
            if !saw_ready {
                saw_ready = ready.try_recv().is_ok();
            }
            if saw_ready
                && self.latest_blockhash().await.is_ok()
                && net::pid_listens_on(self.child.id(), self.rpc_port)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "surfnet on rpc port {} not ready after {timeout:?} (printed ready: {saw_ready})",
                    self.rpc_port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Surfnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The associated token account of `owner` for `mint` under `token_program`.
pub fn associated_token_address(owner: &Pubkey, mint: &Pubkey, token_program: &Pubkey) -> Pubkey {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner,
        mint,
        token_program,
    )
}

/// Parses a base58 address.
pub fn parse_pubkey(s: &str) -> anyhow::Result<Pubkey> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("bad base58 address {s:?}: {e:?}"))
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads the server's stdout on a thread: signals once on the `ready` line, then keeps draining
/// so that the pipe never fills.
fn watch_stdout(stdout: impl Read + Send + 'static) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if line.trim_ascii() == b"ready" {
                let _ = tx.send(());
            }
            line.clear();
        }
    });
    rx
}

/// Keeps the last [`STDERR_TAIL`] bytes of the server's stderr, read on a thread.
fn collect_stderr(stderr: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let Ok(mut s) = sink.lock() else { break };
            s.push_str(&String::from_utf8_lossy(&line));
            line.clear();
            if s.len() > 2 * STDERR_TAIL {
                let mut cut = s.len() - STDERR_TAIL;
                while !s.is_char_boundary(cut) {
                    cut += 1;
                }
                s.drain(..cut);
            }
        }
    });
    buf
}
