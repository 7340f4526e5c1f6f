//! Test-side EIP-3009 signing and x402 `exact` EVM request bodies, written independently of the
//! facilitator's own code so the two check each other.
//!
//! Values are atomic token units (USDC: 6 decimals); times are Unix seconds.

use std::borrow::Cow;

use alloy::primitives::ruint::UintTryFrom;
use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use serde_json::{Value, json};

use crate::usdc::BASE_USDC;

sol! {
    /// The EIP-3009 typed-data struct signed by the payer.
    #[derive(Debug, PartialEq, Eq)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// An EIP-3009 `transferWithAuthorization` authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Payer (the signer, or an ERC-1271 wallet).
    pub from: Address,
    /// Recipient (x402 `payTo`).
    pub to: Address,
    /// Amount in atomic token units.
    pub value: U256,
    /// Valid strictly after this Unix time (seconds).
    pub valid_after: u64,
    /// Valid strictly before this Unix time (seconds).
    pub valid_before: u64,
    /// Unique 32-byte nonce.
    pub nonce: B256,
}

impl Authorization {
    /// An authorization valid from 10 minutes ago (as x402 clients do) until `valid_for_secs`
    /// seconds from now, with a random nonce.
    pub fn new<T>(from: Address, to: Address, value: T, valid_for_secs: u64) -> Self
    where
        U256: UintTryFrom<T>,
    {
        let now = unix_now();
        Authorization {
            from,
            to,
            value: U256::from(value),
            valid_after: now.saturating_sub(600),
            valid_before: now + valid_for_secs,
            nonce: random_nonce(),
        }
    }

    fn typed(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The x402 `authorization` JSON object (numbers as decimal strings, checksummed addresses).
    pub fn to_json(&self) -> Value {
        json!({
            "from": self.from.to_checksum(None),
            "to": self.to.to_checksum(None),
            "value": self.value.to_string(),
            "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(),
            "nonce": self.nonce.to_string(),
        })
    }
}

/// Current Unix time in seconds (the facilitator's own clock).
pub use x402_chain::clock::unix_now;

/// A random 32-byte nonce from the OS.
pub fn random_nonce() -> B256 {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    B256::from(bytes)
}

/// The EIP-712 domain `{name, version, chainId, verifyingContract}` of a token.
pub fn domain(
    name: &str,
    version: &str,
    chain_id: u64,
    verifying_contract: Address,
) -> Eip712Domain {
    Eip712Domain::new(
        Some(Cow::Owned(name.to_owned())),
        Some(Cow::Owned(version.to_owned())),
        Some(U256::from(chain_id)),
        Some(verifying_contract),
        None,
    )
}

/// The EIP-712 digest that the payer signs.
pub fn signing_hash(
    domain_name: &str,
    domain_version: &str,
    chain_id: u64,
    verifying_contract: Address,
    auth: &Authorization,
) -> B256 {
    auth.typed().eip712_signing_hash(&domain(
        domain_name,
        domain_version,
        chain_id,
        verifying_contract,
    ))
}

/// Signs `auth` and returns the signature (for the `(v, r, s)` overload: `sig.v_byte()`,
/// `sig.r()`, `sig.s()`).
pub fn sign_authorization_sig(
    signer: &PrivateKeySigner,
    domain_name: &str,
    domain_version: &str,
    chain_id: u64,
    verifying_contract: Address,
    auth: &Authorization,
) -> anyhow::Result<Signature> {
    let hash = signing_hash(
        domain_name,
        domain_version,
        chain_id,
        verifying_contract,
        auth,
    );
    Ok(signer.sign_hash_sync(&hash)?)
}

/// Signs `auth` and returns the 65-byte signature as `0x` + 130 hex chars (`r‖s‖v`, v = 27/28).
pub fn sign_authorization(
    signer: &PrivateKeySigner,
    domain_name: &str,
    domain_version: &str,
    chain_id: u64,
    verifying_contract: Address,
    auth: &Authorization,
) -> anyhow::Result<String> {
    let sig = sign_authorization_sig(
        signer,
        domain_name,
        domain_version,
        chain_id,
        verifying_contract,
        auth,
    )?;
    Ok(format!(
        "0x{}",
        alloy::primitives::hex::encode(sig.as_bytes())
    ))
}

/// x402 v1 network name of an EVM chain id (`base`, `base-sepolia`, …), if known.
pub fn v1_network_name(chain_id: u64) -> Option<&'static str> {
    Some(match chain_id {
        1 => "ethereum",
        11155111 => "sepolia",
        8453 => "base",
        84532 => "base-sepolia",
        43114 => "avalanche",
        43113 => "avalanche-fuji",
        137 => "polygon",
        80002 => "polygon-amoy",
        _ => return None,
    })
}

/// What a resource server asks for in an `exact` EVM payment (both x402 versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactEvmRequirements {
    /// EVM chain id (network `eip155:<chain_id>` in v2, its name in v1).
    pub chain_id: u64,
    /// Price in atomic token units (v2 `amount`, v1 `maxAmountRequired`).
    pub amount: U256,
    /// Token contract.
    pub asset: Address,
    /// Recipient.
    pub pay_to: Address,
    /// Seconds the payment may take.
    pub max_timeout_seconds: u64,
    /// EIP-712 domain name of the token (`extra.name`).
    pub name: String,
    /// EIP-712 domain version of the token (`extra.version`).
    pub version: String,
    /// v1 only: the resource URL.
    pub resource: String,
}

impl ExactEvmRequirements {
    /// `amount` atomic USDC on Base (chain 8453, [`BASE_USDC`], "USD Coin"/"2") to `pay_to`,
    /// 60 s timeout.
    pub fn base_usdc<T>(amount: T, pay_to: Address) -> Self
    where
        U256: UintTryFrom<T>,
    {
        ExactEvmRequirements {
            chain_id: 8453,
            amount: U256::from(amount),
            asset: BASE_USDC,
            pay_to,
            max_timeout_seconds: 60,
            name: "USD Coin".into(),
            version: "2".into(),
            resource: "http://127.0.0.1/resource".into(),
        }
    }

    /// v2 `PaymentRequirements` JSON.
    pub fn v2_json(&self) -> Value {
        json!({
            "scheme": "exact",
            "network": format!("eip155:{}", self.chain_id),
            "amount": self.amount.to_string(),
            "asset": self.asset.to_checksum(None),
            "payTo": self.pay_to.to_checksum(None),
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": {"name": self.name, "version": self.version},
        })
    }

    /// v1 `PaymentRequirements` JSON (network by name; panics on a chain without a v1 name).
    pub fn v1_json(&self) -> Value {
        let network = v1_network_name(self.chain_id).expect("chain has a v1 network name");
        json!({
            "scheme": "exact",
            "network": network,
            "maxAmountRequired": self.amount.to_string(),
            "resource": self.resource,
            "description": "x402 test resource",
            "mimeType": "application/json",
            "payTo": self.pay_to.to_checksum(None),
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "asset": self.asset.to_checksum(None),
            "extra": {"name": self.name, "version": self.version},
        })
    }

    /// An authorization from `signer` to `pay_to` for exactly `amount`, valid for
    /// `max_timeout_seconds`, and its signature under this token's domain.
    pub fn authorize(&self, signer: &PrivateKeySigner) -> anyhow::Result<(Authorization, String)> {
        let auth = Authorization::new(
            signer.address(),
            self.pay_to,
            self.amount,
            self.max_timeout_seconds,
        );
        let sig = sign_authorization(
            signer,
            &self.name,
            &self.version,
            self.chain_id,
            self.asset,
            &auth,
        )?;
        Ok((auth, sig))
    }
}

/// The `exact` EVM `payload` object: `{"signature", "authorization": {…}}`.
pub fn exact_evm_payload(signature: &str, auth: &Authorization) -> Value {
    json!({"signature": signature, "authorization": auth.to_json()})
}

/// The v2 `/verify` and `/settle` body; `accepted` and `paymentRequirements` are both
/// `requirements` (from [`ExactEvmRequirements::v2_json`], possibly edited).
pub fn v2_evm_payment_json(requirements: &Value, signature: &str, auth: &Authorization) -> Value {
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "accepted": requirements,
            "payload": exact_evm_payload(signature, auth),
        },
        "paymentRequirements": requirements,
    })
}

/// The v1 `/verify` and `/settle` body; `scheme`/`network` of the payload are copied from
/// `requirements` (from [`ExactEvmRequirements::v1_json`], possibly edited).
pub fn v1_evm_payment_json(requirements: &Value, signature: &str, auth: &Authorization) -> Value {
    json!({
        "x402Version": 1,
        "paymentPayload": {
            "x402Version": 1,
            "scheme": requirements["scheme"],
            "network": requirements["network"],
            "payload": exact_evm_payload(signature, auth),
        },
        "paymentRequirements": requirements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, b256};

    fn kat() -> Authorization {
        Authorization {
            from: address!("0x857b06519E91e3A54538791bDbb0E22373e36b66"),
            to: address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C"),
            value: U256::from(10000u64),
            valid_after: 1740672089,
            valid_before: 1740672154,
            nonce: b256!("0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"),
        }
    }

    const KAT_SIG: &str = "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c";

    fn recover(name: &str) -> Address {
        let sig = Signature::from_raw(&alloy::primitives::hex::decode(KAT_SIG).unwrap()).unwrap();
        let hash = signing_hash(name, "2", 84532, crate::usdc::BASE_SEPOLIA_USDC, &kat());
        sig.recover_address_from_prehash(&hash).unwrap()
    }

    #[test]
    fn known_answer_vector_recovers_to_from() {
        assert_eq!(recover("USDC"), kat().from);
        assert_ne!(recover("USD Coin"), kat().from);
    }

    #[test]
    fn own_signature_recovers_and_has_v_27_or_28() {
        let signer = PrivateKeySigner::random();
        let auth = Authorization::new(signer.address(), Address::ZERO, 5u64, 60);
        let hex = sign_authorization(&signer, "USD Coin", "2", 8453, BASE_USDC, &auth).unwrap();
        let bytes = alloy::primitives::hex::decode(&hex).unwrap();
        assert_eq!(bytes.len(), 65);
        assert!(bytes[64] == 27 || bytes[64] == 28);
        let sig = Signature::from_raw(&bytes).unwrap();
        let hash = signing_hash("USD Coin", "2", 8453, BASE_USDC, &auth);
        assert_eq!(
            sig.recover_address_from_prehash(&hash).unwrap(),
            signer.address()
        );
    }

    #[test]
    fn v2_body_shape() {
        let pay_to = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
        let req = ExactEvmRequirements::base_usdc(13938u64, pay_to).v2_json();
        let body = v2_evm_payment_json(&req, "0x00", &kat());
        assert_eq!(body["paymentRequirements"]["amount"], "13938");
        assert_eq!(body["paymentRequirements"]["network"], "eip155:8453");
        assert_eq!(
            body["paymentRequirements"]["asset"],
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
        );
        assert_eq!(body["paymentPayload"]["accepted"], req);
        let auth = &body["paymentPayload"]["payload"]["authorization"];
        assert_eq!(auth["from"], "0x857b06519E91e3A54538791bDbb0E22373e36b66");
        assert_eq!(auth["validBefore"], "1740672154");
        let v1 = ExactEvmRequirements::base_usdc(1u64, pay_to).v1_json();
        let body = v1_evm_payment_json(&v1, "0x00", &kat());
        assert_eq!(body["paymentPayload"]["network"], "base");
        assert_eq!(body["paymentRequirements"]["maxAmountRequired"], "1");
    }
}
