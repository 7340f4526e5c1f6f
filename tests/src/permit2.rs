//! Permit2 on anvil for the `exact` Permit2 tests: Permit2's canonical runtime bytecode (from
//! npm `@uniswap/v4-periphery` 1.0.3, installed by `scripts/install-tools.sh`) and this
//! project's own `X402ExactPermit2Proxy` (`tests/contracts/X402Permit2Proxies.sol`, compiled
//! with npm `solc`) placed at their canonical addresses with `anvil_setCode`; a plain ERC-20
//! without EIP-3009 (`tests/contracts/PlainErc20.sol`); and test-side Permit2 signing, written
//! independently of the facilitator's code so the two check each other.
//!
//! Values are atomic token units; times Unix seconds.

use alloy::primitives::{Address, Bytes, U256, address};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolStruct, eip712_domain};
use anyhow::Context;
use serde_json::{Value, json};

use crate::Anvil;
use crate::eip3009::unix_now;
use crate::solc::compile;
use crate::tools::{PERMIT2_HEX_REL, ensure_installed, tools_dir};
use crate::usdc::{confirm, deploy_code};

/// Permit2's canonical address.
pub const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");
/// `x402ExactPermit2Proxy`'s canonical address.
pub const EXACT_PROXY: Address = address!("0x402085c248EeA27D92E8b30b2C58ed07f9E20001");
/// `x402UptoPermit2Proxy`'s canonical address.
pub const UPTO_PROXY: Address = address!("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// The `upto` message (its witness names the facilitator): its own module, EIP-712 types being
/// named by their name.
mod upto_types {
    alloy::sol! {
        #[derive(Debug)]
        struct TokenPermissions {
            address token;
            uint256 amount;
        }

        #[derive(Debug)]
        struct Witness {
            address to;
            address facilitator;
            uint256 validAfter;
        }

        /// What an `upto` payer signs.
        #[derive(Debug)]
        struct PermitWitnessTransferFrom {
            TokenPermissions permitted;
            address spender;
            uint256 nonce;
            uint256 deadline;
            Witness witness;
        }
    }
}

sol! {
    #[derive(Debug)]
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    #[derive(Debug)]
    struct Witness {
        address to;
        uint256 validAfter;
    }

    /// What the payer signs (Permit2's witness transfer with the x402 exact witness).
    #[derive(Debug)]
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }

    /// EIP-2612 `Permit` (USDC's FiatTokenV2_2 implements it).
    #[derive(Debug)]
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }

    #[sol(rpc)]
    interface PlainToken {
        function mint(address to, uint256 amount) external;
        function setFrozen(bool on) external;
        function approve(address spender, uint256 amount) external returns (bool);
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
    }

    #[sol(rpc)]
    interface Permit2Nonces {
        function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external;
        function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);
    }
}

/// Places Permit2 and the exact and upto proxies at their canonical addresses on `anvil`.
pub async fn install_contracts(anvil: &Anvil) -> anyhow::Result<()> {
    ensure_installed()?;
    let hex = std::fs::read_to_string(tools_dir().join(PERMIT2_HEX_REL))
        .context("Permit2 bytecode (run scripts/install-tools.sh)")?;
    let permit2: Bytes = format!("0x{}", hex.trim()).parse().context("Permit2 hex")?;
    set_code(anvil, PERMIT2, permit2).await?;
    let proxy = compile("X402Permit2Proxies.sol", "X402ExactPermit2Proxy")?;
    set_code(anvil, EXACT_PROXY, proxy.deployed_bytecode).await?;
    let upto = compile("X402Permit2Proxies.sol", "X402UptoPermit2Proxy")?;
    set_code(anvil, UPTO_PROXY, upto.deployed_bytecode).await
}

/// `anvil_setCode(at, code)`.
pub async fn set_code(anvil: &Anvil, at: Address, code: Bytes) -> anyhow::Result<()> {
    anvil
        .provider()
        .raw_request::<_, ()>("anvil_setCode".into(), (at, code))
        .await
        .context("anvil_setCode")
}

/// A deployed [`PlainToken`] (18 decimals, anyone mints).
pub struct Plain {
    /// Its address.
    pub address: Address,
}

impl Plain {
    /// Deploys one from account 0.
    pub async fn deploy(anvil: &Anvil) -> anyhow::Result<Plain> {
        let compiled = compile("PlainErc20.sol", "PlainErc20")?;
        let address =
            deploy_code(&anvil.wallet_provider(anvil.signer(0)), compiled.bytecode).await?;
        Ok(Plain { address })
    }

    /// Mints `amount` to `to`.
    pub async fn mint(&self, anvil: &Anvil, to: Address, amount: U256) -> anyhow::Result<()> {
        let t = PlainToken::new(self.address, anvil.wallet_provider(anvil.signer(0)));
        confirm(t.mint(to, amount).send().await?).await?;
        Ok(())
    }

    /// `balanceOf(account)`.
    pub async fn balance_of(&self, anvil: &Anvil, account: Address) -> anyhow::Result<U256> {
        Ok(PlainToken::new(self.address, anvil.provider())
            .balanceOf(account)
            .call()
            .await?)
    }

    /// `from` sends its whole balance to `to` with a high tip and a fixed gas limit (no
    /// estimate), so that it lands before, and in the same block as, a pending settlement of
    /// `from`'s tokens, which then reverts. Waits for the receipt (mine meanwhile).
    pub async fn drain_before_pending(
        &self,
        anvil: &Anvil,
        from: &PrivateKeySigner,
        to: Address,
    ) -> anyhow::Result<alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>> {
        let balance = self.balance_of(anvil, from.address()).await?;
        let t = PlainToken::new(self.address, anvil.wallet_provider(from.clone()));
        Ok(t.transfer(to, balance)
            .gas(100_000)
            .max_priority_fee_per_gas(50_000_000_000)
            .max_fee_per_gas(100_000_000_000)
            .send()
            .await?)
    }

    /// Freezes (every transfer reverts) or unfreezes the token.
    pub async fn set_frozen(&self, anvil: &Anvil, on: bool) -> anyhow::Result<()> {
        let t = PlainToken::new(self.address, anvil.wallet_provider(anvil.signer(0)));
        confirm(t.setFrozen(on).send().await?).await?;
        Ok(())
    }
}

/// `owner` approves Permit2 for `amount` of `token` (any ERC-20).
pub async fn approve_permit2(
    anvil: &Anvil,
    owner: &PrivateKeySigner,
    token: Address,
    amount: U256,
) -> anyhow::Result<()> {
    let t = PlainToken::new(token, anvil.wallet_provider(owner.clone()));
    confirm(t.approve(PERMIT2, amount).send().await?).await?;
    Ok(())
}

/// `owner` burns its Permit2 nonce `nonce` (`invalidateUnorderedNonces`).
pub async fn burn_nonce(
    anvil: &Anvil,
    owner: &PrivateKeySigner,
    nonce: U256,
) -> anyhow::Result<()> {
    let p = Permit2Nonces::new(PERMIT2, anvil.wallet_provider(owner.clone()));
    let mask = U256::from(1) << (nonce & U256::from(0xff)).to::<usize>();
    confirm(p.invalidateUnorderedNonces(nonce >> 8, mask).send().await?).await?;
    Ok(())
}

/// Whether Permit2's nonce bit of `owner`'s `nonce` is set.
pub async fn nonce_used(anvil: &Anvil, owner: Address, nonce: U256) -> anyhow::Result<bool> {
    let p = Permit2Nonces::new(PERMIT2, anvil.provider());
    let word = p.nonceBitmap(owner, nonce >> 8).call().await?;
    Ok(word.bit((nonce & U256::from(0xff)).to::<usize>()))
}

/// A Permit2 authorization (`exact`, or `upto` when `facilitator` is set), as the payer signs
/// it.
#[derive(Debug, Clone)]
pub struct Permit2Auth {
    /// `upto`: the facilitator signer named in the witness (spender: the upto proxy).
    pub facilitator: Option<Address>,
    /// Payer.
    pub from: Address,
    /// Token.
    pub token: Address,
    /// Amount, atomic units.
    pub amount: U256,
    /// Spender (the proxy).
    pub spender: Address,
    /// Permit2 nonce.
    pub nonce: U256,
    /// Unix seconds.
    pub deadline: u64,
    /// Recipient.
    pub to: Address,
    /// Unix seconds.
    pub valid_after: u64,
}

impl Permit2Auth {
    /// `amount` of `token` from `from` to `to` through the exact proxy, a random nonce,
    /// deadline `valid_for_secs` ahead, valid from 10 minutes ago.
    pub fn new(
        from: Address,
        token: Address,
        amount: U256,
        to: Address,
        valid_for_secs: u64,
    ) -> Self {
        let now = unix_now();
        Permit2Auth {
            facilitator: None,
            from,
            token,
            amount,
            spender: EXACT_PROXY,
            nonce: U256::from_be_bytes(crate::eip3009::random_nonce().0),
            deadline: now + valid_for_secs,
            to,
            valid_after: now.saturating_sub(600),
        }
    }

    /// An `upto` authorization of at most `max` through the upto proxy, naming `facilitator`
    /// (otherwise as [`Permit2Auth::new`]).
    pub fn upto(
        from: Address,
        token: Address,
        max: U256,
        to: Address,
        facilitator: Address,
        valid_for_secs: u64,
    ) -> Self {
        Permit2Auth {
            facilitator: Some(facilitator),
            spender: UPTO_PROXY,
            ..Self::new(from, token, max, to, valid_for_secs)
        }
    }

    /// Signs the Permit2 message on `chain_id` with `signer` (0x-hex, 65 bytes).
    pub fn sign(&self, signer: &PrivateKeySigner, chain_id: u64) -> anyhow::Result<String> {
        let domain = eip712_domain! {
            name: "Permit2",
            chain_id: chain_id,
            verifying_contract: PERMIT2,
        };
        if let Some(facilitator) = self.facilitator {
            let message = upto_types::PermitWitnessTransferFrom {
                permitted: upto_types::TokenPermissions {
                    token: self.token,
                    amount: self.amount,
                },
                spender: self.spender,
                nonce: self.nonce,
                deadline: U256::from(self.deadline),
                witness: upto_types::Witness {
                    to: self.to,
                    facilitator,
                    validAfter: U256::from(self.valid_after),
                },
            };
            let sig = signer.sign_hash_sync(&message.eip712_signing_hash(&domain))?;
            return Ok(format!("0x{}", alloy::hex::encode(sig.as_bytes())));
        }
        let message = PermitWitnessTransferFrom {
            permitted: TokenPermissions {
                token: self.token,
                amount: self.amount,
            },
            spender: self.spender,
            nonce: self.nonce,
            deadline: U256::from(self.deadline),
            witness: Witness {
                to: self.to,
                validAfter: U256::from(self.valid_after),
            },
        };
        let sig = signer.sign_hash_sync(&message.eip712_signing_hash(&domain))?;
        Ok(format!("0x{}", alloy::hex::encode(sig.as_bytes())))
    }

    /// The `permit2Authorization` JSON.
    pub fn to_json(&self) -> Value {
        let mut witness =
            json!({"to": self.to.to_checksum(None), "validAfter": self.valid_after.to_string()});
        if let Some(f) = self.facilitator {
            witness["facilitator"] = json!(f.to_checksum(None));
        }
        json!({
            "from": self.from.to_checksum(None),
            "permitted": {"token": self.token.to_checksum(None), "amount": self.amount.to_string()},
            "spender": self.spender.to_checksum(None),
            "nonce": self.nonce.to_string(),
            "deadline": self.deadline.to_string(),
            "witness": witness,
        })
    }
}

/// v2 requirements for `amount` of `asset` to `pay_to` on chain `chain_id` with
/// `extra.assetTransferMethod = "permit2"`.
pub fn requirements(chain_id: u64, asset: Address, amount: U256, pay_to: Address) -> Value {
    json!({
        "scheme": "exact",
        "network": format!("eip155:{chain_id}"),
        "amount": amount.to_string(),
        "asset": asset.to_checksum(None),
        "payTo": pay_to.to_checksum(None),
        "maxTimeoutSeconds": 60,
        "extra": {"assetTransferMethod": "permit2"},
    })
}

/// v2 `upto` requirements: at most `max` of `asset` to `pay_to` on chain `chain_id`, settled
/// by `facilitator`.
pub fn upto_requirements(
    chain_id: u64,
    asset: Address,
    max: U256,
    pay_to: Address,
    facilitator: Address,
) -> Value {
    let mut r = requirements(chain_id, asset, max, pay_to);
    r["scheme"] = json!("upto");
    r["extra"]["facilitatorAddress"] = json!(facilitator.to_checksum(None));
    r
}

/// The v2 `/settle` body of an `upto` payment verified under `verified` (the maximum),
/// charging `charge`: the settle requirements carry the charge as `amount`
/// (specs/schemes/upto/scheme_upto_evm.md "Settle-Time Verification").
pub fn upto_settle_body(verified: &Value, charge: u64) -> Value {
    let mut b = verified.clone();
    b["paymentRequirements"]["amount"] = json!(charge.to_string());
    b
}

/// The v2 `/verify` and `/settle` body of a Permit2 payment.
pub fn body(requirements: &Value, signature: &str, auth: &Permit2Auth) -> Value {
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "accepted": requirements,
            "payload": {"signature": signature, "permit2Authorization": auth.to_json()},
        },
        "paymentRequirements": requirements,
    })
}

/// anvil + Permit2 + the exact proxy + real USDC (EIP-3009 and Permit2) + a plain ERC-20
/// (Permit2 only) + the facilitator. Accounts: 0 deployer/minter, 1 facilitator signer,
/// 2 payer (funded with [`Permit2Fixture::FUNDS`] of both tokens, both approved to Permit2),
/// 3 payee.
pub struct Permit2Fixture {
    /// The chain.
    pub anvil: Anvil,
    /// USDC at the Base address.
    pub usdc: crate::Usdc,
    /// The plain token.
    pub plain: Plain,
    /// The facilitator.
    pub facilitator: crate::facilitator::TestFacilitator,
    /// The payer (account 2).
    pub payer: PrivateKeySigner,
    /// The payee (account 3).
    pub pay_to: Address,
}

impl Permit2Fixture {
    /// Atomic units of each token minted to the payer.
    pub const FUNDS: u64 = 100_000_000;

    /// Starts everything; `redis_url` None uses the in-memory replay store.
    pub async fn start(redis_url: Option<&str>) -> anyhow::Result<Self> {
        Self::start_edited(redis_url, |t| t).await
    }

    /// [`Permit2Fixture::start`] with the facilitator's TOML passed through `edit`.
    pub async fn start_edited(
        redis_url: Option<&str>,
        edit: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Self> {
        let anvil = Anvil::spawn().await?;
        install_contracts(&anvil).await?;
        let usdc = crate::Usdc::deploy(&anvil, anvil.signer(0)).await?;
        let plain = Plain::deploy(&anvil).await?;
        let payer = anvil.signer(2);
        usdc.mint(payer.address(), Self::FUNDS).await?;
        plain
            .mint(&anvil, payer.address(), U256::from(Self::FUNDS))
            .await?;
        approve_permit2(&anvil, &payer, plain.address, U256::MAX).await?;
        approve_permit2(&anvil, &payer, usdc.address(), U256::MAX).await?;
        let toml = edit(Self::config_toml(&anvil, plain.address, redis_url));
        let facilitator = crate::facilitator::TestFacilitator::start_with_toml(&toml).await?;
        Ok(Permit2Fixture {
            pay_to: anvil.address(3),
            anvil,
            usdc,
            plain,
            facilitator,
            payer,
        })
    }

    /// The facilitator configuration: USDC with both methods, the plain token with Permit2.
    pub fn config_toml(anvil: &Anvil, plain: Address, redis_url: Option<&str>) -> String {
        let redis = redis_url
            .map(|u| format!("[redis]\nurl = \"{u}\"\n"))
            .unwrap_or_default();
        format!(
            r#"listen = "127.0.0.1:0"
{redis}
[settle]
receipt_timeout_seconds = 10
poll_interval_ms = 50

[[evm]]
chain_id = {chain_id}
rpc_url = "{rpc_url}"
signer_private_keys = ["{key}"]

[[evm.assets]]
address = "{usdc}"
name = "USD Coin"
version = "2"
transfer_methods = ["eip3009", "permit2"]

[[evm.assets]]
address = "{plain}"
decimals = 18
transfer_methods = ["permit2"]
"#,
            chain_id = anvil.chain_id(),
            rpc_url = anvil.rpc_url(),
            key = crate::DEV_PRIVATE_KEYS[1],
            usdc = crate::BASE_USDC,
        )
    }

    /// A signed payment of `amount` plain tokens from the payer to the payee: requirements,
    /// the authorization and the body.
    pub fn plain_payment(&self, amount: u64) -> (Value, Permit2Auth, Value) {
        let req = requirements(
            self.anvil.chain_id(),
            self.plain.address,
            U256::from(amount),
            self.pay_to,
        );
        let auth = Permit2Auth::new(
            self.payer.address(),
            self.plain.address,
            U256::from(amount),
            self.pay_to,
            300,
        );
        let sig = auth
            .sign(&self.payer, self.anvil.chain_id())
            .expect("signs");
        let body = body(&req, &sig, &auth);
        (req, auth, body)
    }

    /// A signed `upto` payment of at most `max` plain tokens from the payer to the payee,
    /// naming the facilitator's signer (account 1): requirements, the authorization and the
    /// `/verify` body (settle it with [`upto_settle_body`]).
    pub fn plain_upto_payment(&self, max: u64) -> (Value, Permit2Auth, Value) {
        let facilitator = self.anvil.address(1);
        let req = upto_requirements(
            self.anvil.chain_id(),
            self.plain.address,
            U256::from(max),
            self.pay_to,
            facilitator,
        );
        let auth = Permit2Auth::upto(
            self.payer.address(),
            self.plain.address,
            U256::from(max),
            self.pay_to,
            facilitator,
            300,
        );
        let sig = auth
            .sign(&self.payer, self.anvil.chain_id())
            .expect("signs");
        let body = body(&req, &sig, &auth);
        (req, auth, body)
    }

    /// `/verify` of `body`: asserts a 200 `isValid: false` naming the authorization's `from` as
    /// payer, and returns the reason.
    pub async fn verify_reason(&self, body: &Value) -> String {
        let (status, answer) = self.facilitator.post("/verify", body).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["isValid"], false, "{answer}");
        assert_eq!(
            answer["payer"], body["paymentPayload"]["payload"]["permit2Authorization"]["from"],
            "{answer}"
        );
        answer["invalidReason"].as_str().unwrap().to_string()
    }

    /// `/settle` of `body`: asserts a 200 failure that broadcast nothing and returns the reason.
    pub async fn settle_reason(&self, body: &Value) -> String {
        let (status, answer) = self.facilitator.post("/settle", body).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["success"], false, "{answer}");
        assert_eq!(answer["transaction"], "", "{answer}");
        answer["errorReason"].as_str().unwrap().to_string()
    }

    /// The payee's plain-token balance.
    pub async fn payee_plain(&self) -> anyhow::Result<U256> {
        self.plain.balance_of(&self.anvil, self.pay_to).await
    }
}

/// `toml` (a [`Permit2Fixture::config_toml`]) offering `upto` beside `exact` on its network.
pub fn with_upto(toml: String) -> String {
    toml.replacen(
        "signer_private_keys =",
        "schemes = [\"exact\", \"upto\"]\nsigner_private_keys =",
        1,
    )
}

/// An `eip2612GasSponsoring` extension: `owner`'s EIP-2612 permit of `value` of `token` (EIP-712
/// domain `name`/`version` on `chain_id`) to `spender` at the token's `nonce`, valid until
/// `deadline`; `{"eip2612GasSponsoring": {"info": {…}}}`.
#[allow(clippy::too_many_arguments)]
pub fn eip2612_extension(
    owner: &PrivateKeySigner,
    token: Address,
    name: &str,
    version: &str,
    chain_id: u64,
    spender: Address,
    value: U256,
    nonce: u64,
    deadline: u64,
) -> anyhow::Result<Value> {
    let permit = Permit {
        owner: owner.address(),
        spender,
        value,
        nonce: U256::from(nonce),
        deadline: U256::from(deadline),
    };
    let domain = alloy::sol_types::Eip712Domain::new(
        Some(name.to_string().into()),
        Some(version.to_string().into()),
        Some(U256::from(chain_id)),
        Some(token),
        None,
    );
    let sig = owner.sign_hash_sync(&permit.eip712_signing_hash(&domain))?;
    Ok(json!({"eip2612GasSponsoring": {"info": {
        "from": owner.address().to_checksum(None),
        "asset": token.to_checksum(None),
        "spender": spender.to_checksum(None),
        "amount": value.to_string(),
        "nonce": nonce.to_string(),
        "deadline": deadline.to_string(),
        "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
        "version": "1",
    }}}))
}
