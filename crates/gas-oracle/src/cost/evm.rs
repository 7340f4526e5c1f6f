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
        }
    }
}

/// An EIP-3009 token settled by the facilitator, with its EIP-712 domain (`extra.name`,
/// `extra.version` of x402 requirements; USDC on Base: "USD Coin" / "2").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EvmAsset {
    /// Token contract.
    pub address: Address,
    /// EIP-712 domain name.
    pub name: String,
    /// EIP-712 domain version.
    pub version: String,
}

impl EvmAsset {
    /// The token at `address` with EIP-712 domain `name` / `version`.
    pub fn new(address: Address, name: impl Into<String>, version: impl Into<String>) -> Self {
        EvmAsset {
            address,
            name: name.into(),
            version: version.into(),
        }
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
    gas: Mutex<HashMap<Address, (u64, Instant)>>,
}

impl EvmCostModel {
    /// A model for `chain` without L1 fee.
    pub fn new(chain: Arc<dyn EvmChain>, config: EvmCostConfig) -> Self {
        EvmCostModel {
            chain,
            config,
            l1_fee: None,
            gas: Mutex::new(HashMap::new()),
        }
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
    /// [`EvmCostConfig::gas_refresh`]. Gas units.
    pub async fn measure_gas(&self, asset: &EvmAsset) -> Result<u64, CostError> {
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
            .insert(asset.address, (gas, Instant::now()));
        Ok(gas)
    }

    /// Gas units for `asset`: the remembered measurement while younger than
    /// [`EvmCostConfig::gas_refresh`], else a new [`EvmCostModel::measure_gas`].
    pub async fn gas_units(&self, asset: &EvmAsset) -> Result<u64, CostError> {
        let cached = self
            .gas
            .lock()
            .expect("gas cache lock")
            .get(&asset.address)
            .filter(|(_, at)| at.elapsed() < self.config.gas_refresh)
            .map(|(gas, _)| *gas);
        match cached {
            Some(gas) => Ok(gas),
            None => self.measure_gas(asset).await,
        }
    }

    /// The fee per gas for the next block from `eth_feeHistory`.
    pub async fn fee_per_gas(&self) -> Result<FeePerGas, CostError> {
        let history = self
            .chain
            .fee_history(
                self.config.fee_history_blocks.max(1),
                &[f64::from(self.config.tip_percentile.min(100))],
            )
            .await
            .map_err(|source| CostError::Chain {
                what: "eth_feeHistory",
                source,
            })?;
        fee_per_gas_from_history(&history, self.config.headroom_bps, self.config.min_tip_wei)
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
