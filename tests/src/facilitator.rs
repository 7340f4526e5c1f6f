//! The facilitator under test, served in-process over real HTTP on 127.0.0.1, and a fixture
//! with everything one EVM payment needs.
//!
//! Accounts of the fixture (anvil dev keys): 0 USDC owner/minter, 1 facilitator signer (pays
//! gas), 2 payer (funded with [`EvmFixture::PAYER_FUNDS`] atomic USDC), 3 payee (`payTo`).

use std::net::TcpListener;
use std::sync::Arc;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use x402_facilitator::SchemeHandler;
use x402_facilitator::config::Config;

use crate::eip3009::ExactEvmRequirements;
use crate::{Anvil, Usdc};

/// A running facilitator; stopped on drop.
pub struct TestFacilitator {
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl TestFacilitator {
    /// The TOML configuration used for `anvil` (chain 8453, Base USDC) with signer `signer_key`
    /// and, if given, Redis at `redis_url` (else the in-memory store).
    pub fn config_toml(anvil: &Anvil, signer_key: &str, redis_url: Option<&str>) -> String {
        Self::config_toml_with_timeout(anvil, signer_key, redis_url, 10)
    }

    /// [`TestFacilitator::config_toml`] with a receipt timeout of `receipt_timeout_seconds`.
    pub fn config_toml_with_timeout(
        anvil: &Anvil,
        signer_key: &str,
        redis_url: Option<&str>,
        receipt_timeout_seconds: u64,
    ) -> String {
        let settle = format!(
            "[settle]\nreceipt_timeout_seconds = {receipt_timeout_seconds}\npoll_interval_ms = 50\n"
        );
        Self::config_toml_custom(anvil, anvil.rpc_url(), signer_key, redis_url, &settle)
    }

    /// The configuration for `anvil` reached at `rpc_url` (e.g. through a relay) with signer
    /// `signer_key`, Redis at `redis_url` (else in-memory) and the whole `[settle]` table
    /// `settle`.
    pub fn config_toml_custom(
        anvil: &Anvil,
        rpc_url: &str,
        signer_key: &str,
        redis_url: Option<&str>,
        settle: &str,
    ) -> String {
        let redis = redis_url
            .map(|u| format!("[redis]\nurl = \"{u}\"\n"))
            .unwrap_or_default();
        format!(
            r#"listen = "127.0.0.1:0"
{redis}
{settle}
[[evm]]
chain_id = {chain_id}
rpc_url = "{rpc_url}"
signer_private_keys = ["{signer_key}"]

[[evm.assets]]
address = "{usdc}"
name = "USD Coin"
version = "2"
"#,
            chain_id = anvil.chain_id(),
            usdc = crate::BASE_USDC,
        )
    }

    /// Starts the facilitator from TOML text on a free loopback port.
    pub async fn start_with_toml(toml: &str) -> anyhow::Result<Self> {
        Self::start_with_handlers(toml, Vec::new()).await
    }

    /// [`TestFacilitator::start_with_toml`] with `extra` scheme handlers registered next to
    /// the configured ones.
    pub async fn start_with_handlers(
        toml: &str,
        extra: Vec<Arc<dyn SchemeHandler>>,
    ) -> anyhow::Result<Self> {
        let config = Config::from_toml(toml)?.validate()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = x402_facilitator::start_with(&config, listener, extra).await?;
        let handle = server.handle();
        tokio::spawn(server);
        Ok(TestFacilitator { url, handle })
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` to `path` and returns the HTTP status and JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        post_json(&self.url, path, body).await
    }

    /// GETs `path` and returns the HTTP status and body text.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = reqwest::get(format!("{}{path}", self.url)).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }
}

impl TestFacilitator {
    /// GETs `path` until `accept(status, body)` holds (every 100 ms, at most `timeout`);
    /// returns the last answer either way. For `/health/ready`, which answers the last
    /// background check (`[health] refresh_seconds`), not a check of its own.
    pub async fn get_until(
        &self,
        path: &str,
        timeout: std::time::Duration,
        accept: impl Fn(u16, &str) -> bool,
    ) -> anyhow::Result<(u16, String)> {
        let start = std::time::Instant::now();
        loop {
            let (status, body) = self.get(path).await?;
            if accept(status, &body) || start.elapsed() > timeout {
                return Ok((status, body));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// POSTs `body` as JSON to `base` + `path`: the HTTP status and the JSON answer.
pub async fn post_json(base: &str, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

impl Drop for TestFacilitator {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// anvil + real USDC + a funded payer + the facilitator.
pub struct EvmFixture {
    /// The chain.
    pub anvil: Anvil,
    /// The token at the Base USDC address.
    pub usdc: Usdc,
    /// The facilitator.
    pub facilitator: TestFacilitator,
    /// The payer's key (account 2).
    pub payer: PrivateKeySigner,
    /// The payee (account 3).
    pub pay_to: Address,
    /// The facilitator's signer address (account 1).
    pub facilitator_signer: Address,
}

impl EvmFixture {
    /// Atomic USDC minted to the payer (100 USDC).
    pub const PAYER_FUNDS: u64 = 100_000_000;

    /// Starts everything; `redis_url` None uses the in-memory replay store.
    pub async fn start(redis_url: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with_timeout(redis_url, 10).await
    }

    /// [`EvmFixture::start`] with a receipt timeout of `receipt_timeout_seconds` per `/settle`.
    pub async fn start_with_timeout(
        redis_url: Option<&str>,
        receipt_timeout_seconds: u64,
    ) -> anyhow::Result<Self> {
        Self::start_custom(
            Anvil::spawn().await?,
            redis_url,
            receipt_timeout_seconds,
            "",
        )
        .await
    }

    /// Everything on a given `anvil`, with `extra_toml` appended to the facilitator's
    /// configuration (e.g. an `[evm.gas]` table, which then belongs to the one `[[evm]]`).
    pub async fn start_custom(
        anvil: Anvil,
        redis_url: Option<&str>,
        receipt_timeout_seconds: u64,
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        Self::start_edited(anvil, redis_url, receipt_timeout_seconds, |toml| {
            toml + extra_toml
        })
        .await
    }

    /// Everything on a given `anvil`, the facilitator's configuration passed through `edit`
    /// first (e.g. to add a key to the `[[evm]]` table).
    pub async fn start_edited(
        anvil: Anvil,
        redis_url: Option<&str>,
        receipt_timeout_seconds: u64,
        edit: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Self> {
        let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await?;
        let payer = anvil.signer(2);
        usdc.mint(payer.address(), Self::PAYER_FUNDS).await?;
        let toml = edit(TestFacilitator::config_toml_with_timeout(
            &anvil,
            crate::DEV_PRIVATE_KEYS[1],
            redis_url,
            receipt_timeout_seconds,
        ));
        let facilitator = TestFacilitator::start_with_toml(&toml).await?;
        Ok(EvmFixture {
            pay_to: anvil.address(3),
            facilitator_signer: anvil.address(1),
            anvil,
            usdc,
            facilitator,
            payer,
        })
    }

    /// Requirements for `amount` atomic USDC to the payee.
    pub fn requirements(&self, amount: u64) -> ExactEvmRequirements {
        ExactEvmRequirements::base_usdc(amount, self.pay_to)
    }

    /// Transactions sent so far by the facilitator's signer (its mined nonce).
    pub async fn signer_tx_count(&self) -> anyhow::Result<u64> {
        use alloy::providers::Provider;
        Ok(self
            .anvil
            .provider()
            .get_transaction_count(self.facilitator_signer)
            .await?)
    }

    /// The payee's USDC balance in atomic units.
    pub async fn payee_balance(&self) -> anyhow::Result<U256> {
        self.usdc.balance_of(self.pay_to).await
    }
}
