//! Solana `exact` payments for tests, written from the specification (x402-reference §6), not
//! from the facilitator's own layout code: [`SvmPaymentBuilder`] builds the client's partially
//! signed transaction (with knobs that break each rule), [`SvmFixture`] plants a USDC-like mint
//! (SPL Token) and a second one owned by Token-2022 on a [`LiteSvmChain`], funds a payer in both
//! and builds the facilitator's verifier and settler, and
//! the `request_*` helpers wrap a transaction into `/verify`–`/settle` bodies.
//!
//! Units: token amounts are atomic units of a 6-decimal mint, SOL in lamports, compute unit
//! prices in micro-lamports per compute unit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use solana_account::Account;
use solana_address::Address;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_message::{
    AccountMeta, AddressLookupTableAccount, Instruction, Message, VersionedMessage, v0,
};
use solana_program_pack::Pack;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use x402_chain::SvmChain;
use x402_proto::network::SOLANA_DEVNET;
use x402_proto::{Network, PaymentRequest};
use x402_settle::engine::SettleTiming;
use x402_settle::replay::{MemoryStore, ReplayStore};
use x402_settle::svm::{SvmSettler, new_settler};
use x402_verify::svm::{ExactSvmVerifier, SvmPolicy};

use crate::litesvm_chain::LiteSvmChain;

/// Circle's USDC mint on Solana devnet; the fixture plants a 6-decimal mint here.
pub const DEVNET_USDC: Address =
    Address::from_str_const("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU");
/// Decimals of the planted mint (as USDC).
pub const USDC_DECIMALS: u8 = 6;
/// SPL Memo program (v2).
pub const MEMO_PROGRAM: Address =
    Address::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// SPL Token program.
pub const TOKEN_PROGRAM: Address = spl_token_interface::ID;
/// SPL Token-2022 program (embedded in litesvm 0.16).
pub const TOKEN_2022_PROGRAM: Address =
    Address::from_str_const("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
/// v1 name of Solana devnet.
pub const SOLANA_DEVNET_V1: &str = "solana-devnet";
/// Token balance of the payer's account after [`SvmFixture::new`], atomic units.
pub const PAYER_START_BALANCE: u64 = 10_000_000;
/// SOL given to each fee payer, lamports.
pub const FEE_PAYER_LAMPORTS: u64 = 10_000_000_000;
/// Default `SetComputeUnitLimit` of a payment.
pub const DEFAULT_COMPUTE_UNIT_LIMIT: u32 = 20_000;
/// Default `SetComputeUnitLimit` of a payment that also creates the destination account (the
/// Associated Token Account program needs more than the transfer alone).
pub const CREATE_COMPUTE_UNIT_LIMIT: u32 = 100_000;
/// Default `SetComputeUnitPrice`, micro-lamports per compute unit.
pub const DEFAULT_COMPUTE_UNIT_PRICE: u64 = 1;

/// The associated token account of `owner` for `mint` under SPL Token.
pub fn ata(owner: &Address, mint: &Address) -> Address {
    ata_with_program(owner, mint, &TOKEN_PROGRAM)
}

/// The associated token account of `owner` for `mint` under `token_program` (SPL Token or
/// Token-2022: the program is one of the PDA seeds).
pub fn ata_with_program(owner: &Address, mint: &Address, token_program: &Address) -> Address {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner,
        mint,
        token_program,
    )
}

/// Base64 (standard, padded) of the bincode-serialized transaction: the `payload.transaction`.
pub fn to_base64(tx: &VersionedTransaction) -> String {
    STANDARD.encode(bincode::serialize(tx).expect("a transaction serializes"))
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a client's payment transaction: `[SetComputeUnitLimit, SetComputeUnitPrice,
/// (CreateIdempotent)?, TransferChecked(source ATA of payer, mint, destination ATA of payTo,
/// authority payer, amount, decimals), Memo(random hex)]`, fee payer = account 0 with its
/// signature slot left empty (`Signature::default()`), signed by the payer only. v0 message by
/// default, SPL Token by default ([`SvmPaymentBuilder::token_program`] for Token-2022).
#[derive(Debug, Clone)]
pub struct SvmPaymentBuilder {
    payer: Arc<Keypair>,
    fee_payer: Address,
    mint: Address,
    pay_to: Address,
    amount: u64,
    blockhash: Hash,
    legacy: bool,
    token_program: Address,
    lookup_tables: Vec<AddressLookupTableAccount>,
    decimals: u8,
    compute_unit_limit: Option<u32>,
    compute_unit_price: u64,
    transfer_mint: Option<Address>,
    source: Option<Address>,
    destination: Option<Address>,
    authority: Option<Address>,
    memos: Vec<Vec<u8>>,
    memo_accounts: Vec<AccountMeta>,
    extra_instructions: Vec<Instruction>,
    create_destination: bool,
    sign_payer: bool,
}

impl SvmPaymentBuilder {
    /// A valid payment of `amount` of `mint` from `payer` to `pay_to`'s associated token account,
    /// fee paid by `fee_payer`, on `blockhash`.
    pub fn new(
        payer: Arc<Keypair>,
        fee_payer: Address,
        mint: Address,
        pay_to: Address,
        amount: u64,
        blockhash: Hash,
    ) -> Self {
        SvmPaymentBuilder {
            payer,
            fee_payer,
            mint,
            pay_to,
            amount,
            blockhash,
            legacy: false,
            token_program: TOKEN_PROGRAM,
            lookup_tables: Vec::new(),
            decimals: USDC_DECIMALS,
            compute_unit_limit: None,
            compute_unit_price: DEFAULT_COMPUTE_UNIT_PRICE,
            transfer_mint: None,
            source: None,
            destination: None,
            authority: None,
            memos: vec![random_hex(16).into_bytes()],
            memo_accounts: Vec::new(),
            extra_instructions: Vec::new(),
            create_destination: false,
            sign_payer: true,
        }
    }

    /// A legacy message instead of v0.
    pub fn legacy(mut self) -> Self {
        self.legacy = true;
        self
    }

    /// The token program of the transfer (and of the `CreateIdempotent`): SPL Token by default,
    /// or Token-2022. The default source and destination are then the associated token
    /// accounts derived with that program.
    pub fn token_program(mut self, program: Address) -> Self {
        self.token_program = program;
        self
    }

    /// Compiles the v0 message against `table`: accounts of the instructions that the table
    /// lists (and that sign nothing) are loaded from it instead of the static keys.
    pub fn address_lookup_table(mut self, table: AddressLookupTableAccount) -> Self {
        self.lookup_tables.push(table);
        self
    }

    /// Another fee payer as account 0.
    pub fn fee_payer(mut self, fee_payer: Address) -> Self {
        self.fee_payer = fee_payer;
        self
    }

    /// Another payee (owner of the destination associated token account).
    pub fn pay_to(mut self, pay_to: Address) -> Self {
        self.pay_to = pay_to;
        self
    }

    /// Transfers `amount` instead.
    pub fn amount(mut self, amount: u64) -> Self {
        self.amount = amount;
        self
    }

    /// `TransferChecked` decimals.
    pub fn decimals(mut self, decimals: u8) -> Self {
        self.decimals = decimals;
        self
    }

    /// Uses `blockhash` (e.g. one that expired).
    pub fn blockhash(mut self, blockhash: Hash) -> Self {
        self.blockhash = blockhash;
        self
    }

    /// `SetComputeUnitLimit(units)`.
    pub fn compute_unit_limit(mut self, units: u32) -> Self {
        self.compute_unit_limit = Some(units);
        self
    }

    /// `SetComputeUnitPrice(micro_lamports)`.
    pub fn compute_unit_price(mut self, micro_lamports: u64) -> Self {
        self.compute_unit_price = micro_lamports;
        self
    }

    /// Transfers `mint` instead of the required one (source and destination stay the accounts
    /// of the required mint).
    pub fn transfer_mint(mut self, mint: Address) -> Self {
        self.transfer_mint = Some(mint);
        self
    }

    /// Sends to `destination` instead of `payTo`'s associated token account.
    pub fn destination(mut self, destination: Address) -> Self {
        self.destination = Some(destination);
        self
    }

    /// Debits `source` instead of the payer's associated token account.
    pub fn source(mut self, source: Address) -> Self {
        self.source = Some(source);
        self
    }

    /// The fee payer's own address as the transfer source.
    pub fn fee_payer_as_source(mut self) -> Self {
        self.source = Some(self.fee_payer);
        self
    }

    /// The fee payer as transfer authority, debiting its own associated token account (the
    /// payer then signs nothing).
    pub fn fee_payer_as_authority(mut self) -> Self {
        self.authority = Some(self.fee_payer);
        self.source = Some(ata_with_program(
            &self.fee_payer,
            &self.mint,
            &self.token_program,
        ));
        self
    }

    /// The fee payer listed (read-only) in the Memo instruction's accounts.
    pub fn fee_payer_in_accounts(mut self) -> Self {
        self.memo_accounts
            .push(AccountMeta::new_readonly(self.fee_payer, false));
        self
    }

    /// Exactly one Memo carrying `text` (instead of the random one).
    pub fn memo(mut self, text: &str) -> Self {
        self.memos = vec![text.as_bytes().to_vec()];
        self
    }

    /// These Memos, in order (none: no Memo instruction).
    pub fn memos(mut self, texts: &[&str]) -> Self {
        self.memos = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
        self
    }

    /// Appends `ix` after the Memos.
    pub fn extra_instruction(mut self, ix: Instruction) -> Self {
        self.extra_instructions.push(ix);
        self
    }

    /// Leaves the payer's signature slot empty.
    pub fn unsigned(mut self) -> Self {
        self.sign_payer = false;
        self
    }

    /// Puts `CreateIdempotent` of `payTo`'s associated token account, funded by the fee payer,
    /// before the transfer (and raises the default compute unit limit to
    /// [`CREATE_COMPUTE_UNIT_LIMIT`]).
    pub fn create_destination(mut self) -> Self {
        self.create_destination = true;
        self
    }

    /// The instructions, in order.
    pub fn instructions(&self) -> Vec<Instruction> {
        let default_limit = if self.create_destination {
            CREATE_COMPUTE_UNIT_LIMIT
        } else {
            DEFAULT_COMPUTE_UNIT_LIMIT
        };
        let mut ixs = vec![
            ComputeBudgetInstruction::set_compute_unit_limit(
                self.compute_unit_limit.unwrap_or(default_limit),
            ),
            ComputeBudgetInstruction::set_compute_unit_price(self.compute_unit_price),
        ];
        if self.create_destination {
            ixs.push(
                spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
                    &self.fee_payer,
                    &self.pay_to,
                    &self.mint,
                    &self.token_program,
                ),
            );
        }
        let authority = self.authority.unwrap_or_else(|| self.payer.pubkey());
        let source = self.source.unwrap_or_else(|| {
            ata_with_program(&self.payer.pubkey(), &self.mint, &self.token_program)
        });
        let destination = self
            .destination
            .unwrap_or_else(|| ata_with_program(&self.pay_to, &self.mint, &self.token_program));
        // TransferChecked has the same data and accounts under SPL Token and Token-2022.
        let mut transfer = spl_token_interface::instruction::transfer_checked(
            &TOKEN_PROGRAM,
            &source,
            &self.transfer_mint.unwrap_or(self.mint),
            &destination,
            &authority,
            &[],
            self.amount,
            self.decimals,
        )
        .expect("SPL Token program id");
        transfer.program_id = self.token_program;
        ixs.push(transfer);
        for memo in &self.memos {
            ixs.push(Instruction {
                program_id: MEMO_PROGRAM,
                accounts: self.memo_accounts.clone(),
                data: memo.clone(),
            });
        }
        ixs.extend(self.extra_instructions.iter().cloned());
        ixs
    }

    /// The partially signed transaction.
    pub fn build(&self) -> VersionedTransaction {
        let ixs = self.instructions();
        let message = if self.legacy {
            VersionedMessage::Legacy(Message::new_with_blockhash(
                &ixs,
                Some(&self.fee_payer),
                &self.blockhash,
            ))
        } else {
            VersionedMessage::V0(
                v0::Message::try_compile(
                    &self.fee_payer,
                    &ixs,
                    &self.lookup_tables,
                    self.blockhash,
                )
                .expect("a v0 message compiles"),
            )
        };
        let required = usize::from(message.header().num_required_signatures);
        let bytes = message.serialize();
        let signatures = message.static_account_keys()[..required]
            .iter()
            .map(|key| {
                if self.sign_payer && *key == self.payer.pubkey() && *key != self.fee_payer {
                    self.payer.sign_message(&bytes)
                } else {
                    Signature::default()
                }
            })
            .collect();
        VersionedTransaction {
            signatures,
            message,
        }
    }

    /// [`SvmPaymentBuilder::build`] as base64: the `payload.transaction` value.
    pub fn build_base64(&self) -> String {
        to_base64(&self.build())
    }
}

/// v2 `PaymentRequirements` on Solana devnet: `{scheme: "exact", network, amount, asset, payTo,
/// maxTimeoutSeconds: 60, extra}`.
pub fn v2_requirements_json(mint: &Address, pay_to: &Address, amount: u64, extra: &Value) -> Value {
    json!({
        "scheme": "exact",
        "network": SOLANA_DEVNET,
        "amount": amount.to_string(),
        "asset": mint.to_string(),
        "payTo": pay_to.to_string(),
        "maxTimeoutSeconds": 60,
        "extra": extra,
    })
}

/// A v2 `/verify`–`/settle` body on Solana devnet: [`v2_requirements_json`], echoed in
/// `accepted`.
pub fn v2_request_json(
    tx_b64: &str,
    mint: &Address,
    pay_to: &Address,
    amount: u64,
    extra: &Value,
) -> Value {
    let requirements = v2_requirements_json(mint, pay_to, amount, extra);
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": "http://127.0.0.1/item", "mimeType": "application/json"},
            "accepted": requirements,
            "payload": {"transaction": tx_b64},
        },
        "paymentRequirements": requirements,
    })
}

/// v1 `PaymentRequirements` on `solana-devnet`: `maxAmountRequired` and an inline resource.
pub fn v1_requirements_json(mint: &Address, pay_to: &Address, amount: u64, extra: &Value) -> Value {
    json!({
        "scheme": "exact",
        "network": SOLANA_DEVNET_V1,
        "maxAmountRequired": amount.to_string(),
        "asset": mint.to_string(),
        "payTo": pay_to.to_string(),
        "resource": "http://127.0.0.1/item",
        "description": "one item",
        "mimeType": "application/json",
        "maxTimeoutSeconds": 60,
        "extra": extra,
    })
}

/// A v1 body on `solana-devnet`: [`v1_requirements_json`] and the v1 payload
/// `{x402Version: 1, scheme, network, payload: {transaction}}`.
pub fn v1_request_json(
    tx_b64: &str,
    mint: &Address,
    pay_to: &Address,
    amount: u64,
    extra: &Value,
) -> Value {
    json!({
        "x402Version": 1,
        "paymentPayload": {
            "x402Version": 1,
            "scheme": "exact",
            "network": SOLANA_DEVNET_V1,
            "payload": {"transaction": tx_b64},
        },
        "paymentRequirements": v1_requirements_json(mint, pay_to, amount, extra),
    })
}

/// A USDC-like payment setup on an in-process SVM, with the facilitator's verifier and settler.
pub struct SvmFixture {
    /// The chain (shared with the verifier).
    pub chain: Arc<LiteSvmChain>,
    /// The planted mint ([`DEVNET_USDC`], 6 decimals).
    pub mint: Address,
    /// Its mint authority (funded with SOL, pays the setup transactions).
    pub mint_authority: Keypair,
    /// The facilitator's first fee payer (`extra.feePayer` by default).
    pub fee_payer: Arc<Keypair>,
    /// A second fee payer the facilitator also manages.
    pub fee_payer_2: Arc<Keypair>,
    /// The client: transfer authority, owns [`SvmFixture::payer_ata`].
    pub payer: Arc<Keypair>,
    /// The payer's token account, [`PAYER_START_BALANCE`] at start.
    pub payer_ata: Address,
    /// The payee; its token account exists (empty).
    pub pay_to: Address,
    /// `pay_to`'s token account.
    pub pay_to_ata: Address,
    /// A payee the operator lists in `create_destination_for`; no token account yet.
    pub listed_pay_to: Address,
    /// A payee without a token account, not listed.
    pub stranger_pay_to: Address,
    /// A second 6-decimal mint, owned by Token-2022 (same mint authority), also settled by the
    /// verifier.
    pub mint_2022: Address,
    /// The payer's Token-2022 associated token account of [`SvmFixture::mint_2022`],
    /// [`PAYER_START_BALANCE`] at start.
    pub payer_ata_2022: Address,
    /// `pay_to`'s Token-2022 associated token account of [`SvmFixture::mint_2022`] (exists,
    /// empty).
    pub pay_to_ata_2022: Address,
    /// The policy the verifier was built with.
    pub policy: SvmPolicy,
    /// The verifier (fee payers: `fee_payer`, `fee_payer_2`; assets: `mint`, `mint_2022`).
    pub verifier: Arc<ExactSvmVerifier>,
    /// The settler's replay store.
    pub store: Arc<MemoryStore>,
    /// The settler (key prefix `x402`).
    pub settler: Arc<SvmSettler>,
}

impl SvmFixture {
    /// A fixture with the default policy plus `listed_pay_to` in `create_destination_for`, and
    /// the default settle timing.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_timing(SettleTiming::default())
    }

    /// Like [`SvmFixture::new`] with a settle timing.
    pub fn with_timing(timing: SettleTiming) -> anyhow::Result<Self> {
        let chain = Arc::new(LiteSvmChain::new());
        let mint = DEVNET_USDC;
        let mint_authority = Keypair::new();
        let fee_payer = Arc::new(Keypair::new());
        let fee_payer_2 = Arc::new(Keypair::new());
        let payer = Arc::new(Keypair::new());
        let pay_to = Keypair::new().pubkey();
        let listed_pay_to = Keypair::new().pubkey();
        let stranger_pay_to = Keypair::new().pubkey();

        chain.airdrop(&mint_authority.pubkey(), FEE_PAYER_LAMPORTS)?;
        chain.airdrop(&fee_payer.pubkey(), FEE_PAYER_LAMPORTS)?;
        chain.airdrop(&fee_payer_2.pubkey(), FEE_PAYER_LAMPORTS)?;
        plant_mint(&chain, mint, &mint_authority.pubkey())?;
        let payer_ata = create_ata(&chain, &mint_authority, &payer.pubkey(), &mint)?;
        let pay_to_ata = create_ata(&chain, &mint_authority, &pay_to, &mint)?;
        mint_to(
            &chain,
            &mint_authority,
            &mint,
            &payer_ata,
            PAYER_START_BALANCE,
        )?;

        let mint_2022 = Keypair::new().pubkey();
        plant_mint_with_program(
            &chain,
            mint_2022,
            &mint_authority.pubkey(),
            &TOKEN_2022_PROGRAM,
        )?;
        let payer_ata_2022 = create_ata_with_program(
            &chain,
            &mint_authority,
            &payer.pubkey(),
            &mint_2022,
            &TOKEN_2022_PROGRAM,
        )?;
        let pay_to_ata_2022 = create_ata_with_program(
            &chain,
            &mint_authority,
            &pay_to,
            &mint_2022,
            &TOKEN_2022_PROGRAM,
        )?;
        mint_to_with_program(
            &chain,
            &mint_authority,
            &mint_2022,
            &payer_ata_2022,
            PAYER_START_BALANCE,
            &TOKEN_2022_PROGRAM,
        )?;

        let policy = SvmPolicy {
            create_destination_for: vec![listed_pay_to],
            // As the configuration's default when destinations may be created.
            max_compute_unit_limit: x402_verify::svm::DEFAULT_MAX_COMPUTE_UNIT_LIMIT_WITH_CREATE,
            ..SvmPolicy::default()
        };
        let network = Network::parse(SOLANA_DEVNET).context("devnet CAIP-2")?;
        let verifier = Arc::new(ExactSvmVerifier::new(
            chain.clone(),
            network,
            vec![fee_payer.clone(), fee_payer_2.clone()],
            vec![mint, mint_2022],
            policy.clone(),
        ));
        let store = Arc::new(MemoryStore::new());
        let settler = Arc::new(new_settler(
            verifier.clone(),
            store.clone(),
            "x402",
            timing,
            RECORD_TTL,
        ));
        Ok(SvmFixture {
            chain,
            mint,
            mint_authority,
            fee_payer,
            fee_payer_2,
            payer,
            payer_ata,
            pay_to,
            pay_to_ata,
            listed_pay_to,
            stranger_pay_to,
            mint_2022,
            payer_ata_2022,
            pay_to_ata_2022,
            policy,
            verifier,
            store,
            settler,
        })
    }

    /// A verifier like [`SvmFixture::verifier`] (same fee payers, asset and policy) reading
    /// `chain` instead (e.g. a wrapper of [`SvmFixture::chain`] that delays or observes calls).
    pub fn verifier_over(&self, chain: Arc<dyn SvmChain>) -> Arc<ExactSvmVerifier> {
        let network = Network::parse(SOLANA_DEVNET).expect("devnet CAIP-2");
        Arc::new(ExactSvmVerifier::new(
            chain,
            network,
            vec![self.fee_payer.clone(), self.fee_payer_2.clone()],
            vec![self.mint, self.mint_2022],
            self.policy.clone(),
        ))
    }

    /// Another settler over the same verifier, with its own `store` and `timing`.
    pub fn settler_with(&self, store: Arc<dyn ReplayStore>, timing: SettleTiming) -> SvmSettler {
        new_settler(self.verifier.clone(), store, "x402", timing, RECORD_TTL)
    }

    /// A builder of a valid payment of `amount` from the payer to `pay_to`, fee payer
    /// `fee_payer`, on the current blockhash.
    pub fn payment(&self, amount: u64) -> SvmPaymentBuilder {
        SvmPaymentBuilder::new(
            self.payer.clone(),
            self.fee_payer.pubkey(),
            self.mint,
            self.pay_to,
            amount,
            self.chain.latest_blockhash(),
        )
    }

    /// A builder of a valid Token-2022 payment of `amount` of [`SvmFixture::mint_2022`] from the
    /// payer to `pay_to`'s Token-2022 associated token account.
    pub fn payment_2022(&self, amount: u64) -> SvmPaymentBuilder {
        SvmPaymentBuilder::new(
            self.payer.clone(),
            self.fee_payer.pubkey(),
            self.mint_2022,
            self.pay_to,
            amount,
            self.chain.latest_blockhash(),
        )
        .token_program(TOKEN_2022_PROGRAM)
    }

    /// The default `extra`, `{feePayer}`, with `overrides` merged in (a `null` value removes
    /// the key).
    pub fn extra(&self, overrides: &Value) -> Value {
        let mut extra = Map::new();
        extra.insert(
            "feePayer".into(),
            self.fee_payer.pubkey().to_string().into(),
        );
        if let Value::Object(o) = overrides {
            for (k, v) in o {
                if v.is_null() {
                    extra.remove(k);
                } else {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(extra)
    }

    /// A v2 request paying `pay_to`; `extra` overrides as in [`SvmFixture::extra`].
    pub fn request_v2(&self, tx_b64: &str, amount: u64, extra: Value) -> PaymentRequest {
        self.request_v2_to(&self.pay_to, tx_b64, amount, extra)
    }

    /// A v2 request paying `pay_to`.
    pub fn request_v2_to(
        &self,
        pay_to: &Address,
        tx_b64: &str,
        amount: u64,
        extra: Value,
    ) -> PaymentRequest {
        let body = v2_request_json(tx_b64, &self.mint, pay_to, amount, &self.extra(&extra));
        PaymentRequest::from_value(body).expect("a well-formed v2 request")
    }

    /// A v2 request for `amount` of `mint` (e.g. [`SvmFixture::mint_2022`]) paying `pay_to`.
    pub fn request_v2_mint(
        &self,
        mint: &Address,
        tx_b64: &str,
        amount: u64,
        extra: Value,
    ) -> PaymentRequest {
        let body = v2_request_json(tx_b64, mint, &self.pay_to, amount, &self.extra(&extra));
        PaymentRequest::from_value(body).expect("a well-formed v2 request")
    }

    /// A v1 request (`solana-devnet`, `maxAmountRequired`) paying `pay_to`.
    pub fn request_v1(&self, tx_b64: &str, amount: u64, extra: Value) -> PaymentRequest {
        let body = v1_request_json(
            tx_b64,
            &self.mint,
            &self.pay_to,
            amount,
            &self.extra(&extra),
        );
        PaymentRequest::from_value(body).expect("a well-formed v1 request")
    }

    /// Token balance of the account `ata`, atomic units (0 when it does not exist). Reads the
    /// base `Account` layout, the first 165 bytes under SPL Token and Token-2022 alike (a
    /// Token-2022 account may carry extensions after them).
    pub fn token_balance(&self, ata: &Address) -> u64 {
        const LEN: usize = spl_token_interface::state::Account::LEN;
        self.chain
            .get_account(ata)
            .and_then(|a| {
                let base = a.data.get(..LEN)?;
                spl_token_interface::state::Account::unpack(base).ok()
            })
            .map_or(0, |a| a.amount)
    }

    /// Creates `owner`'s associated token account for the mint (paid by the mint authority).
    pub fn create_ata(&self, owner: &Address) -> anyhow::Result<Address> {
        create_ata(&self.chain, &self.mint_authority, owner, &self.mint)
    }

    /// Mints `amount` to the token account `to`.
    pub fn mint_to(&self, to: &Address, amount: u64) -> anyhow::Result<()> {
        mint_to(&self.chain, &self.mint_authority, &self.mint, to, amount)
    }

    /// SOL balance of the first fee payer, lamports.
    pub fn fee_payer_lamports(&self) -> u64 {
        self.chain.balance(&self.fee_payer.pubkey())
    }
}

/// A short settle timing for pending and expiry tests: `confirm_timeout` as given, polls every
/// 20 ms, re-sends after 1 s, waits 2 s for a concurrent reservation.
pub fn quick_timing(confirm_timeout: Duration) -> SettleTiming {
    SettleTiming {
        receipt_timeout: confirm_timeout,
        poll_interval: Duration::from_millis(20),
        resend_after: Duration::from_secs(1),
        reserved_wait: Duration::from_secs(2),
        ..SettleTiming::default()
    }
}

/// Lifetime of the fixture's Solana records.
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Writes an initialized SPL Token mint (6 decimals, supply 0, no freeze authority) at `address`.
pub fn plant_mint(
    chain: &LiteSvmChain,
    address: Address,
    authority: &Address,
) -> anyhow::Result<()> {
    plant_mint_with_program(chain, address, authority, &TOKEN_PROGRAM)
}

/// [`plant_mint`] owned by `token_program`: the 82-byte base `Mint` is also a valid Token-2022
/// mint without extensions.
pub fn plant_mint_with_program(
    chain: &LiteSvmChain,
    address: Address,
    authority: &Address,
    token_program: &Address,
) -> anyhow::Result<()> {
    let mint = spl_token_interface::state::Mint {
        mint_authority: Some(*authority).into(),
        supply: 0,
        decimals: USDC_DECIMALS,
        is_initialized: true,
        freeze_authority: None.into(),
    };
    let mut data = vec![0u8; spl_token_interface::state::Mint::LEN];
    spl_token_interface::state::Mint::pack(mint, &mut data).context("packing the mint")?;
    let lamports = chain.with_svm(|svm| svm.minimum_balance_for_rent_exemption(data.len()));
    chain.set_account(
        address,
        Account {
            lamports,
            data,
            owner: *token_program,
            executable: false,
            rent_epoch: 0,
        },
    )
}

/// Creates `owner`'s associated token account for `mint`, paid by `funder`.
pub fn create_ata(
    chain: &LiteSvmChain,
    funder: &Keypair,
    owner: &Address,
    mint: &Address,
) -> anyhow::Result<Address> {
    create_ata_with_program(chain, funder, owner, mint, &TOKEN_PROGRAM)
}

/// [`create_ata`] under `token_program` (through the Associated Token Account program, as a
/// wallet would).
pub fn create_ata_with_program(
    chain: &LiteSvmChain,
    funder: &Keypair,
    owner: &Address,
    mint: &Address,
    token_program: &Address,
) -> anyhow::Result<Address> {
    chain
        .with_svm(|svm| {
            litesvm_token::CreateAssociatedTokenAccountIdempotent::new(svm, funder, mint)
                .owner(owner)
                .token_program_id(token_program)
                .send()
                .map_err(|e| format!("{:?}; logs: {:?}", e.err, e.meta.logs))
        })
        .map_err(|e| anyhow::anyhow!("creating the token account of {owner}: {e}"))
}

/// Mints `amount` of `mint` to the token account `to`, signed and paid by `authority`.
pub fn mint_to(
    chain: &LiteSvmChain,
    authority: &Keypair,
    mint: &Address,
    to: &Address,
    amount: u64,
) -> anyhow::Result<()> {
    mint_to_with_program(chain, authority, mint, to, amount, &TOKEN_PROGRAM)
}

/// [`mint_to`] under `token_program` (`MintTo` has the same data and accounts under SPL Token
/// and Token-2022; `litesvm_token::MintTo` accepts only the SPL Token id).
pub fn mint_to_with_program(
    chain: &LiteSvmChain,
    authority: &Keypair,
    mint: &Address,
    to: &Address,
    amount: u64,
    token_program: &Address,
) -> anyhow::Result<()> {
    let mut ix = spl_token_interface::instruction::mint_to(
        &TOKEN_PROGRAM,
        mint,
        to,
        &authority.pubkey(),
        &[],
        amount,
    )
    .context("MintTo instruction")?;
    ix.program_id = *token_program;
    chain
        .with_svm(|svm| {
            let tx = solana_transaction::Transaction::new_signed_with_payer(
                &[ix],
                Some(&authority.pubkey()),
                &[authority],
                svm.latest_blockhash(),
            );
            svm.send_transaction(tx)
                .map(|_| ())
                .map_err(|e| format!("{:?}; logs: {:?}", e.err, e.meta.logs))
        })
        .map_err(|e| anyhow::anyhow!("minting {amount} to {to}: {e}"))
}
