//! Cost of one Solana settlement (SPL `TransferChecked`, the facilitator pays the fee) in
//! lamports:
//!
//! `total_lamports = signatures × 5000 + ceil(compute_unit_price × compute_unit_limit / 10^6)
//! + rent_lamports`, where
//!
//! - `signatures` = [`SvmCostParams::signatures`] (the facilitator's fee payer and the payer),
//!   each [`LAMPORTS_PER_SIGNATURE`]; the base fee and the prioritization fee together are
//!   [`transaction_fee_lamports`];
//! - `compute_unit_limit` = [`SvmCostParams::compute_unit_limit`], what x402 clients set;
//! - `compute_unit_price` (micro-lamports per compute unit) = the
//!   [`SvmCostParams::priority_fee_percentile`] of `getRecentPrioritizationFees` for transactions
//!   writing the mint, with [`SvmCostParams::headroom_bps`], at least
//!   [`SvmCostParams::min_compute_unit_price`] and at most
//!   [`SvmCostParams::max_compute_unit_price`]: the verifier refuses a client price above that
//!   cap, so the cap bounds what a settlement can cost;
//! - `rent_lamports` = `getMinimumBalanceForRentExemption` of a token account (165 bytes under
//!   SPL Token, 170 under Token-2022: account type byte + `ImmutableOwner`) when the payee's
//!   associated token account is missing **and** the operator lets the facilitator create it in
//!   the settlement (x402-reference §6), else 0. The minimum is read once per size and cached:
//!   it only changes with a cluster's rent parameters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use solana_address::Address;
use x402_chain::SvmChain;
use x402_chain::spl::{
    LAMPORTS_PER_SIGNATURE, TOKEN_PROGRAM, associated_token_account_len, associated_token_address,
    transaction_fee_lamports,
};

use super::CostError;
use super::evm::with_headroom;

pub use x402_chain::spl::{TOKEN_2022_ACCOUNT_LEN, TOKEN_ACCOUNT_LEN};

/// Tuning of [`SvmCostModel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmCostParams {
    /// Signatures paid per settlement (default 2: the facilitator's fee payer and the payer).
    pub signatures: u64,
    /// Compute unit limit of a settlement (default 20 000, what `@x402/svm` clients set).
    pub compute_unit_limit: u32,
    /// Percentile (0–100, nearest rank) of the recent prioritization fees taken as the compute
    /// unit price (default 75).
    pub priority_fee_percentile: u8,
    /// Highest compute unit price quoted, micro-lamports per CU (default 5 000 000, the
    /// verifier's default cap on a client's `SetComputeUnitPrice`).
    pub max_compute_unit_price: u64,
    /// Lowest compute unit price quoted, micro-lamports per CU (default 1, the price
    /// `@x402/svm` clients set).
    pub min_compute_unit_price: u64,
    /// Headroom on the percentile price, basis points (default 2 500 = +25 %).
    pub headroom_bps: u32,
}

impl Default for SvmCostParams {
    fn default() -> Self {
        SvmCostParams {
            signatures: 2,
            compute_unit_limit: 20_000,
            priority_fee_percentile: 75,
            max_compute_unit_price: 5_000_000,
            min_compute_unit_price: 1,
            headroom_bps: 2_500,
        }
    }
}

/// An SPL token settled on Solana: its mint and the token program that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SvmAsset {
    /// The mint (the x402 `asset`).
    pub mint: Address,
    /// SPL Token or Token-2022.
    pub token_program: Address,
}

impl SvmAsset {
    /// The mint `mint` owned by `token_program`.
    pub fn new(mint: Address, token_program: Address) -> Self {
        SvmAsset {
            mint,
            token_program,
        }
    }

    /// A mint of the SPL Token program (USDC).
    pub fn spl_token(mint: Address) -> Self {
        SvmAsset::new(mint, TOKEN_PROGRAM)
    }

    /// Size of an associated token account of this mint, bytes: [`TOKEN_ACCOUNT_LEN`] or
    /// [`TOKEN_2022_ACCOUNT_LEN`]; an error for another program.
    pub fn token_account_len(&self) -> Result<usize, CostError> {
        associated_token_account_len(&self.token_program).ok_or_else(|| {
            CostError::Unsupported(format!(
                "{} is neither SPL Token nor Token-2022",
                self.token_program
            ))
        })
    }

    /// The associated token account of `owner` for this mint.
    pub fn associated_token_address(&self, owner: &Address) -> Address {
        associated_token_address(owner, &self.mint, &self.token_program)
    }
}

/// The cost of one Solana settlement (what a quote shows). JSON: camelCase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SvmCost {
    /// Signatures paid.
    pub signatures: u64,
    /// Lamports per signature ([`LAMPORTS_PER_SIGNATURE`]).
    pub lamports_per_signature: u64,
    /// Compute unit limit.
    pub compute_unit_limit: u32,
    /// Compute unit price, micro-lamports per compute unit.
    pub compute_unit_price_micro_lamports: u64,
    /// `ceil(compute_unit_price × compute_unit_limit / 10^6)`, lamports.
    pub priority_fee_lamports: u64,
    /// Rent of the payee's token account when the settlement creates it, else 0; lamports.
    pub rent_lamports: u64,
    /// `signatures × lamports_per_signature + priority_fee_lamports + rent_lamports`.
    pub total_lamports: u64,
}

impl SvmCost {
    /// The cost at `compute_unit_price` (micro-lamports per CU) with `rent_lamports` of rent,
    /// from [`transaction_fee_lamports`].
    pub fn compute(
        signatures: u64,
        compute_unit_limit: u32,
        compute_unit_price_micro_lamports: u64,
        rent_lamports: u64,
    ) -> Result<SvmCost, CostError> {
        let overflow = || {
            CostError::Overflow(format!(
                "{signatures} signatures + {compute_unit_limit} CU × \
                 {compute_unit_price_micro_lamports} µlamports + {rent_lamports} lamports"
            ))
        };
        let base = signatures
            .checked_mul(LAMPORTS_PER_SIGNATURE)
            .ok_or_else(overflow)?;
        let fee = transaction_fee_lamports(
            signatures,
            compute_unit_limit,
            compute_unit_price_micro_lamports,
        );
        if fee == u64::MAX {
            return Err(overflow()); // saturated
        }
        let total_lamports = fee.checked_add(rent_lamports).ok_or_else(overflow)?;
        Ok(SvmCost {
            signatures,
            lamports_per_signature: LAMPORTS_PER_SIGNATURE,
            compute_unit_limit,
            compute_unit_price_micro_lamports,
            priority_fee_lamports: fee - base,
            rent_lamports,
            total_lamports,
        })
    }

    /// The transaction fee alone (base fee + prioritization fee, no rent), lamports.
    pub fn fee_lamports(&self) -> u64 {
        self.total_lamports - self.rent_lamports
    }

    /// The same fee with `rent_lamports` of rent instead of the current rent.
    pub fn with_rent(&self, rent_lamports: u64) -> Result<SvmCost, CostError> {
        let total_lamports = self
            .fee_lamports()
            .checked_add(rent_lamports)
            .ok_or_else(|| CostError::Overflow(format!("rent {rent_lamports} lamports")))?;
        Ok(SvmCost {
            rent_lamports,
            total_lamports,
            ..*self
        })
    }
}

/// The `percentile` (0–100, nearest rank) of `fees`: the smallest fee such that at least
/// `percentile` % of the fees are at most it (0 → the lowest, 100 → the highest). 0 when empty.
pub fn fee_percentile(fees: &[u64], percentile: u8) -> u64 {
    if fees.is_empty() {
        return 0;
    }
    let mut sorted = fees.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    // Nearest rank: ceil(p × n / 100), 1-based, at least 1.
    let rank = (usize::from(percentile.min(100)) * n).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The compute unit price quoted from recent prioritization fees (pure): the percentile with
/// headroom (rounded up), at least the minimum, at most the cap (the cap wins if the two cross).
pub fn compute_unit_price_from_fees(fees: &[u64], params: &SvmCostParams) -> u64 {
    let percentile = fee_percentile(fees, params.priority_fee_percentile);
    let with_headroom = with_headroom(u128::from(percentile), params.headroom_bps)
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(u64::MAX);
    with_headroom
        .max(params.min_compute_unit_price)
        .min(params.max_compute_unit_price)
}

/// Prices one settlement on one Solana cluster (see the module documentation).
pub struct SvmCostModel {
    chain: Arc<dyn SvmChain>,
    params: SvmCostParams,
    /// account size → rent-exemption minimum, lamports.
    rent: Mutex<HashMap<usize, u64>>,
}

impl SvmCostModel {
    /// A model for `chain` with `params`.
    pub fn new(chain: Arc<dyn SvmChain>, params: SvmCostParams) -> Self {
        SvmCostModel {
            chain,
            params,
            rent: Mutex::new(HashMap::new()),
        }
    }

    /// The chain priced.
    pub fn chain(&self) -> &Arc<dyn SvmChain> {
        &self.chain
    }

    /// The parameters.
    pub fn params(&self) -> &SvmCostParams {
        &self.params
    }

    /// The compute unit price now (`getRecentPrioritizationFees` for the mint; see
    /// [`compute_unit_price_from_fees`]), micro-lamports per CU.
    pub async fn compute_unit_price(&self, asset: &SvmAsset) -> Result<u64, CostError> {
        let fees = self
            .chain
            .recent_prioritization_fees(&[asset.mint])
            .await
            .map_err(|source| CostError::SvmChain {
                what: "getRecentPrioritizationFees",
                source,
            })?;
        Ok(compute_unit_price_from_fees(&fees, &self.params))
    }

    /// `getMinimumBalanceForRentExemption(data_len)`, read once per size and then cached,
    /// lamports.
    pub async fn rent_exempt_minimum(&self, data_len: usize) -> Result<u64, CostError> {
        if let Some(rent) = self.rent.lock().expect("rent cache lock").get(&data_len) {
            return Ok(*rent);
        }
        let rent = self
            .chain
            .minimum_balance_for_rent_exemption(data_len)
            .await
            .map_err(|source| CostError::SvmChain {
                what: "getMinimumBalanceForRentExemption",
                source,
            })?;
        self.rent
            .lock()
            .expect("rent cache lock")
            .insert(data_len, rent);
        Ok(rent)
    }

    /// The rent of creating an associated token account of `asset` (cached), lamports.
    pub async fn token_account_rent(&self, asset: &SvmAsset) -> Result<u64, CostError> {
        self.rent_exempt_minimum(asset.token_account_len()?).await
    }

    /// Whether `owner`'s associated token account for `asset` exists (`getAccountInfo`): an
    /// account at that address owned by the asset's token program. An address holding only
    /// lamports (system-owned) counts as missing, the dearer reading.
    pub async fn ata_exists(&self, owner: &Address, asset: &SvmAsset) -> Result<bool, CostError> {
        let ata = asset.associated_token_address(owner);
        let account = self
            .chain
            .account(&ata)
            .await
            .map_err(|source| CostError::SvmChain {
                what: "getAccountInfo(associated token account)",
                source,
            })?;
        Ok(account.is_some_and(|a| a.owner == asset.token_program))
    }

    /// The rent a settlement to `pay_to` costs, lamports: the token account's rent-exemption
    /// minimum when `create_ata` (the operator lets the facilitator create `pay_to`'s account)
    /// and the account is missing; else 0 (and no RPC when `!create_ata`).
    pub async fn rent_for_pay_to(
        &self,
        asset: &SvmAsset,
        pay_to: &Address,
        create_ata: bool,
    ) -> Result<u64, CostError> {
        if !create_ata || self.ata_exists(pay_to, asset).await? {
            return Ok(0);
        }
        self.token_account_rent(asset).await
    }

    /// The cost of one settlement in `asset` now, without rent.
    pub async fn cost(&self, asset: &SvmAsset) -> Result<SvmCost, CostError> {
        let price = self.compute_unit_price(asset).await?;
        SvmCost::compute(
            self.params.signatures,
            self.params.compute_unit_limit,
            price,
            0,
        )
    }

    /// The cost of one settlement in `asset` to `pay_to` now, with the rent of its token
    /// account when it is missing and `create_ata` (see [`SvmCostModel::rent_for_pay_to`]).
    pub async fn cost_for_pay_to(
        &self,
        asset: &SvmAsset,
        pay_to: &Address,
        create_ata: bool,
    ) -> Result<SvmCost, CostError> {
        let (cost, rent) = tokio::join!(
            self.cost(asset),
            self.rent_for_pay_to(asset, pay_to, create_ata)
        );
        cost?.with_rent(rent?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402_chain::spl::TOKEN_2022_PROGRAM;

    use super::stub::{Stub, USDC};
    use std::sync::atomic::Ordering;
    use x402_chain::SvmAccount;

    #[test]
    fn percentile_is_nearest_rank() {
        let fees = [50, 10, 40, 20, 30, 0, 0, 0];
        // Sorted: 0 0 0 10 20 30 40 50 (n = 8). p75: rank ceil(6) = 6 → 30.
        assert_eq!(fee_percentile(&fees, 75), 30);
        // p50: rank 4 → 10; p0: rank max(0, 1) = 1 → 0; p100: rank 8 → 50; p99: rank 8 → 50.
        assert_eq!(fee_percentile(&fees, 50), 10);
        assert_eq!(fee_percentile(&fees, 0), 0);
        assert_eq!(fee_percentile(&fees, 100), 50);
        assert_eq!(fee_percentile(&fees, 99), 50);
        // p76 of 8: rank ceil(6.08) = 7 → 40. Above 100 counts as 100.
        assert_eq!(fee_percentile(&fees, 76), 40);
        assert_eq!(fee_percentile(&fees, 200), 50);
        assert_eq!(fee_percentile(&[], 75), 0);
        assert_eq!(fee_percentile(&[7], 75), 7);
    }

    #[test]
    fn price_has_headroom_floor_and_cap() {
        let p = SvmCostParams::default();
        // p75 of [100, 200, 300, 400] = rank 3 → 300; × 1.25 = 375.
        assert_eq!(compute_unit_price_from_fees(&[400, 100, 300, 200], &p), 375);
        // 3 × 1.25 = 3.75 → 4 (rounded up).
        assert_eq!(compute_unit_price_from_fees(&[3], &p), 4);
        // No fees (or all zero): the minimum, 1 micro-lamport.
        assert_eq!(compute_unit_price_from_fees(&[], &p), 1);
        assert_eq!(compute_unit_price_from_fees(&[0, 0, 0], &p), 1);
        // 4 500 000 × 1.25 = 5 625 000 > cap 5 000 000.
        assert_eq!(compute_unit_price_from_fees(&[4_500_000], &p), 5_000_000);
        assert_eq!(compute_unit_price_from_fees(&[u64::MAX], &p), 5_000_000);
        // The cap wins over a minimum above it.
        let crossed = SvmCostParams {
            min_compute_unit_price: 10,
            max_compute_unit_price: 5,
            ..SvmCostParams::default()
        };
        assert_eq!(compute_unit_price_from_fees(&[], &crossed), 5);
    }

    #[test]
    fn cost_is_signatures_plus_rounded_up_priority_plus_rent() {
        // 2 × 5000 = 10 000; 20 000 CU × 375 µlamports = 7 500 000 µlamports = 7.5 → 8 lamports.
        let c = SvmCost::compute(2, 20_000, 375, 0).unwrap();
        assert_eq!(
            c,
            SvmCost {
                signatures: 2,
                lamports_per_signature: 5_000,
                compute_unit_limit: 20_000,
                compute_unit_price_micro_lamports: 375,
                priority_fee_lamports: 8,
                rent_lamports: 0,
                total_lamports: 10_008,
            }
        );
        assert_eq!(c.fee_lamports(), 10_008);
        // + SPL token-account rent 2 039 280 lamports.
        let r = c.with_rent(2_039_280).unwrap();
        assert_eq!((r.rent_lamports, r.total_lamports), (2_039_280, 2_049_288));
        assert_eq!(r.fee_lamports(), 10_008);
        assert_eq!(r.with_rent(0).unwrap(), c);
        // At the default minimum, 1 µlamport: 20 000 µlamports → 1 lamport (rounded up).
        let min = SvmCost::compute(2, 20_000, 1, 0).unwrap();
        assert_eq!((min.priority_fee_lamports, min.total_lamports), (1, 10_001));
        // At the cap: 20 000 × 5 000 000 / 10^6 = 100 000 lamports.
        let cap = SvmCost::compute(2, 20_000, 5_000_000, 2_039_280).unwrap();
        assert_eq!(cap.priority_fee_lamports, 100_000);
        assert_eq!(cap.total_lamports, 10_000 + 100_000 + 2_039_280);
        assert!(SvmCost::compute(u64::MAX, 1, 1, 0).is_err());
        assert!(SvmCost::compute(1, 1, 1, u64::MAX).is_err());
    }

    #[test]
    fn token_account_sizes_and_ata() {
        assert_eq!(SvmAsset::spl_token(USDC).token_account_len().unwrap(), 165);
        let t22 = SvmAsset::new(USDC, TOKEN_2022_PROGRAM);
        assert_eq!(t22.token_account_len().unwrap(), 170);
        assert!(SvmAsset::new(USDC, USDC).token_account_len().is_err());
        let owner = Address::from_str_const("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM");
        assert_ne!(
            SvmAsset::spl_token(USDC).associated_token_address(&owner),
            t22.associated_token_address(&owner)
        );
    }

    #[tokio::test]
    async fn model_prices_rent_only_for_missing_ata_when_creation_applies() {
        let with_ata = Address::from_str_const("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM");
        let without_ata = Address::from_str_const("7nYBbXwTC5gPs5ZMjfmLvVnEfTfoY6w2MYAZPJ2CmHfk");
        let asset = SvmAsset::spl_token(USDC);
        let stub = Arc::new(Stub::new(vec![0, 100, 200, 300]).with_ata(&with_ata, &asset));
        let model = SvmCostModel::new(stub.clone(), SvmCostParams::default());
        // p75 of 0 100 200 300 = 200; × 1.25 = 250 µlamports; 20 000 × 250 / 10^6 = 5 lamports.
        let base = model.cost(&asset).await.unwrap();
        assert_eq!(base.compute_unit_price_micro_lamports, 250);
        assert_eq!(base.priority_fee_lamports, 5);
        assert_eq!(base.total_lamports, 10_005);

        assert!(model.ata_exists(&with_ata, &asset).await.unwrap());
        assert!(!model.ata_exists(&without_ata, &asset).await.unwrap());
        // (128 + 165) × 6960 = 2 039 280 lamports, read once.
        let missing = model
            .cost_for_pay_to(&asset, &without_ata, true)
            .await
            .unwrap();
        assert_eq!(missing.rent_lamports, 2_039_280);
        assert_eq!(missing.total_lamports, 10_005 + 2_039_280);
        assert_eq!(
            model
                .cost_for_pay_to(&asset, &with_ata, true)
                .await
                .unwrap(),
            base
        );
        assert_eq!(
            model
                .cost_for_pay_to(&asset, &without_ata, false)
                .await
                .unwrap(),
            base
        );
        assert_eq!(model.token_account_rent(&asset).await.unwrap(), 2_039_280);
        assert_eq!(stub.rent_reads.load(Ordering::SeqCst), 1, "rent cached");
        // Token-2022: 170 bytes, (128 + 170) × 6960 = 2 074 080, a second read.
        let t22 = SvmAsset::new(USDC, TOKEN_2022_PROGRAM);
        assert_eq!(model.token_account_rent(&t22).await.unwrap(), 2_074_080);
        assert_eq!(stub.rent_reads.load(Ordering::SeqCst), 2);

        // A system-owned account at the ATA address (lamports sent there) counts as missing.
        let funded_only = Address::from_str_const("5ZiE3vAkrdXBgyFL7KqG3RoEGBws4CjRcXVbABDLZTgx");
        let mut stub2 = Stub::new(vec![]);
        stub2.accounts.insert(
            asset.associated_token_address(&funded_only),
            SvmAccount {
                owner: x402_chain::spl::SYSTEM_PROGRAM,
                lamports: 1,
                data: vec![],
            },
        );
        let stub2 = Arc::new(stub2);
        let model2 = SvmCostModel::new(stub2, SvmCostParams::default());
        assert!(!model2.ata_exists(&funded_only, &asset).await.unwrap());
        assert_eq!(
            model2
                .rent_for_pay_to(&asset, &funded_only, true)
                .await
                .unwrap(),
            2_039_280
        );
    }
}

/// A minimal in-memory `SvmChain` for the arithmetic and caching unit tests of this crate only
/// (it answers the three reads the cost model makes and nothing else); the real RPC path is
/// covered by `tests/tests/gas_oracle_svm.rs` against a local Solana RPC server.
#[cfg(test)]
pub(crate) mod stub {
    use super::*;

    use async_trait::async_trait;
    use solana_hash::Hash;
    use solana_signature::Signature;
    use solana_transaction::versioned::VersionedTransaction;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use x402_chain::{SvmAccount, SvmChainError, SvmSimulation, SvmTxStatus};

    /// USDC's mainnet mint.
    pub const USDC: Address =
        Address::from_str_const("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");

    pub struct Stub {
        pub fees: Vec<u64>,
        pub accounts: HashMap<Address, SvmAccount>,
        pub rent_reads: AtomicUsize,
    }

    impl Stub {
        /// Prioritization fees `fees` for USDC, no accounts.
        pub fn new(fees: Vec<u64>) -> Self {
            Stub {
                fees,
                accounts: HashMap::new(),
                rent_reads: AtomicUsize::new(0),
            }
        }

        /// Adds `owner`'s (initialized) associated token account for `asset`.
        pub fn with_ata(mut self, owner: &Address, asset: &SvmAsset) -> Self {
            self.accounts.insert(
                asset.associated_token_address(owner),
                SvmAccount {
                    owner: asset.token_program,
                    lamports: 2_039_280,
                    data: vec![0; 165],
                },
            );
            self
        }
    }

    #[async_trait]
    impl SvmChain for Stub {
        async fn simulate(&self, _: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError> {
            unreachable!("not used by the cost model")
        }
        async fn send(&self, _: &VersionedTransaction) -> Result<Signature, SvmChainError> {
            unreachable!("not used by the cost model")
        }
        async fn signature_status(
            &self,
            _: &Signature,
        ) -> Result<Option<SvmTxStatus>, SvmChainError> {
            unreachable!("not used by the cost model")
        }
        async fn is_blockhash_valid(&self, _: &Hash) -> Result<bool, SvmChainError> {
            unreachable!("not used by the cost model")
        }
        async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
            Ok(self.accounts.get(address).cloned())
        }
        async fn minimum_balance_for_rent_exemption(
            &self,
            data_len: usize,
        ) -> Result<u64, SvmChainError> {
            self.rent_reads.fetch_add(1, Ordering::SeqCst);
            // Solana's default rent: (128 + len) bytes × 3480 lamports/byte-year × 2 years.
            Ok((128 + data_len as u64) * 3480 * 2)
        }
        async fn recent_prioritization_fees(
            &self,
            accounts: &[Address],
        ) -> Result<Vec<u64>, SvmChainError> {
            assert_eq!(accounts, &[USDC], "fees asked for the mint");
            Ok(self.fees.clone())
        }
    }
}
