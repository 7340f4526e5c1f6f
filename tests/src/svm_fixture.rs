//! Everything one Solana payment needs, through real HTTP and the production RPC chain
//! (`RpcSvmChain`): a private [`Surfnet`] with devnet USDC planted, a funded payer, a payee with
//! an existing token account, a fee payer with SOL, a private Redis and the facilitator configured
//! with one `[[svm]]` network (`solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1`, v1 `solana-devnet`).
//!
//! Payment transactions come from [`SvmPaymentBuilder`] (written from the specification,
//! x402-reference §6), in the layout of the official `@x402/svm` 2.27 client:
//! `[SetComputeUnitLimit(20_000), SetComputeUnitPrice(1), TransferChecked, Memo(random hex)]`,
//! v0 message, fee payer = account 0 with its signature slot left empty, signed by the payer.
//!
//! Units: token amounts in atomic USDC (6 decimals), SOL in lamports.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use solana_address::Address as Pubkey;
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;

use crate::facilitator::TestFacilitator;
use crate::surfnet::{DEVNET_USDC, SPL_TOKEN_PROGRAM, parse_pubkey};
use crate::svm_payment::{
    SvmPaymentBuilder, v1_request_json, v1_requirements_json, v2_request_json, v2_requirements_json,
};
use crate::{RedisServer, Surfnet};

pub use crate::svm_payment::{
    DEFAULT_COMPUTE_UNIT_LIMIT as COMPUTE_UNIT_LIMIT,
    DEFAULT_COMPUTE_UNIT_PRICE as COMPUTE_UNIT_PRICE, MEMO_PROGRAM, SOLANA_DEVNET_V1,
    USDC_DECIMALS, to_base64,
};
pub use x402_proto::network::SOLANA_DEVNET;

/// Lamports per SOL.
pub const SOL: u64 = 1_000_000_000;
/// The payer's USDC after [`SvmRpcFixture::start`] (10 USDC), atomic units.
pub const PAYER_FUNDS: u64 = 10_000_000;
/// SOL airdropped to the payer (it pays nothing; present so that "payer has SOL" is true).
pub const PAYER_LAMPORTS: u64 = SOL;
/// SOL airdropped to the fee payer.
pub const FEE_PAYER_LAMPORTS: u64 = 10 * SOL;
/// Key prefix of the facilitator's Redis records (the default `x402`).
pub const KEY_PREFIX: &str = "x402";

/// Surfnet + devnet USDC + payer + payee + fee payer + Redis + the facilitator over HTTP.
///
/// Field order is drop order: the facilitator stops before its Redis and chain go away.
pub struct SvmRpcFixture {
    /// The facilitator under test.
    pub facilitator: TestFacilitator,
    /// Its private Redis.
    pub redis: RedisServer,
    /// The local Solana JSON-RPC server.
    pub surfnet: Surfnet,
    /// The USDC mint (devnet address, planted).
    pub mint: Pubkey,
    /// SPL Token program (owner of the mint).
    pub token_program: Pubkey,
    /// The payer (transfer authority), funded with [`PAYER_FUNDS`] USDC and [`PAYER_LAMPORTS`].
    pub payer: Arc<Keypair>,
    /// The payer's associated token account.
    pub payer_ata: Pubkey,
    /// The payee (`payTo`), owner of an existing, empty token account.
    pub pay_to: Pubkey,
    /// The payee's associated token account.
    pub pay_to_ata: Pubkey,
    /// The facilitator's fee payer (`extra.feePayer`), funded with [`FEE_PAYER_LAMPORTS`].
    pub fee_payer: Arc<Keypair>,
}

impl SvmRpcFixture {
    /// Starts everything with a confirmation timeout of 30 s per `/settle`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_timeout(30).await
    }

    /// [`SvmRpcFixture::start`] with `receipt_timeout_seconds` per `/settle`.
    pub async fn start_with_timeout(receipt_timeout_seconds: u64) -> anyhow::Result<Self> {
        Self::start_custom(receipt_timeout_seconds, "", "").await
    }

    /// [`SvmRpcFixture::start_with_timeout`] with `svm_keys` (TOML lines) added to the `[[svm]]`
    /// table and `tail` (TOML tables, e.g. `[svm.gas]`) appended to the configuration.
    pub async fn start_custom(
        receipt_timeout_seconds: u64,
        svm_keys: &str,
        tail: &str,
    ) -> anyhow::Result<Self> {
        let surfnet = Surfnet::spawn().await?;
        let mint = parse_pubkey(DEVNET_USDC)?;
        let token_program = parse_pubkey(SPL_TOKEN_PROGRAM)?;
        surfnet
            .plant_mint(&mint, USDC_DECIMALS, &token_program)
            .await
            .context("planting the USDC mint")?;

        let payer = Arc::new(Keypair::new());
        let fee_payer = Arc::new(Keypair::new());
        let pay_to = Keypair::new().pubkey();
        surfnet.airdrop(&payer.pubkey(), PAYER_LAMPORTS).await?;
        surfnet
            .airdrop(&fee_payer.pubkey(), FEE_PAYER_LAMPORTS)
            .await?;
        let payer_ata = surfnet
            .set_token_balance(&payer.pubkey(), &mint, PAYER_FUNDS, &token_program)
            .await?;
        let pay_to_ata = surfnet
            .set_token_balance(&pay_to, &mint, 0, &token_program)
            .await?;
        for (ata, want) in [(&payer_ata, PAYER_FUNDS), (&pay_to_ata, 0)] {
            let got = surfnet.token_balance(ata).await?;
            if got != Some(want) {
                bail!("token account {ata}: balance {got:?}, planted {want}");
            }
        }

        let redis = RedisServer::spawn().await?;
        let toml = Self::config_toml(
            &surfnet.rpc_url(),
            &fee_payer,
            &mint,
            &redis.url(),
            receipt_timeout_seconds,
        )
        .replace("[[svm.assets]]", &format!("{svm_keys}\n\n[[svm.assets]]"))
            + tail;
        let facilitator = TestFacilitator::start_with_toml(&toml).await?;
        Ok(SvmRpcFixture {
            facilitator,
            redis,
            surfnet,
            mint,
            token_program,
            payer,
            payer_ata,
            pay_to,
            pay_to_ata,
            fee_payer,
        })
    }

    /// The facilitator's configuration: Redis, one `[[svm]]` devnet network at `rpc_url` with
    /// `fee_payer` and the 6-decimal `mint`; no `[[evm]]`.
    pub fn config_toml(
        rpc_url: &str,
        fee_payer: &Keypair,
        mint: &Pubkey,
        redis_url: &str,
        receipt_timeout_seconds: u64,
    ) -> String {
        format!(
            r#"listen = "127.0.0.1:0"

[redis]
url = "{redis_url}"
key_prefix = "{KEY_PREFIX}"

[settle]
receipt_timeout_seconds = {receipt_timeout_seconds}
poll_interval_ms = 50

[[svm]]
network = "{SOLANA_DEVNET}"
rpc_url = "{rpc_url}"
fee_payer_keys = ["{fee_payer}"]

[[svm.assets]]
mint = "{mint}"
decimals = {USDC_DECIMALS}
"#,
            fee_payer = fee_payer.to_base58_string(),
        )
    }

    /// The payer's 64-byte keypair as base58 (secret then public key), for the peer scripts.
    pub fn payer_secret_base58(&self) -> String {
        self.payer.to_base58_string()
    }

    /// `extra` of the fixture's requirements: `{feePayer}`.
    pub fn extra(&self) -> Value {
        json!({ "feePayer": self.fee_payer.pubkey().to_string() })
    }

    /// v2 `PaymentRequirements` for `amount` atomic USDC to the payee.
    pub fn requirements_v2(&self, amount: u64) -> Value {
        v2_requirements_json(&self.mint, &self.pay_to, amount, &self.extra())
    }

    /// v1 `PaymentRequirements` (`solana-devnet`, `maxAmountRequired`) for `amount`.
    pub fn requirements_v1(&self, amount: u64) -> Value {
        v1_requirements_json(&self.mint, &self.pay_to, amount, &self.extra())
    }

    /// A v2 `/verify`–`/settle` body carrying `tx_b64` for [`SvmRpcFixture::requirements_v2`].
    pub fn body_v2(&self, tx_b64: &str, amount: u64) -> Value {
        v2_request_json(tx_b64, &self.mint, &self.pay_to, amount, &self.extra())
    }

    /// A v1 body carrying `tx_b64` for [`SvmRpcFixture::requirements_v1`].
    pub fn body_v1(&self, tx_b64: &str, amount: u64) -> Value {
        v1_request_json(tx_b64, &self.mint, &self.pay_to, amount, &self.extra())
    }

    /// The payer's partially signed payment of `amount` to the payee on `blockhash` (layout in
    /// the module documentation).
    pub fn payment_tx(&self, amount: u64, blockhash: Hash) -> anyhow::Result<VersionedTransaction> {
        self.payment_tx_to(&self.pay_to, amount, blockhash, false)
    }

    /// The payer's partially signed payment of `amount` to `owner`'s associated token account
    /// on `blockhash` ([`SvmPaymentBuilder`]); with `create_ata`, preceded by a
    /// `CreateIdempotent` of that account funded by the fee payer (the seed services' flow,
    /// allowed for configured owners only).
    pub fn payment_tx_to(
        &self,
        owner: &Pubkey,
        amount: u64,
        blockhash: Hash,
        create_ata: bool,
    ) -> anyhow::Result<VersionedTransaction> {
        let builder = SvmPaymentBuilder::new(
            self.payer.clone(),
            self.fee_payer.pubkey(),
            self.mint,
            *owner,
            amount,
            blockhash,
        )
        .token_program(self.token_program);
        let builder = if create_ata {
            builder.create_destination()
        } else {
            builder
        };
        Ok(builder.build())
    }

    /// [`SvmRpcFixture::payment_tx`] on the latest blockhash, as the base64 `payload.transaction`.
    pub async fn payment_b64(&self, amount: u64) -> anyhow::Result<String> {
        let blockhash = self.surfnet.latest_blockhash().await?;
        Ok(to_base64(&self.payment_tx(amount, blockhash)?))
    }

    /// The signature the fee payer puts on the payment `tx_b64` (base58): its transaction id
    /// once settled (Ed25519 signatures are deterministic, so it is known before `/settle`).
    pub fn payment_signature(&self, tx_b64: &str) -> anyhow::Result<String> {
        let bytes = STANDARD
            .decode(tx_b64)
            .context("payment transaction base64")?;
        let tx: VersionedTransaction =
            bincode::deserialize(&bytes).context("payment transaction bytes")?;
        Ok(self
            .fee_payer
            .sign_message(&tx.message.serialize())
            .to_string())
    }

    /// USDC of the payer's token account, atomic units.
    pub async fn payer_balance(&self) -> anyhow::Result<u64> {
        self.token_balance(&self.payer_ata).await
    }

    /// USDC of the payee's token account, atomic units.
    pub async fn pay_to_balance(&self) -> anyhow::Result<u64> {
        self.token_balance(&self.pay_to_ata).await
    }

    async fn token_balance(&self, ata: &Pubkey) -> anyhow::Result<u64> {
        self.surfnet
            .token_balance(ata)
            .await?
            .with_context(|| format!("token account {ata} does not exist"))
    }

    /// The status of `signature` (`getSignatureStatuses` with history): `null` when unknown,
    /// else `{slot, confirmations, err, confirmationStatus, …}`.
    pub async fn signature_status(&self, signature: &str) -> anyhow::Result<Value> {
        let statuses = self
            .surfnet
            .rpc(
                "getSignatureStatuses",
                json!([[signature], { "searchTransactionHistory": true }]),
            )
            .await?;
        Ok(statuses["value"][0].clone())
    }

    /// Polls [`SvmRpcFixture::signature_status`] until `confirmed`/`finalized` (or `timeout`).
    pub async fn wait_confirmed(
        &self,
        signature: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let start = tokio::time::Instant::now();
        loop {
            let status = self.signature_status(signature).await?;
            if matches!(
                status["confirmationStatus"].as_str(),
                Some("confirmed" | "finalized")
            ) {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!("{signature} not confirmed after {timeout:?}: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The facilitator's Redis key of the record of a Solana payment settled as `signature`
    /// (its replay key in its shard, [`x402_settle::replay::keys::Layout::record_key`]).
    pub fn replay_key(&self, signature: &str) -> String {
        x402_settle::replay::keys::Layout::new(
            KEY_PREFIX,
            x402_settle::replay::keys::DEFAULT_SHARDS,
        )
        .record_key(&format!(
            "{KEY_PREFIX}:replay:svm:{SOLANA_DEVNET}:{signature}"
        ))
    }

    /// `TTL key` in the fixture's Redis: seconds left, -1 without expiry, -2 when absent.
    pub async fn redis_ttl(&self, key: &str) -> anyhow::Result<i64> {
        let client = redis::Client::open(self.redis.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        Ok(redis::cmd("TTL").arg(key).query_async(&mut conn).await?)
    }

    /// Keys in the fixture's Redis matching `pattern` (`KEYS`; the store is tiny).
    pub async fn redis_keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let client = redis::Client::open(self.redis.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        Ok(redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await?)
    }
}

/// Base64 (standard, padded) of the bincode-serialized transaction.
/// A random 32-byte hash: a blockhash the cluster has never produced.
pub fn random_blockhash() -> Hash {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    Hash::new_from_array(bytes)
}
