//! Cost of one EVM settlement (`transferWithAuthorization`, EIP-3009) in wei:
//!
//! `total_wei = gas_units × fee_per_gas_wei + l1_fee_wei`, where
//!
//! - `gas_units` = `eth_estimateGas` of a representative settlement call (below) +
//!   [`EvmCostConfig::extra_gas`], measured per asset and re-measured every
//!   [`EvmCostConfig::gas_refresh`];
//! - `fee_per_gas_wei` = `ceil(next_base_fee × (10000 + headroom_bps) / 10000) + tip` (EIP-1559),
//!   the next block's base fee and the tip both from `eth_feeHistory`;
//! - `l1_fee_wei` = `ceil(getL1Fee(tx) × (10000 + headroom_bps) / 10000)` on OP-stack chains
//!   when configured ([`OpStackL1Fee`]), else 0.
//!
//! The representative call is `transferWithAuthorization` (the `v,r,s` overload that settlement
//! sends for EOA payers) of **value 0** from a fresh random key to a fresh random address, signed
//! under the asset's EIP-712 domain, estimated from the facilitator's first signer. Value 0 works
//! on any FiatToken (0 ≤ a zero balance) and so needs no funded account. Its random fields (from,
//! to, nonce, r, s) are redrawn until none has a zero byte and `v` is 28 (the dearer branch of
//! FiatToken's signature check), and `validAfter`/`validBefore` are fixed all-non-zero values, so
//! the calldata and execution cost is the worst case for those fields and every measurement of
//! one chain state gives the same number. What a real payment costs beyond it is
//! covered by [`SETTLEMENT_GAS_ALLOWANCE`].
//!
//! Measured instead of assumed (what the facilitator runs, see `docs/gas-pricing.md`):
//!
//! - with [`EvmCostModel::with_gas_samples`], `gas_units` is a high percentile of the `gasUsed`
//!   of the asset's recent landed settlements ([`GasSamples`]) once there are enough of them,
//!   with no allowance: the receipts already say what a settlement costs;
//! - with [`EvmCostConfig::horizon`], the base-fee headroom is sized to the quote's horizon
//!   (how long a quote is served plus [`EvmCostConfig::landing_blocks`]) in blocks, from the
//!   base fee's observed movement over that many blocks in `eth_feeHistory`
//!   ([`observed_headroom_bps`]), never below one block's EIP-1559 maximum (12.5 %).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::rpc::types::{FeeHistory, TransactionRequest};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use x402_chain::EvmChain;
use x402_chain::eip712::{self, TransferWithAuthorization};
use x402_chain::eip3009::IEip3009Token;

use super::CostError;
use super::l1_fee::OpStackL1Fee;
use crate::convert::BPS;

/// Extra gas of a real transfer over the value-0 representative call, from its two balance
/// writes (EIP-2200 / EIP-2929 SSTORE costs, both slots already read, so warm): the payer's
/// balance non-zero → non-zero costs 2 900 instead of 100 (no-op write), the payee's balance
/// zero → non-zero 20 000 instead of 100. 2 800 + 19 900 = 22 700 gas units.
pub const STORAGE_WRITE_ALLOWANCE_GAS: u64 = 22_700;

/// Extra calldata gas of a real `value` over the representative's zero value: up to 32 bytes
/// that cost 16 instead of 4 gas each (EIP-2028): 32 × 12 = 384 gas units.
pub const CALLDATA_VALUE_ALLOWANCE_GAS: u64 = 384;

/// Default [`EvmCostConfig::extra_gas`]: [`STORAGE_WRITE_ALLOWANCE_GAS`] +
/// [`CALLDATA_VALUE_ALLOWANCE_GAS`] = 23 084 gas units, so that the quoted gas is at least the
/// real `gasUsed` of an EOA payment of any amount to any payee. Payments signed by ERC-1271
/// wallets run the wallet's `isValidSignature` as well: raise `extra_gas` if they matter.
pub const SETTLEMENT_GAS_ALLOWANCE: u64 =
    STORAGE_WRITE_ALLOWANCE_GAS + CALLDATA_VALUE_ALLOWANCE_GAS;

/// `validAfter` of the representative authorization: `0x01010101` (1970-07-14), four non-zero
/// bytes like a real `now − 600` (Unix seconds).
pub const REPRESENTATIVE_VALID_AFTER: u64 = 0x0101_0101;
/// `validBefore` of the representative authorization: `0xFFFFFFFFFF` (year 36812), five
/// non-zero bytes, more than a real `now + maxTimeoutSeconds` (Unix seconds).
pub const REPRESENTATIVE_VALID_BEFORE: u64 = 0xFF_FFFF_FFFF;

/// Tuning of [`EvmCostModel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmCostConfig {
    /// Headroom on the next block's base fee (and on the L1 fee), basis points. EIP-1559 lets the
    /// base fee rise by at most 12.5 % (1250 bps) per block; the default 2500 covers one full
    /// block of maximal rise and most of a second.
    pub headroom_bps: u32,
    /// Percentile (0–100) of each block's priority fees asked of `eth_feeHistory`; the tip is the
    /// highest of these over the window. Default 50.
    pub tip_percentile: u8,
    /// Blocks of `eth_feeHistory` for the tip (default 10, as alloy's EIP-1559 estimator that
    /// signs the settlement uses).
    pub fee_history_blocks: u64,
    /// Smallest tip, wei per gas (default 1, alloy's minimum priority fee).
    pub min_tip_wei: u128,
    /// Gas units added to the measured estimate (default [`SETTLEMENT_GAS_ALLOWANCE`]).
    pub extra_gas: u64,
    /// How long a gas measurement is reused before `eth_estimateGas` runs again (default 600 s).
    pub gas_refresh: Duration,
    /// The quote's horizon before landing: how long a quote is served (the cache's refresh
    /// interval). `Some`: the base-fee headroom is the observed movement over the horizon plus
    /// [`EvmCostConfig::landing_blocks`] ([`observed_headroom_bps`]) instead of the fixed
    /// `headroom_bps` (which still applies to the L1 fee). Default `None`.
    pub horizon: Option<Duration>,
    /// Blocks from a quote's use to its settlement's landing, added to the horizon (default 2).
    pub landing_blocks: u64,
    /// Percentile (0–100) of the base-fee ratios over the horizon taken as headroom (default 95).
    pub base_fee_percentile: u8,
}

impl Default for EvmCostConfig {
    fn default() -> Self {
        EvmCostConfig {
            headroom_bps: 2500,
            tip_percentile: 50,
            fee_history_blocks: 10,
            min_tip_wei: 1,
            extra_gas: SETTLEMENT_GAS_ALLOWANCE,
            gas_refresh: Duration::from_secs(600),
            horizon: None,
            landing_blocks: 2,
            base_fee_percentile: 95,
        }
    }
}

/// One block's EIP-1559 maximum base-fee rise, basis points (12.5 %).
pub const ONE_BLOCK_MAX_RISE_BPS: u32 = 1_250;

/// Most blocks of `eth_feeHistory` one call asks for (the common node limit).
pub const MAX_FEE_HISTORY_BLOCKS: u64 = 1_024;

/// The base-fee headroom for a horizon of `blocks`, basis points, from `base_fees` (oldest
/// first, as `eth_feeHistory` gives them): the `percentile` (nearest rank) of
/// `base_fee[i + blocks] / base_fee[i] − 1` over every window of the history, never below
/// [`ONE_BLOCK_MAX_RISE_BPS`]. With too short a history for one window: the EIP-1559 maximum
/// over the horizon (`1.125^blocks − 1`).
pub fn observed_headroom_bps(base_fees: &[u128], blocks: u64, percentile: u8) -> u32 {
    let h = blocks.max(1) as usize;
    let mut rises: Vec<u64> = base_fees
        .windows(h + 1)
        .filter(|w| w[0] > 0)
        .map(|w| {
            let ratio_bps = U256::from(w[h]) * U256::from(BPS) / U256::from(w[0]);
            u64::try_from(ratio_bps)
                .unwrap_or(u64::MAX)
                .saturating_sub(u64::from(BPS))
        })
        .collect();
    if rises.is_empty() {
        let mut max = u128::from(BPS);
        for _ in 0..h.min(64) {
            max = max * u128::from(BPS + ONE_BLOCK_MAX_RISE_BPS) / u128::from(BPS);
        }
        return u32::try_from(max - u128::from(BPS))
            .unwrap_or(u32::MAX)
            .max(ONE_BLOCK_MAX_RISE_BPS);
    }
    rises.sort_unstable();
    let rank = (usize::from(percentile.min(100)) * rises.len()).div_ceil(100);
    let at = rises[rank.saturating_sub(1).min(rises.len() - 1)];
    u32::try_from(at)
        .unwrap_or(u32::MAX)
        .max(ONE_BLOCK_MAX_RISE_BPS)
}

/// Which settlement call a quote prices (issue 17 item 5): their gas differs, so each has its
/// own samples and quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SettlementKind {
    /// EIP-3009 `transferWithAuthorization` on the token (`exact`).
    #[default]
    Eip3009,
    /// `x402ExactPermit2Proxy.settle` (`exact` over Permit2).
    Permit2Exact,
    /// `x402UptoPermit2Proxy.settle` (`upto`).
    Permit2Upto,
}

impl SettlementKind {
    /// Gas units a Permit2 settlement is priced at until [`GasSamples`] has enough landed
    /// settlements of the kind (its call cannot be estimated without a funded, approved payer
    /// and a signature): 1.5 x the `gasUsed` measured on anvil with Permit2's canonical
    /// bytecode and this project's proxies (exact 99,666, upto 100,812: a plain ERC-20 to a
    /// payee without a balance), an upper bound until the receipts say.
    pub const PERMIT2_INITIAL_GAS_UNITS: u64 = 150_000;

    /// The name quotes and records carry: `""` for EIP-3009 (the quotes of the releases
    /// before Permit2), `"permit2"`, `"upto"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SettlementKind::Eip3009 => "",
            SettlementKind::Permit2Exact => "permit2",
            SettlementKind::Permit2Upto => "upto",
        }
    }

    /// The kind named `s` ([`SettlementKind::as_str`]); anything else is EIP-3009.
    pub fn from_name(s: &str) -> Self {
        match s {
            "permit2" => SettlementKind::Permit2Exact,
            "upto" => SettlementKind::Permit2Upto,
            _ => SettlementKind::Eip3009,
        }
    }
}

/// The `gasUsed` of recent landed settlements, per asset and [`SettlementKind`]: what
/// [`EvmCostModel`] prices gas units from once it has enough
/// ([`EvmCostModel::with_gas_samples`]). Shared by the settlement side, which records every
/// landing, and the quoters.
#[derive(Debug)]
pub struct GasSamples {
    samples: Mutex<HashMap<(Address, SettlementKind), std::collections::VecDeque<u64>>>,
    capacity: usize,
    min_samples: usize,
    percentile: u8,
}

impl Default for GasSamples {
    /// The last 200 settlements per asset; the 95th percentile once there are 5.
    fn default() -> Self {
        GasSamples::new(200, 5, 95)
    }
}

impl GasSamples {
    /// Keeps the last `capacity` samples per asset; [`GasSamples::percentile`] answers once
    /// there are `min_samples`, with the `percentile` (nearest rank).
    pub fn new(capacity: usize, min_samples: usize, percentile: u8) -> Self {
        GasSamples {
            samples: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            min_samples: min_samples.max(1),
            percentile: percentile.min(100),
        }
    }

    /// Records a landed settlement of `asset` of `kind` that used `gas_used` gas units.
    pub fn record(&self, asset: Address, kind: SettlementKind, gas_used: u64) {
        let mut all = self.samples.lock().expect("gas samples lock");
        let q = all.entry((asset, kind)).or_default();
        q.push_back(gas_used);
        while q.len() > self.capacity {
            q.pop_front();
        }
    }

    /// The configured percentile of the recent `gasUsed` of `asset`'s settlements of `kind`,
    /// once there are enough samples.
    pub fn percentile(&self, asset: Address, kind: SettlementKind) -> Option<u64> {
        let all = self.samples.lock().expect("gas samples lock");
        let q = all
            .get(&(asset, kind))
            .filter(|q| q.len() >= self.min_samples)?;
        let mut sorted: Vec<u64> = q.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (usize::from(self.percentile) * sorted.len()).div_ceil(100);
        Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
    }
}

/// A token settled by the facilitator and the settlement call quoted: an EIP-3009 token with its
/// EIP-712 domain (`extra.name`, `extra.version` of x402 requirements; USDC on Base: "USD Coin"
/// / "2"), or any ERC-20 through a Permit2 proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EvmAsset {
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain name (EIP-3009).
    pub name: String,
    /// EIP-712 domain version (EIP-3009).
    pub version: String,
    /// The settlement call quoted (default EIP-3009).
    pub kind: SettlementKind,
}

impl EvmAsset {
    /// The token at `address` with EIP-712 domain `name` / `version`.
    pub fn new(address: Address, name: impl Into<String>, version: impl Into<String>) -> Self {
        EvmAsset {
            address,
            name: name.into(),
            version: version.into(),
            kind: SettlementKind::Eip3009,
        }
    }

    /// The same token, quoting the settlement call `kind`.
    pub fn with_kind(mut self, kind: SettlementKind) -> Self {
        self.kind = kind;
        self
    }
}

/// Fee per gas for the next block (EIP-1559), wei per gas unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeePerGas {
    /// The next block's base fee (last entry of `eth_feeHistory.baseFeePerGas`), wei.
    pub next_base_fee_wei: u128,
    /// The tip: highest `tip_percentile` reward over the window, at least `min_tip_wei`, wei.
    pub tip_wei: u128,
    /// `ceil(next_base_fee × (10000 + headroom_bps) / 10000) + tip`, wei.
    pub fee_per_gas_wei: u128,
}

/// The cost of one settlement, in gas units and wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvmGasCost {
    /// Gas units: measured estimate + allowance.
    pub gas_units: u64,
    /// Fee per gas, wei (see [`FeePerGas`]).
    pub fee_per_gas_wei: u128,
    /// The next block's base fee the fee was computed from, wei.
    pub next_base_fee_wei: u128,
    /// The tip included in `fee_per_gas_wei`, wei.
    pub tip_wei: u128,
    /// L1 data fee with headroom (OP-stack), wei; 0 when not configured.
    pub l1_fee_wei: u128,
    /// `gas_units × fee_per_gas_wei + l1_fee_wei`, wei.
    pub total_wei: u128,
}

/// `ceil(x × (10000 + bps) / 10000)`, or `None` if it does not fit.
pub(crate) fn with_headroom(x: u128, bps: u32) -> Option<u128> {
    let num = U256::from(x) * U256::from(u64::from(BPS) + u64::from(bps));
    let (q, r) = num.div_rem(U256::from(BPS));
    let q = if r.is_zero() { q } else { q + U256::from(1u8) };
    u128::try_from(q).ok()
}

/// The fee per gas from a fee history (pure; see [`FeePerGas`]). The history must have been
/// asked with one reward percentile.
pub fn fee_per_gas_from_history(
    history: &FeeHistory,
    headroom_bps: u32,
    min_tip_wei: u128,
) -> Result<FeePerGas, CostError> {
    let next_base_fee_wei = history
        .next_block_base_fee()
        .filter(|fee| *fee > 0)
        .ok_or_else(|| {
            CostError::Unsupported("eth_feeHistory has no base fee (not an EIP-1559 chain)".into())
        })?;
    let highest_reward = history
        .reward
        .iter()
        .flatten()
        .filter_map(|block| block.first().copied())
        .max()
        .unwrap_or(0);
    let tip_wei = highest_reward.max(min_tip_wei);
    let fee_per_gas_wei = with_headroom(next_base_fee_wei, headroom_bps)
        .and_then(|base| base.checked_add(tip_wei))
        .ok_or_else(|| CostError::Overflow(format!("base fee {next_base_fee_wei} wei")))?;
    Ok(FeePerGas {
        next_base_fee_wei,
        tip_wei,
        fee_per_gas_wei,
    })
}

/// Whether every byte is non-zero.
fn no_zero_byte(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b != 0)
}

/// A value-0 `transferWithAuthorization` (the `v,r,s` overload) from a fresh random key to a fresh
/// random address, signed under `asset`'s domain on `chain_id`: its calldata. Random fields are
/// redrawn until none has a zero byte and the signature's `v` is 28 (see the module
/// documentation).
pub fn representative_calldata(chain_id: u64, asset: &EvmAsset) -> Bytes {
    let domain = eip712::domain(&asset.name, &asset.version, chain_id, asset.address);
    loop {
        let payer = PrivateKeySigner::random();
        let payee = PrivateKeySigner::random().address();
        let nonce = keccak256(payer.to_bytes());
        let authorization = TransferWithAuthorization {
            from: payer.address(),
            to: payee,
            value: U256::ZERO,
            validAfter: U256::from(REPRESENTATIVE_VALID_AFTER),
            validBefore: U256::from(REPRESENTATIVE_VALID_BEFORE),
            nonce,
        };
        let Ok(sig) = payer.sign_hash_sync(&eip712::digest(&domain, &authorization)) else {
            continue;
        };
        let (r, s) = (B256::from(sig.r()), B256::from(sig.s()));
        // v = 28 costs more than 27 in FiatToken's `ECRecover.recover` (`v != 27 && v != 28`
        // short-circuits on 27): take the dearer one.
        let from = payer.address();
        let fields = [
            from.as_slice(),
            payee.as_slice(),
            &nonce[..],
            &r[..],
            &s[..],
        ];
        if sig.v() && fields.iter().all(|field| no_zero_byte(field)) {
            return IEip3009Token::transferWithAuthorization_0Call {
                from: authorization.from,
                to: authorization.to,
                value: authorization.value,
                validAfter: authorization.validAfter,
                validBefore: authorization.validBefore,
                nonce,
                v: 27 + u8::from(sig.v()),
                r,
                s,
            }
            .abi_encode()
            .into();
        }
    }
}

/// Deterministic incompressible non-zero bytes: `keccak256("x402-gas-oracle/l1/<i>")` with every
/// zero byte replaced by 0x01.
fn pattern(i: u8) -> B256 {
    let mut word = keccak256(format!("x402-gas-oracle/l1/{i}"));
    for b in word.iter_mut() {
        if *b == 0 {
            *b = 1;
        }
    }
    word
}

/// The unsigned EIP-1559 transaction (EIP-2718 encoding, as `getL1Fee` takes it) whose L1 fee
/// is quoted for `asset`: a `transferWithAuthorization` with every field at a worst-case width
/// and without zero bytes (addresses, value, nonce, r, s from a fixed incompressible pattern;
/// times 5 bytes; tx nonce 4 bytes, gas limit 3 bytes, fees 6 bytes), so that the real
/// settlement's unsigned encoding is never larger nor less compressible. Deterministic.
pub fn l1_fee_data(chain_id: u64, asset: Address) -> Bytes {
    let word = |i| pattern(i);
    let calldata = IEip3009Token::transferWithAuthorization_0Call {
        from: Address::from_slice(&word(0)[12..]),
        to: Address::from_slice(&word(1)[12..]),
        value: U256::from_be_bytes(word(2).0),
        validAfter: U256::from(REPRESENTATIVE_VALID_BEFORE),
        validBefore: U256::from(REPRESENTATIVE_VALID_BEFORE),
        nonce: word(3),
        v: 28,
        r: word(4),
        s: word(5),
    }
    .abi_encode();
    let tx = TxEip1559 {
        chain_id,
        nonce: 0xFFFF_FFFF,
        gas_limit: 0xFF_FFFF,
        max_fee_per_gas: 0xFFFF_FFFF_FFFF,
        max_priority_fee_per_gas: 0xFFFF_FFFF_FFFF,
        to: TxKind::Call(asset),
        value: U256::ZERO,
        access_list: Default::default(),
        input: calldata.into(),
    };
    tx.encoded_for_signing().into()
}

/// Prices one settlement on one EVM chain (see the module documentation).
pub struct EvmCostModel {
    chain: Arc<dyn EvmChain>,
    config: EvmCostConfig,
    l1_fee: Option<OpStackL1Fee>,
    /// asset → (measured gas units incl. allowance, when measured).
    gas: Mutex<HashMap<(Address, SettlementKind), (u64, Instant)>>,
    /// Recent landed settlements' gas, when known.
    samples: Option<Arc<GasSamples>>,
    /// The first block number seen and when, to learn the block time.
    first_block: Mutex<Option<(Instant, u64)>>,
}

/// Block time assumed until one is observed (2 s: Base, OP-stack; a slower chain gets more
/// headroom than it needs until then, never less).
const ASSUMED_BLOCK_TIME: Duration = Duration::from_secs(2);

impl EvmCostModel {
    /// A model for `chain` without L1 fee.
    pub fn new(chain: Arc<dyn EvmChain>, config: EvmCostConfig) -> Self {
        EvmCostModel {
            chain,
            config,
            l1_fee: None,
            gas: Mutex::new(HashMap::new()),
            samples: None,
            first_block: Mutex::new(None),
        }
    }

    /// Prices gas units from the recent landed settlements in `samples` once there are enough
    /// (before: the measured estimate plus allowance).
    pub fn with_gas_samples(mut self, samples: Arc<GasSamples>) -> Self {
        self.samples = Some(samples);
        self
    }

    /// The horizon in blocks for a history whose newest block is `latest`: the configured
    /// horizon over the observed block time (assumed 2 s until observed over ≥ 10 s), rounded
    /// up, plus the landing blocks.
    fn horizon_blocks(&self, horizon: Duration, latest: u64) -> u64 {
        let mut first = self.first_block.lock().expect("block time lock");
        let (since, block0) = *first.get_or_insert((Instant::now(), latest));
        let elapsed = since.elapsed();
        let block_time = if elapsed >= Duration::from_secs(10) && latest > block0 {
            elapsed / u32::try_from(latest - block0).unwrap_or(u32::MAX)
        } else {
            ASSUMED_BLOCK_TIME
        };
        let blocks = horizon.as_millis().div_ceil(block_time.as_millis().max(1)) as u64;
        blocks.max(1).saturating_add(self.config.landing_blocks)
    }

    /// Adds the OP-stack L1 data fee read from `l1_fee`'s oracle.
    pub fn with_l1_fee(mut self, l1_fee: OpStackL1Fee) -> Self {
        self.l1_fee = Some(l1_fee);
        self
    }

    /// The chain priced.
    pub fn chain(&self) -> &Arc<dyn EvmChain> {
        &self.chain
    }

    /// The configuration.
    pub fn config(&self) -> &EvmCostConfig {
        &self.config
    }

    /// Measures now: `eth_estimateGas` of a fresh [`representative_calldata`] to the asset, from
    /// the chain's first signer, plus [`EvmCostConfig::extra_gas`]; remembers the result for
    /// [`EvmCostConfig::gas_refresh`]. Gas units. A Permit2 kind answers
    /// [`SettlementKind::PERMIT2_INITIAL_GAS_UNITS`] (no estimate possible; its margin already
    /// covers what the extra gas stands for).
    pub async fn measure_gas(&self, asset: &EvmAsset) -> Result<u64, CostError> {
        if asset.kind != SettlementKind::Eip3009 {
            // A Permit2 settlement cannot be estimated without a funded, approved payer and a
            // signature: its upper bound until samples say.
            return Ok(SettlementKind::PERMIT2_INITIAL_GAS_UNITS);
        }
        let mut tx = TransactionRequest::default()
            .to(asset.address)
            .input(representative_calldata(self.chain.chain_id(), asset).into());
        if let Some(signer) = self.chain.signers().first() {
            tx = tx.from(*signer);
        }
        let estimate = self
            .chain
            .estimate_gas(&tx)
            .await
            .map_err(|source| CostError::Chain {
                what: "eth_estimateGas(transferWithAuthorization)",
                source,
            })?;
        let gas = estimate.saturating_add(self.config.extra_gas);
        self.gas
            .lock()
            .expect("gas cache lock")
            .insert((asset.address, asset.kind), (gas, Instant::now()));
        Ok(gas)
    }

    /// Gas units for `asset`: the percentile of recent settlements' `gasUsed` when known
    /// ([`EvmCostModel::with_gas_samples`]), else the remembered measurement while younger than
    /// [`EvmCostConfig::gas_refresh`], else a new [`EvmCostModel::measure_gas`].
    pub async fn gas_units(&self, asset: &EvmAsset) -> Result<u64, CostError> {
        if let Some(gas) = self
            .samples
            .as_ref()
            .and_then(|s| s.percentile(asset.address, asset.kind))
        {
            return Ok(gas);
        }
        let cached = self
            .gas
            .lock()
            .expect("gas cache lock")
            .get(&(asset.address, asset.kind))
            .filter(|(_, at)| at.elapsed() < self.config.gas_refresh)
            .map(|(gas, _)| *gas);
        match cached {
            Some(gas) => Ok(gas),
            None => self.measure_gas(asset).await,
        }
    }

    /// The fee per gas for the next block from `eth_feeHistory`: with a horizon, over enough
    /// blocks to observe the base fee's movement over it (the tip still from the last
    /// `fee_history_blocks`).
    pub async fn fee_per_gas(&self) -> Result<FeePerGas, CostError> {
        let tip_blocks = self.config.fee_history_blocks.max(1);
        let Some(horizon) = self.config.horizon else {
            let history = self.history(tip_blocks).await?;
            return fee_per_gas_from_history(
                &history,
                self.config.headroom_bps,
                self.config.min_tip_wei,
            );
        };
        // The horizon in blocks needs the block number: a first look.
        let probe = self.history(tip_blocks).await?;
        let latest = probe
            .oldest_block
            .saturating_add(probe.base_fee_per_gas.len().saturating_sub(2) as u64);
        let blocks = self.horizon_blocks(horizon, latest);
        let wanted = (blocks * 8).max(tip_blocks).min(MAX_FEE_HISTORY_BLOCKS);
        let mut history = if wanted > tip_blocks {
            self.history(wanted).await?
        } else {
            probe
        };
        let headroom = observed_headroom_bps(
            &history.base_fee_per_gas,
            blocks,
            self.config.base_fee_percentile,
        );
        if let Some(rewards) = history.reward.as_mut() {
            let keep = rewards.len().saturating_sub(tip_blocks as usize);
            rewards.drain(..keep);
        }
        fee_per_gas_from_history(&history, headroom, self.config.min_tip_wei)
    }

    async fn history(&self, blocks: u64) -> Result<FeeHistory, CostError> {
        self.chain
            .fee_history(blocks, &[f64::from(self.config.tip_percentile.min(100))])
            .await
            .map_err(|source| CostError::Chain {
                what: "eth_feeHistory",
                source,
            })
    }

    /// The L1 data fee with headroom for `asset`'s settlement, wei (0 without an L1 fee source).
    pub async fn l1_fee_wei(&self, asset: Address) -> Result<u128, CostError> {
        let Some(l1) = &self.l1_fee else {
            return Ok(0);
        };
        let data = l1_fee_data(self.chain.chain_id(), asset);
        let raw = l1.l1_fee_wei(self.chain.as_ref(), &data).await?;
        with_headroom(raw, self.config.headroom_bps)
            .ok_or_else(|| CostError::Overflow(format!("L1 fee {raw} wei")))
    }

    /// The cost of settling one payment in `asset` now.
    pub async fn cost(&self, asset: &EvmAsset) -> Result<EvmGasCost, CostError> {
        let gas_units = self.gas_units(asset).await?;
        let fee = self.fee_per_gas().await?;
        let l1_fee_wei = self.l1_fee_wei(asset.address).await?;
        let total_wei = u128::from(gas_units)
            .checked_mul(fee.fee_per_gas_wei)
            .and_then(|l2| l2.checked_add(l1_fee_wei))
            .ok_or_else(|| {
                CostError::Overflow(format!(
                    "{gas_units} gas × {} wei + {l1_fee_wei} wei",
                    fee.fee_per_gas_wei
                ))
            })?;
        Ok(EvmGasCost {
            gas_units,
            fee_per_gas_wei: fee.fee_per_gas_wei,
            next_base_fee_wei: fee.next_base_fee_wei,
            tip_wei: fee.tip_wei,
            l1_fee_wei,
            total_wei,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    fn history(base: Vec<u128>, rewards: Option<Vec<Vec<u128>>>) -> FeeHistory {
        FeeHistory {
            base_fee_per_gas: base,
            reward: rewards,
            ..Default::default()
        }
    }

    #[test]
    fn fee_per_gas_is_next_base_with_headroom_plus_highest_tip() {
        // next base fee 7 gwei (last entry) × 1.25 = 8.75 gwei, + highest reward 3 gwei.
        let h = history(
            vec![8_000_000_000, 7_000_000_000],
            Some(vec![vec![2_000_000_000], vec![3_000_000_000]]),
        );
        let f = fee_per_gas_from_history(&h, 2500, 1).unwrap();
        assert_eq!(f.next_base_fee_wei, 7_000_000_000);
        assert_eq!(f.tip_wei, 3_000_000_000);
        assert_eq!(f.fee_per_gas_wei, 11_750_000_000);
        // Rounded up: 7 wei × 1.25 = 8.75 → 9, + min tip 1 (no rewards).
        let f = fee_per_gas_from_history(&history(vec![7], None), 2500, 1).unwrap();
        assert_eq!(f.fee_per_gas_wei, 10);
        let f = fee_per_gas_from_history(&history(vec![7], Some(vec![vec![0]])), 0, 5).unwrap();
        assert_eq!((f.tip_wei, f.fee_per_gas_wei), (5, 12));
        // No base fee: not EIP-1559.
        assert!(fee_per_gas_from_history(&history(vec![], None), 0, 1).is_err());
        assert!(fee_per_gas_from_history(&history(vec![0], None), 0, 1).is_err());
        assert!(fee_per_gas_from_history(&history(vec![u128::MAX], None), 1, 1).is_err());
    }

    #[test]
    fn headroom_is_the_observed_rise_over_the_horizon_never_below_one_block() {
        // Steady: the floor.
        assert_eq!(
            observed_headroom_bps(&[100; 50], 5, 95),
            ONE_BLOCK_MAX_RISE_BPS
        );
        // Falling: the floor.
        let falling: Vec<u128> = (0..50).map(|i| 10_000 - i * 100).collect();
        assert_eq!(
            observed_headroom_bps(&falling, 3, 95),
            ONE_BLOCK_MAX_RISE_BPS
        );
        // Rising 12.5 % a block: over 2 blocks 26.5625 %, rounded down.
        let mut rising = vec![1_000_000_000u128];
        for _ in 0..30 {
            let last = *rising.last().unwrap();
            rising.push(last * 9 / 8);
        }
        assert_eq!(observed_headroom_bps(&rising, 2, 95), 2_656);
        assert_eq!(observed_headroom_bps(&rising, 1, 50), 1_250);
        // One jump of 50 % in a steady history: the 95th percentile ignores a rare one, the
        // maximum does not.
        let mut jump = vec![100u128; 100];
        jump[60..].iter_mut().for_each(|b| *b = 150);
        assert_eq!(observed_headroom_bps(&jump, 1, 95), ONE_BLOCK_MAX_RISE_BPS);
        assert_eq!(observed_headroom_bps(&jump, 1, 100), 5_000);
        // Too short a history: the EIP-1559 maximum over the horizon.
        assert_eq!(observed_headroom_bps(&[100, 100], 2, 95), 2_656);
    }

    #[test]
    fn gas_samples_answer_a_high_percentile_once_there_are_enough() {
        use SettlementKind::{Eip3009, Permit2Exact, Permit2Upto};
        let a = address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        let s = GasSamples::new(20, 5, 95);
        for g in [60_000, 61_000, 62_000, 63_000] {
            s.record(a, Eip3009, g);
        }
        assert_eq!(s.percentile(a, Eip3009), None, "4 < 5 samples");
        s.record(a, Eip3009, 80_000);
        assert_eq!(s.percentile(a, Eip3009), Some(80_000));
        for _ in 0..20 {
            s.record(a, Eip3009, 61_000);
        }
        assert_eq!(
            s.percentile(a, Eip3009),
            Some(61_000),
            "only the last 20 are kept"
        );
        assert_eq!(s.percentile(Address::ZERO, Eip3009), None);
        // Each settlement call has its own samples: Permit2's dearer gas never mixes in.
        assert_eq!(s.percentile(a, Permit2Exact), None);
        for _ in 0..5 {
            s.record(a, Permit2Upto, 100_812);
        }
        assert_eq!(s.percentile(a, Permit2Upto), Some(100_812));
        assert_eq!(s.percentile(a, Eip3009), Some(61_000));
        assert_eq!(s.percentile(a, Permit2Exact), None);
    }

    #[test]
    fn settlement_kinds_round_trip_their_names() {
        for k in [
            SettlementKind::Eip3009,
            SettlementKind::Permit2Exact,
            SettlementKind::Permit2Upto,
        ] {
            assert_eq!(SettlementKind::from_name(k.as_str()), k);
        }
    }

    #[test]
    fn allowance_constants_add_up() {
        assert_eq!(SETTLEMENT_GAS_ALLOWANCE, 23_084);
        assert_eq!(EvmCostConfig::default().extra_gas, 23_084);
    }

    #[test]
    fn representative_call_has_fixed_shape_and_a_valid_signature() {
        let usdc = EvmAsset::new(
            address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            "USD Coin",
            "2",
        );
        let a = representative_calldata(8453, &usdc);
        let b = representative_calldata(8453, &usdc);
        assert_ne!(a, b, "fresh random fields every time");
        let zeros = |d: &Bytes| d.iter().filter(|x| **x == 0).count();
        assert_eq!(
            zeros(&a),
            zeros(&b),
            "same zero-byte count: same calldata gas"
        );
        let call = IEip3009Token::transferWithAuthorization_0Call::abi_decode(&a).unwrap();
        assert_eq!(call.value, U256::ZERO);
        assert_eq!(call.v, 28);
        let auth = TransferWithAuthorization {
            from: call.from,
            to: call.to,
            value: call.value,
            validAfter: call.validAfter,
            validBefore: call.validBefore,
            nonce: call.nonce,
        };
        let digest = eip712::digest(&eip712::domain("USD Coin", "2", 8453, usdc.address), &auth);
        let sig =
            alloy::primitives::Signature::from_scalars_and_parity(call.r, call.s, call.v == 28);
        assert_eq!(
            sig.recover_address_from_prehash(&digest).unwrap(),
            call.from
        );
    }

    #[test]
    fn l1_fee_data_is_deterministic_and_has_no_zero_in_variable_fields() {
        let asset = address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        let d = l1_fee_data(8453, asset);
        assert_eq!(d, l1_fee_data(8453, asset));
        assert_eq!(d[0], 2, "EIP-1559 type byte");
        assert_ne!(d, l1_fee_data(10, asset));
    }
}
