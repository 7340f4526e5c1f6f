//! [`LiteSvmChain`]: [`x402_chain::SvmChain`] over an in-process SVM (`litesvm` 0.16, agave 4.2
//! runtime with the real SPL Token, Token-2022, Associated Token Account and Memo programs).
//!
//! Semantics, compared with a cluster behind JSON-RPC:
//! - a sent transaction executes at once and is `confirmed` as soon as it executed; every
//!   executed transaction (success or on-chain failure) is remembered for
//!   [`SvmChain::signature_status`]; a transaction the runtime refuses before execution
//!   (unknown blockhash, bad signature, …) is never seen, as a leader drops it;
//! - there is one valid blockhash, [`LiteSvmChain::latest_blockhash`];
//!   [`LiteSvmChain::expire_blockhash`] replaces it, after which transactions using the old one
//!   can never land;
//! - [`LiteSvmChain::hold_sends`] makes `send` accept transactions without executing them (a
//!   slow cluster): they stay unseen until [`LiteSvmChain::release_held`].
//!
//! Units: lamports for SOL balances, atomic token units for token amounts.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use litesvm::LiteSVM;
use solana_account::Account;
use solana_address::Address;
use solana_hash::Hash;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::{SvmAccount, SvmChain, SvmChainError, SvmSimulation, SvmTxStatus};

/// The runtime refuses a transaction with an unknown blockhash before execution; a real leader
/// drops it silently, so `send` reports it as accepted (the caller then sees it never land).
const BLOCKHASH_NOT_FOUND: &str = "BlockhashNotFound";

/// What the chain remembers besides the SVM itself.
struct State {
    svm: LiteSVM,
    /// Executed transactions: signature → (sequence number used as slot, execution error).
    executed: HashMap<Signature, (u64, Option<String>)>,
    /// Sequence number of the next executed transaction.
    next_slot: u64,
    /// When true, `send` queues instead of executing.
    hold: bool,
    /// Transactions sent while holding, in order, without duplicates.
    held: Vec<VersionedTransaction>,
    /// Number of `send` calls (including re-sends and held ones).
    sends: u64,
}

impl State {
    /// Executes `tx` unless it already executed. Errors: the runtime refused it before execution
    /// (nothing recorded, except an unknown blockhash, which is reported as accepted).
    fn execute(&mut self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError> {
        let signature = tx.signatures.first().copied().unwrap_or_default();
        if self.executed.contains_key(&signature) {
            return Ok(signature);
        }
        let result = self.svm.send_transaction(tx.clone());
        let included = self.svm.get_transaction(&signature).is_some();
        match result {
            Ok(_) => {
                self.record(signature, None);
                Ok(signature)
            }
            Err(failed) if included => {
                self.record(signature, Some(format!("{:?}", failed.err)));
                Ok(signature)
            }
            Err(failed) => {
                let err = format!("{:?}", failed.err);
                if err == BLOCKHASH_NOT_FOUND {
                    Ok(signature)
                } else {
                    Err(SvmChainError::Rejected(err))
                }
            }
        }
    }

    fn record(&mut self, signature: Signature, err: Option<String>) {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.executed.insert(signature, (slot, err));
    }
}

/// An in-process Solana cluster implementing [`SvmChain`]. Thread-safe; every call takes one
/// mutex for its whole (synchronous) duration.
pub struct LiteSvmChain {
    state: Mutex<State>,
}

impl Default for LiteSvmChain {
    fn default() -> Self {
        Self::new()
    }
}

impl LiteSvmChain {
    /// A fresh SVM with the default programs (SPL Token, Token-2022, ATA, Memo), signature
    /// verification and blockhash checks on.
    pub fn new() -> Self {
        Self::from_svm(
            LiteSVM::new()
                .with_sigverify(true)
                .with_blockhash_check(true),
        )
    }

    /// Wraps an already configured SVM.
    pub fn from_svm(svm: LiteSVM) -> Self {
        LiteSvmChain {
            state: Mutex::new(State {
                svm,
                executed: HashMap::new(),
                next_slot: 1,
                hold: false,
                held: Vec::new(),
                sends: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with exclusive access to the SVM (plant accounts, send setup transactions, …).
    pub fn with_svm<T>(&self, f: impl FnOnce(&mut LiteSVM) -> T) -> T {
        f(&mut self.lock().svm)
    }

    /// Credits `lamports` to `address` (from the SVM's airdrop account).
    pub fn airdrop(&self, address: &Address, lamports: u64) -> anyhow::Result<()> {
        self.with_svm(|svm| {
            svm.airdrop(address, lamports)
                .map(|_| ())
                .map_err(|e| format!("{:?}", e.err))
        })
        .map_err(|e| anyhow::anyhow!("airdrop to {address} failed: {e}"))
    }

    /// Writes `account` at `address` as is (a mint at its real address, …).
    pub fn set_account(&self, address: Address, account: Account) -> anyhow::Result<()> {
        self.with_svm(|svm| svm.set_account(address, account))
            .map_err(|e| anyhow::anyhow!("set_account {address}: {e:?}"))
    }

    /// The account at `address`, if it exists (holds lamports, as a cluster counts it).
    pub fn get_account(&self, address: &Address) -> Option<Account> {
        self.with_svm(|svm| svm.get_account(address))
            .filter(|a| a.lamports > 0)
    }

    /// SOL balance of `address`, lamports (0 when absent).
    pub fn balance(&self, address: &Address) -> u64 {
        self.with_svm(|svm| svm.get_balance(address)).unwrap_or(0)
    }

    /// The one valid blockhash.
    pub fn latest_blockhash(&self) -> Hash {
        self.with_svm(|svm| svm.latest_blockhash())
    }

    /// Replaces the valid blockhash: transactions using the previous one can never land.
    pub fn expire_blockhash(&self) {
        self.with_svm(|svm| svm.expire_blockhash());
    }

    /// While `hold` is true, `send` accepts transactions (returns their signature) without
    /// executing them; they stay unseen by `signature_status`.
    pub fn hold_sends(&self, hold: bool) {
        self.lock().hold = hold;
    }

    /// Number of transactions currently held.
    pub fn held_count(&self) -> usize {
        self.lock().held.len()
    }

    /// Executes the held transactions in order (and stops holding new ones); returns each one's
    /// signature and outcome (`Err` when the runtime refused it before execution; a held
    /// transaction whose blockhash expired meanwhile is dropped, reported as `Ok` but never seen).
    pub fn release_held(&self) -> Vec<(Signature, Result<(), String>)> {
        let mut state = self.lock();
        state.hold = false;
        let held = std::mem::take(&mut state.held);
        held.iter()
            .map(|tx| {
                let signature = tx.signatures.first().copied().unwrap_or_default();
                let outcome = state.execute(tx).map(|_| ()).map_err(|e| e.to_string());
                (signature, outcome)
            })
            .collect()
    }

    /// Number of `send` calls so far (first sends and re-sends, held or executed).
    pub fn send_count(&self) -> u64 {
        self.lock().sends
    }

    /// Number of transactions executed through `send` (landed, successful or failed).
    pub fn executed_count(&self) -> usize {
        self.lock().executed.len()
    }

    /// The recorded outcome of an executed transaction: `Some(None)` success, `Some(Some(err))`
    /// failed on chain, `None` never executed.
    pub fn executed(&self, signature: &Signature) -> Option<Option<String>> {
        self.lock()
            .executed
            .get(signature)
            .map(|(_, err)| err.clone())
    }
}

#[async_trait]
impl SvmChain for LiteSvmChain {
    async fn simulate(&self, tx: &VersionedTransaction) -> Result<SvmSimulation, SvmChainError> {
        let state = self.lock();
        Ok(match state.svm.simulate_transaction(tx.clone()) {
            Ok(info) => SvmSimulation {
                err: None,
                logs: info.meta.logs,
                units_consumed: Some(info.meta.compute_units_consumed),
            },
            Err(failed) => SvmSimulation {
                err: Some(format!("{:?}", failed.err)),
                logs: failed.meta.logs,
                units_consumed: Some(failed.meta.compute_units_consumed),
            },
        })
    }

    async fn send(&self, tx: &VersionedTransaction) -> Result<Signature, SvmChainError> {
        let mut state = self.lock();
        state.sends += 1;
        if state.hold {
            let signature = tx.signatures.first().copied().unwrap_or_default();
            let known = state.executed.contains_key(&signature)
                || state
                    .held
                    .iter()
                    .any(|h| h.signatures.first() == Some(&signature));
            if !known {
                state.held.push(tx.clone());
            }
            return Ok(signature);
        }
        state.execute(tx)
    }

    async fn signature_status(
        &self,
        sig: &Signature,
    ) -> Result<Option<SvmTxStatus>, SvmChainError> {
        Ok(self
            .lock()
            .executed
            .get(sig)
            .map(|(slot, err)| SvmTxStatus {
                slot: *slot,
                confirmed: true,
                err: err.clone(),
            }))
    }

    async fn is_blockhash_valid(&self, blockhash: &Hash) -> Result<bool, SvmChainError> {
        Ok(*blockhash == self.latest_blockhash())
    }

    async fn account(&self, address: &Address) -> Result<Option<SvmAccount>, SvmChainError> {
        Ok(self.get_account(address).map(|a| SvmAccount {
            owner: a.owner,
            lamports: a.lamports,
            data: a.data,
        }))
    }

    async fn minimum_balance_for_rent_exemption(
        &self,
        data_len: usize,
    ) -> Result<u64, SvmChainError> {
        Ok(self.with_svm(|svm| svm.minimum_balance_for_rent_exemption(data_len)))
    }

    /// No fee market in process: every recent slot had no prioritization fee.
    async fn recent_prioritization_fees(
        &self,
        _accounts: &[Address],
    ) -> Result<Vec<u64>, SvmChainError> {
        Ok(vec![0; 5])
    }
}
