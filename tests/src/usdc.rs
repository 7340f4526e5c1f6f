//! Circle's real `FiatTokenV2_2` (USDC) deployed on anvil at the real Base USDC address.
//!
//! Amounts are atomic USDC units (6 decimals: `1_000_000` = 1 USDC).

use alloy::network::{ReceiptResponse, TransactionBuilder};
use alloy::primitives::ruint::UintTryFrom;
use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, ensure};

use crate::anvil::Anvil;
use crate::artifacts::{self, Artifact};

/// USDC on Base mainnet (chain 8453); the default deployment address.
pub const BASE_USDC: Address = address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
/// USDC on Base Sepolia (chain 84532).
pub const BASE_SEPOLIA_USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");

pub use bindings::FiatToken;

/// `sol!` bindings (generated functions take the ABI's many arguments).
#[allow(clippy::too_many_arguments)]
mod bindings {
    use alloy::sol;

    sol! {
        /// The parts of Circle's `FiatTokenV2_2` ABI the harness and tests use.
        ///
        /// Overloads are numbered in declaration order: `transferWithAuthorization_0` is the
        /// `(…, uint8 v, bytes32 r, bytes32 s)` form, `transferWithAuthorization_1` the `(…, bytes)` form.
        #[sol(rpc, all_derives)]
        interface FiatToken {
            function initialize(string tokenName, string tokenSymbol, string tokenCurrency, uint8 tokenDecimals, address newMasterMinter, address newPauser, address newBlacklister, address newOwner) external;
            function initializeV2(string newName) external;
            function initializeV2_1(address lostAndFound) external;
            function initializeV2_2(address[] accountsToBlacklist, string newSymbol) external;
            function configureMinter(address minter, uint256 minterAllowedAmount) external returns (bool);
            function mint(address to, uint256 amount) external returns (bool);
            function name() external view returns (string);
            function symbol() external view returns (string);
            function version() external view returns (string);
            function decimals() external view returns (uint8);
            function totalSupply() external view returns (uint256);
            function balanceOf(address account) external view returns (uint256);
            function transfer(address to, uint256 value) external returns (bool);
            function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
            function DOMAIN_SEPARATOR() external view returns (bytes32);
            function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
            function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
            function blacklist(address account) external;
            function pause() external;
            function unpause() external;
            event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
            event Transfer(address indexed from, address indexed to, uint256 value);
        }
    }
}

/// A deployed, initialized `FiatTokenV2_2`; `owner` is owner, master minter, pauser, blacklister
/// and a minter.
#[derive(Clone)]
pub struct Usdc {
    address: Address,
    owner: Address,
    token: FiatToken::FiatTokenInstance<DynProvider>,
}

impl Usdc {
    /// Deploys USDC at [`BASE_USDC`] named "USD Coin" (EIP-712 domain "USD Coin"/"2").
    pub async fn deploy(anvil: &Anvil, owner: PrivateKeySigner) -> anyhow::Result<Usdc> {
        Self::deploy_custom(anvil, owner, BASE_USDC, "USD Coin").await
    }

    /// Deploys the token at `at` with token name (= EIP-712 domain name) `name`, e.g.
    /// (`BASE_SEPOLIA_USDC`, "USDC"). The version is always "2", decimals 6.
    pub async fn deploy_custom(
        anvil: &Anvil,
        owner: PrivateKeySigner,
        at: Address,
        name: &str,
    ) -> anyhow::Result<Usdc> {
        let owner_addr = owner.address();
        let provider = anvil.wallet_provider(owner);
        let checker = Artifact::load(artifacts::SIGNATURE_CHECKER)?;
        let checker_addr = deploy_code(&provider, checker.linked_bytecode(&[])?).await?;
        let token = Artifact::load(artifacts::FIAT_TOKEN_V2_2)?;
        let code = token.linked_bytecode(&[("SignatureChecker", checker_addr)])?;
        let implementation = deploy_code(&provider, code).await?;
        let runtime = provider.get_code_at(implementation).await?;
        ensure!(!runtime.is_empty(), "FiatTokenV2_2 runtime code is empty");
        provider
            .raw_request::<_, ()>("anvil_setCode".into(), (at, runtime))
            .await
            .context("anvil_setCode")?;

        let t = FiatToken::new(at, provider);
        let o = owner_addr;
        confirm(
            t.initialize(name.into(), "USDC".into(), "USD".into(), 6, o, o, o, o)
                .send()
                .await?,
        )
        .await?;
        confirm(t.initializeV2(name.into()).send().await?).await?;
        confirm(t.initializeV2_1(o).send().await?).await?;
        confirm(t.initializeV2_2(vec![], "USDC".into()).send().await?).await?;
        confirm(t.configureMinter(o, U256::from(u128::MAX)).send().await?).await?;
        Ok(Usdc {
            address: at,
            owner: o,
            token: t,
        })
    }

    /// The token address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The owner / minter address.
    pub fn owner(&self) -> Address {
        self.owner
    }

    /// The token contract bound to the owner's wallet provider, for any other call.
    pub fn contract(&self) -> &FiatToken::FiatTokenInstance<DynProvider> {
        &self.token
    }

    /// The token contract bound to `provider` (e.g. [`Anvil::wallet_provider`] of another account).
    pub fn contract_with(
        &self,
        provider: DynProvider,
    ) -> FiatToken::FiatTokenInstance<DynProvider> {
        FiatToken::new(self.address, provider)
    }

    /// Mints `amount` atomic units (6 decimals) to `to` (any integer type; panics if negative).
    pub async fn mint<T>(&self, to: Address, amount: T) -> anyhow::Result<()>
    where
        U256: UintTryFrom<T>,
    {
        confirm(self.token.mint(to, U256::from(amount)).send().await?).await?;
        Ok(())
    }

    /// Balance of `account` in atomic units (6 decimals).
    pub async fn balance_of(&self, account: Address) -> anyhow::Result<U256> {
        Ok(self.token.balanceOf(account).call().await?)
    }

    /// Whether the EIP-3009 authorization `nonce` of `authorizer` was used (or canceled).
    pub async fn authorization_state(
        &self,
        authorizer: Address,
        nonce: B256,
    ) -> anyhow::Result<bool> {
        Ok(self
            .token
            .authorizationState(authorizer, nonce)
            .call()
            .await?)
    }

    /// Deploys Circle's `MockERC1271Wallet` whose `isValidSignature` accepts ECDSA signatures of
    /// `wallet_owner` over the hash; returns the wallet address. Fund it with [`Usdc::mint`].
    pub async fn deploy_erc1271_wallet(
        anvil: &Anvil,
        deployer: PrivateKeySigner,
        wallet_owner: Address,
    ) -> anyhow::Result<Address> {
        let artifact = Artifact::load(artifacts::MOCK_ERC1271_WALLET)?;
        let mut code = artifact.linked_bytecode(&[])?.to_vec();
        code.extend_from_slice(wallet_owner.into_word().as_slice());
        deploy_code(&anvil.wallet_provider(deployer), code.into()).await
    }
}

/// Deploys creation `code` from the provider's wallet and returns the contract address.
pub async fn deploy_code(provider: &DynProvider, code: Bytes) -> anyhow::Result<Address> {
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = confirm(provider.send_transaction(tx).await?).await?;
    receipt
        .contract_address()
        .context("deployment receipt without contract address")
}

/// Waits for the receipt of a sent transaction (polling every 10 ms, up to 30 s) and fails if it
/// reverted. Faster than `get_receipt` on an automining anvil.
pub async fn confirm(
    pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
) -> anyhow::Result<TransactionReceipt> {
    let hash = *pending.tx_hash();
    let provider = pending.provider().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(hash).await? {
            ensure!(receipt.status(), "transaction {hash} reverted");
            return Ok(receipt);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no receipt for {hash} after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
