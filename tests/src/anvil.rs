//! A private anvil node per test (chain id 8453 by default, like Base mainnet), killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};

use crate::{net, tools};

/// Private keys of the anvil dev accounts 0..=9 (mnemonic `test test … junk`), 10,000 ETH each.
pub const DEV_PRIVATE_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// The signer of anvil dev account `index` (0..=9). Panics on an index out of range.
pub fn dev_signer(index: usize) -> PrivateKeySigner {
    DEV_PRIVATE_KEYS[index]
        .parse()
        .expect("valid dev private key")
}

/// Options for starting anvil; see [`Anvil::builder`].
#[derive(Debug, Clone)]
pub struct AnvilBuilder {
    chain_id: u64,
    base_fee_wei: Option<u128>,
    args: Vec<String>,
    log: Option<std::path::PathBuf>,
}

impl Default for AnvilBuilder {
    fn default() -> Self {
        Self {
            chain_id: 8453,
            base_fee_wei: None,
            args: Vec::new(),
            log: None,
        }
    }
}

impl AnvilBuilder {
    /// Chain id reported by the node (default 8453, Base mainnet).
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// Base fee of the first block, in wei (`--block-base-fee-per-gas`).
    pub fn block_base_fee_per_gas(mut self, wei: u128) -> Self {
        self.base_fee_wei = Some(wei);
        self
    }

    /// Any extra anvil command-line argument (e.g. `"--block-time"`, `"1"`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Writes anvil's log (one line per JSON-RPC method called, blocks mined) to `path` instead of
    /// starting it with `--silent`.
    pub fn log_to(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Starts anvil on a free 127.0.0.1 port and waits until it answers `eth_chainId`.
    pub async fn spawn(self) -> anyhow::Result<Anvil> {
        let bin = tools::anvil_bin()?;
        let mut last_err = None;
        // A free port can be taken by someone else between probing and binding: retry.
        for _ in 0..3 {
            let port = net::free_port()?;
            let mut args = vec!["--chain-id".to_string(), self.chain_id.to_string()];
            if self.log.is_none() {
                args.push("--silent".into());
            }
            args.extend(self.args.iter().cloned());
            if let Some(fee) = self.base_fee_wei {
                args.extend(["--block-base-fee-per-gas".to_string(), fee.to_string()]);
            }
            let stdout = match &self.log {
                Some(path) => Stdio::from(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Stdio::null(),
            };
            let child = spawn_on(&bin, port, &args, stdout)?;
            let mut anvil = Anvil {
                child,
                port,
                chain_id: self.chain_id,
                rpc_url: format!("http://127.0.0.1:{port}"),
                args,
            };
            match anvil.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return Ok(anvil),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }
}

/// A running anvil child process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
    chain_id: u64,
    rpc_url: String,
    /// Arguments besides `--host` / `--port`, kept for [`Anvil::restart`].
    args: Vec<String>,
}

fn spawn_on(
    bin: &std::path::Path,
    port: u16,
    args: &[String],
    stdout: Stdio,
) -> anyhow::Result<Child> {
    Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))
}

impl Anvil {
    /// Starts anvil with the defaults: chain id 8453, `--silent`, a free loopback port.
    pub async fn spawn() -> anyhow::Result<Anvil> {
        AnvilBuilder::default().spawn().await
    }

    /// Options for starting anvil (chain id, block base fee, extra args).
    pub fn builder() -> AnvilBuilder {
        AnvilBuilder::default()
    }

    /// Turns automine on or off (`evm_setAutomine`): off, transactions wait in the pool until a
    /// block is mined (`evm_mine`, or automine turned on again).
    pub async fn set_automine(&self, on: bool) -> anyhow::Result<()> {
        self.provider()
            .raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (on,))
            .await
            .context("evm_setAutomine")?;
        Ok(())
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:<port>`.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// The TCP port anvil listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The chain id anvil was started with.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The signer of dev account `index` (0..=9); see [`dev_signer`].
    pub fn signer(&self, index: usize) -> PrivateKeySigner {
        dev_signer(index)
    }

    /// The address of dev account `index` (0..=9).
    pub fn address(&self, index: usize) -> Address {
        dev_signer(index).address()
    }

    /// A provider without a wallet on this node (reads; `eth_sendTransaction` from unlocked
    /// dev accounts).
    pub fn provider(&self) -> DynProvider {
        ProviderBuilder::default()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .with_chain_id(self.chain_id)
            .connect_http(self.rpc_url.parse().expect("valid url"))
            .erased()
    }

    /// A provider that signs and sends transactions from `signer` (gas, fees, chain id and nonce
    /// filled). The nonce is read from the node (`pending`) for every transaction, so several
    /// providers of one account can be used one after another; concurrent sends from one
    /// account may still race.
    pub fn wallet_provider(&self, signer: PrivateKeySigner) -> DynProvider {
        ProviderBuilder::default()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .with_chain_id(self.chain_id)
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.rpc_url.parse().expect("valid url"))
            .erased()
    }

    /// Kills anvil and waits (up to 10 s) until its port refuses connections. The chain's
    /// state is lost; [`Anvil::restart`] starts a fresh chain on the same port.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        self.child.wait().context("waiting for anvil")?;
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("port {} still accepts connections after stop", self.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts a fresh anvil (same arguments, same port) after [`Anvil::stop`] and waits until
    /// it answers. Fails if the port was taken in between.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let bin = tools::anvil_bin()?;
        self.child = spawn_on(&bin, self.port, &self.args, Stdio::null())?;
        self.wait_ready(Duration::from_secs(15)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let provider = self.provider();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("anvil exited early on port {}: {status}", self.port);
            }
            let answered = provider.get_chain_id().await;
            if let Ok(id) = answered
                && net::pid_listens_on(self.child.id(), self.port)
            {
                if id != self.chain_id {
                    bail!("anvil on port {} reports chain id {id}", self.port);
                }
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("anvil on port {} not ready after {timeout:?}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
