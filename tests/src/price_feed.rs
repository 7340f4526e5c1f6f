//! Price inputs of the gas oracle, real components only:
//!
//! - [`MockAggregator`]: Chainlink's `MockV3Aggregator` (source of npm `@chainlink/contracts`
//!   1.5.0, compiled with npm `solc` 0.8.37 by `scripts/install-tools.sh`) deployed on anvil;
//!   answers are USD × 10^decimals, times Unix seconds.
//! - [`OpL1FeeOracle`]: the OP-stack `GasPriceOracle` and `L1Block` predeploys (forge artifacts
//!   of npm `@eth-optimism/contracts-bedrock` 0.17.3) placed at their addresses on anvil and set
//!   up by the depositor account, as on Base; fees in wei.
//! - [`PriceServer`]: a Coinbase-style spot price API (`GET /v2/prices/<pair>/spot` →
//!   `{"data":{"amount":"…"}}`) on 127.0.0.1, with a settable price, failure and delay.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, Bytes, I256, U256, address};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, ensure};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Anvil;
use crate::usdc::{confirm, deploy_code};

/// Folder (under `.tools`) of the price-feed artifacts written by `scripts/install-tools.sh`.
const PRICE_FEED_REL: &str = "price-feed";
const ARTIFACTS: [&str; 3] = [
    "MockV3Aggregator.json",
    "GasPriceOracle.json",
    "L1Block.json",
];

/// The OP-stack `L1Block` predeploy (L1 attributes: base fee, blob base fee, scalars).
pub const OP_L1_BLOCK: Address = address!("0x4200000000000000000000000000000000000015");
/// The OP-stack `GasPriceOracle` predeploy.
pub const OP_GAS_PRICE_ORACLE: Address = address!("0x420000000000000000000000000000000000000F");
/// The OP-stack depositor account, the only sender allowed to set L1 attributes.
pub const OP_DEPOSITOR: Address = address!("0xDeaDDEaDDeAdDeAdDEAdDEaddeAddEAdDEAd0001");

/// `sol!` bindings (generated functions take many arguments).
#[allow(clippy::too_many_arguments)]
mod bindings {
    alloy::sol! {
        /// Chainlink's `MockV3Aggregator` (AggregatorV3Interface + test setters).
        #[sol(rpc, all_derives)]
        interface MockV3Aggregator {
            function decimals() external view returns (uint8);
            function latestRoundData() external view returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
            function updateAnswer(int256 _answer) external;
            function updateRoundData(uint80 _roundId, int256 _answer, uint256 _timestamp, uint256 _startedAt) external;
        }

        /// The OP-stack `GasPriceOracle` predeploy.
        #[sol(rpc, all_derives)]
        interface GasPriceOracle {
            function getL1Fee(bytes _data) external view returns (uint256);
            function setEcotone() external;
            function setFjord() external;
            function isEcotone() external view returns (bool);
            function isFjord() external view returns (bool);
            function l1BaseFee() external view returns (uint256);
            function blobBaseFee() external view returns (uint256);
            function baseFeeScalar() external view returns (uint32);
            function blobBaseFeeScalar() external view returns (uint32);
        }
    }
}

pub use bindings::{GasPriceOracle, MockV3Aggregator};

/// A compiled contract: ABI-less view of an artifact written by `scripts/install-tools.sh`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedArtifact {
    /// Contract name.
    pub contract_name: String,
    /// Creation bytecode, `0x…`.
    pub bytecode: Bytes,
    /// Runtime bytecode, `0x…`.
    pub deployed_bytecode: Bytes,
}

/// The folder of the price-feed artifacts, installing the tools once per process
/// ([`crate::tools::ensure_installed`]) if one is missing.
pub fn artifacts_dir() -> anyhow::Result<PathBuf> {
    crate::tools::ensure_installed()?;
    let dir = artifacts_path();
    ensure!(
        artifacts_present(),
        "price-feed artifacts still missing in {}",
        dir.display()
    );
    Ok(dir)
}

fn artifacts_path() -> PathBuf {
    crate::tools::tools_dir().join(PRICE_FEED_REL)
}

/// Whether every price-feed artifact is installed.
pub(crate) fn artifacts_present() -> bool {
    let dir = artifacts_path();
    ARTIFACTS.iter().all(|a| dir.join(a).is_file())
}

impl FeedArtifact {
    /// Loads `name` (`MockV3Aggregator`, `GasPriceOracle` or `L1Block`).
    pub fn load(name: &str) -> anyhow::Result<FeedArtifact> {
        let path = artifacts_dir()?.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Chainlink's `MockV3Aggregator` on anvil.
#[derive(Clone)]
pub struct MockAggregator {
    contract: MockV3Aggregator::MockV3AggregatorInstance<DynProvider>,
}

impl MockAggregator {
    /// Deploys a feed with `decimals` decimals whose first round answers `answer` (USD ×
    /// 10^decimals) updated at the current block time.
    pub async fn deploy(
        anvil: &Anvil,
        deployer: PrivateKeySigner,
        decimals: u8,
        answer: i128,
    ) -> anyhow::Result<MockAggregator> {
        let provider = anvil.wallet_provider(deployer);
        let artifact = FeedArtifact::load("MockV3Aggregator")?;
        let mut code = artifact.bytecode.to_vec();
        code.extend_from_slice(&U256::from(decimals).to_be_bytes::<32>());
        code.extend_from_slice(&I256::try_from(answer)?.to_be_bytes::<32>());
        let at = deploy_code(&provider, code.into()).await?;
        Ok(MockAggregator {
            contract: MockV3Aggregator::new(at, provider),
        })
    }

    /// The feed contract address.
    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The bound contract, for any other call.
    pub fn contract(&self) -> &MockV3Aggregator::MockV3AggregatorInstance<DynProvider> {
        &self.contract
    }

    /// A new round answering `answer` (USD × 10^decimals), updated at the current block time.
    pub async fn update_answer(&self, answer: i128) -> anyhow::Result<()> {
        confirm(
            self.contract
                .updateAnswer(I256::try_from(answer)?)
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// Sets the latest round explicitly: id, answer, `updatedAt` and `startedAt` (Unix seconds).
    pub async fn update_round_data(
        &self,
        round_id: u64,
        answer: i128,
        updated_at: u64,
        started_at: u64,
    ) -> anyhow::Result<()> {
        let call = self.contract.updateRoundData(
            alloy::primitives::Uint::<80, 2>::from(round_id),
            I256::try_from(answer)?,
            U256::from(updated_at),
            U256::from(started_at),
        );
        confirm(call.send().await?).await?;
        Ok(())
    }
}

/// L1 attributes of an OP-stack chain (Ecotone fee formula inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Attributes {
    /// L1 base fee, wei.
    pub l1_base_fee_wei: u128,
    /// L1 blob base fee, wei.
    pub blob_base_fee_wei: u128,
    /// Base fee scalar (Base mainnet: 2269).
    pub base_fee_scalar: u32,
    /// Blob base fee scalar (Base mainnet: 1055762).
    pub blob_base_fee_scalar: u32,
}

/// The OP-stack `GasPriceOracle` + `L1Block` predeploys on anvil, in Ecotone mode.
pub struct OpL1FeeOracle {
    oracle: GasPriceOracle::GasPriceOracleInstance<DynProvider>,
}

impl OpL1FeeOracle {
    /// Places both predeploys' runtime code at their addresses, then, as the depositor account
    /// (impersonated), sets the L1 attributes (`setL1BlockValuesEcotone`) and activates Ecotone.
    pub async fn install(anvil: &Anvil, attrs: L1Attributes) -> anyhow::Result<OpL1FeeOracle> {
        let provider = anvil.provider();
        for (name, at) in [
            ("L1Block", OP_L1_BLOCK),
            ("GasPriceOracle", OP_GAS_PRICE_ORACLE),
        ] {
            let code = FeedArtifact::load(name)?.deployed_bytecode;
            provider
                .raw_request::<_, ()>("anvil_setCode".into(), (at, code))
                .await
                .with_context(|| format!("anvil_setCode {name}"))?;
        }
        provider
            .raw_request::<_, ()>(
                "anvil_setBalance".into(),
                (OP_DEPOSITOR, U256::from(10u128.pow(18))),
            )
            .await?;
        // abi.encodePacked(selector, baseFeeScalar u32, blobBaseFeeScalar u32, sequenceNumber
        // u64, timestamp u64, number u64, basefee u256, blobBaseFee u256, hash, batcherHash).
        let mut data = alloy::primitives::keccak256("setL1BlockValuesEcotone()")[..4].to_vec();
        data.extend_from_slice(&attrs.base_fee_scalar.to_be_bytes());
        data.extend_from_slice(&attrs.blob_base_fee_scalar.to_be_bytes());
        data.extend_from_slice(&1u64.to_be_bytes());
        data.extend_from_slice(&crate::eip3009::unix_now().to_be_bytes());
        data.extend_from_slice(&20_000_000u64.to_be_bytes());
        data.extend_from_slice(&U256::from(attrs.l1_base_fee_wei).to_be_bytes::<32>());
        data.extend_from_slice(&U256::from(attrs.blob_base_fee_wei).to_be_bytes::<32>());
        data.extend_from_slice(&[0x11; 32]);
        data.extend_from_slice(&[0x22; 32]);
        let oracle = GasPriceOracle::new(OP_GAS_PRICE_ORACLE, provider.clone());
        let set_ecotone = oracle.setEcotone().calldata().clone();
        as_depositor(
            &provider,
            &[
                (OP_L1_BLOCK, data.into()),
                (OP_GAS_PRICE_ORACLE, set_ecotone),
            ],
        )
        .await?;
        ensure!(
            oracle.isEcotone().call().await?,
            "GasPriceOracle not in Ecotone mode"
        );
        Ok(OpL1FeeOracle { oracle })
    }

    /// Activates Fjord (`setFjord`, as the depositor): the L1 fee then follows the FastLZ size.
    pub async fn activate_fjord(&self) -> anyhow::Result<()> {
        let set_fjord = self.oracle.setFjord().calldata().clone();
        as_depositor(self.oracle.provider(), &[(OP_GAS_PRICE_ORACLE, set_fjord)]).await?;
        ensure!(
            self.oracle.isFjord().call().await?,
            "GasPriceOracle not in Fjord mode"
        );
        Ok(())
    }

    /// The bound `GasPriceOracle`.
    pub fn oracle(&self) -> &GasPriceOracle::GasPriceOracleInstance<DynProvider> {
        &self.oracle
    }

    /// `getL1Fee(unsigned_tx)`, wei.
    pub async fn l1_fee(&self, unsigned_tx: Bytes) -> anyhow::Result<U256> {
        Ok(self.oracle.getL1Fee(unsigned_tx).call().await?)
    }
}

/// Sends each `(to, input)` from the impersonated depositor account and waits for it.
async fn as_depositor(provider: &DynProvider, calls: &[(Address, Bytes)]) -> anyhow::Result<()> {
    provider
        .raw_request::<_, ()>("anvil_impersonateAccount".into(), (OP_DEPOSITOR,))
        .await?;
    for (to, input) in calls {
        let tx = TransactionRequest::default()
            .from(OP_DEPOSITOR)
            .to(*to)
            .input(input.clone().into());
        confirm(provider.send_transaction(tx).await?).await?;
    }
    provider
        .raw_request::<_, ()>("anvil_stopImpersonatingAccount".into(), (OP_DEPOSITOR,))
        .await?;
    Ok(())
}

/// What the [`PriceServer`] answers.
#[derive(Debug, Clone)]
struct ServerState {
    /// `Some(amount)`: 200 with that amount; `None`: 500.
    amount: Option<String>,
    /// Wait before answering.
    delay: Duration,
}

/// A Coinbase-style spot price API on 127.0.0.1 (`GET /v2/prices/<pair>/spot` →
/// `{"data":{"amount":"<price>","base":"ETH","currency":"USD"}}`, anything else 404); stopped on
/// drop.
pub struct PriceServer {
    url: String,
    state: Arc<Mutex<ServerState>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PriceServer {
    /// Starts the server answering `amount` (plain decimal USD text) without delay.
    pub async fn start(amount: &str) -> anyhow::Result<PriceServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(ServerState {
            amount: Some(amount.to_owned()),
            delay: Duration::ZERO,
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let (st, count) = (state.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (st, count) = (st.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16_384 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let path = String::from_utf8_lossy(&buf)
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_owned();
                    let ServerState { amount, delay } = st.lock().expect("state").clone();
                    tokio::time::sleep(delay).await;
                    let pair = path
                        .strip_prefix("/v2/prices/")
                        .and_then(|p| p.strip_suffix("/spot"));
                    let (status, body) = match (pair, amount) {
                        (Some(pair), Some(amount)) => {
                            let (base, currency) = pair.split_once('-').unwrap_or((pair, ""));
                            let body = serde_json::json!({"data": {
                                "amount": amount, "base": base, "currency": currency}});
                            ("200 OK", body.to_string())
                        }
                        (Some(_), None) => ("500 Internal Server Error", "{}".to_owned()),
                        (None, _) => ("404 Not Found", "{}".to_owned()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(PriceServer {
            url,
            state,
            requests,
            task,
        })
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers `amount` from now on (`None`: HTTP 500).
    pub fn set_amount(&self, amount: Option<&str>) {
        self.state.lock().expect("state").amount = amount.map(str::to_owned);
    }

    /// Waits `delay` before every answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("state").delay = delay;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for PriceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
