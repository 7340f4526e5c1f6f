//! The payer's signature: parsing, EOA recovery (ECDSA over the EIP-712 digest) and the
//! smart-wallet forms (ERC-1271, ERC-6492).
//!
//! Recovery runs on libsecp256k1 (the `secp256k1` crate), several times cheaper than the pure-Rust
//! `k256` path alloy uses by default: it is the largest CPU cost of a `/verify`.

use std::sync::LazyLock;

use alloy::primitives::{Address, B256, Bytes, U256, hex};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, Secp256k1, VerifyOnly};

/// One verification context for the process (creating one allocates; recovery only reads it).
static SECP: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// ERC-6492 magic suffix of a counterfactual (not yet deployed) wallet's signature.
const ERC6492_SUFFIX: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// secp256k1 order / 2: signatures with a larger `s` are malleable copies (EIP-2) and refused.
const SECP256K1_HALF_N: U256 = U256::from_be_slice(&hex!(
    "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0"
));

/// A parsed payer signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayerSignature {
    /// 65-byte `r ‖ s ‖ v` (v 0/1/27/28) or 64-byte EIP-2098 compact, as an ECDSA signature.
    Ecdsa(alloy::primitives::Signature),
    /// Anything longer: a smart-contract wallet signature checked with ERC-1271.
    Contract(Bytes),
    /// ERC-6492 wrapped signature of a wallet that may not be deployed yet.
    Erc6492(Bytes),
}

/// Why a signature could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureParseError {
    /// Not 0x-hex.
    #[error("signature is not 0x-prefixed hex")]
    NotHex,
    /// Too short to be any signature.
    #[error("signature has {0} bytes; expected 64, 65 or a smart-wallet signature")]
    BadLength(usize),
}

impl PayerSignature {
    /// Parses `0x…` hex. 64 and 65 bytes are ECDSA; longer ones are contract signatures
    /// (ERC-6492 when they end with its magic suffix).
    pub fn parse(hex_sig: &str) -> Result<Self, SignatureParseError> {
        let body = hex_sig
            .strip_prefix("0x")
            .ok_or(SignatureParseError::NotHex)?;
        let bytes = hex::decode(body).map_err(|_| SignatureParseError::NotHex)?;
        match bytes.len() {
            65 => {
                let v = bytes[64];
                let parity = match v {
                    0 | 27 => false,
                    1 | 28 => true,
                    _ => return Ok(PayerSignature::Contract(bytes.into())),
                };
                Ok(PayerSignature::Ecdsa(
                    alloy::primitives::Signature::from_bytes_and_parity(&bytes[..64], parity),
                ))
            }
            64 => Ok(PayerSignature::Ecdsa(
                alloy::primitives::Signature::from_erc2098(&bytes),
            )),
            n if n > 65 && bytes.ends_with(&ERC6492_SUFFIX) => {
                Ok(PayerSignature::Erc6492(bytes.into()))
            }
            n if n > 65 => Ok(PayerSignature::Contract(bytes.into())),
            n => Err(SignatureParseError::BadLength(n)),
        }
    }
}

/// Recovers the signer of `digest`; `None` for a high-s (malleable) or unrecoverable signature.
pub fn recover_ecdsa(sig: &alloy::primitives::Signature, digest: &B256) -> Option<Address> {
    if sig.s() > SECP256K1_HALF_N {
        return None;
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let recid = RecoveryId::try_from(i32::from(sig.v())).ok()?;
    // r or s zero or not below the group order: refused here (k256 refused them too).
    let recoverable = RecoverableSignature::from_compact(&compact, recid).ok()?;
    let key = SECP
        .recover_ecdsa(Message::from_digest(digest.0), &recoverable)
        .ok()?;
    Some(Address::from_raw_public_key(
        &key.serialize_uncompressed()[1..],
    ))
}

/// Whether `sig` is `signer`'s signature of `digest` (EIP-712): ECDSA recovery must give
/// `signer`; otherwise (`signer` has code) ERC-1271 `isValidSignature` must return its magic
/// value; an ERC-6492 signature of a wallet without code is refused
/// (`invalid_exact_evm_payload_undeployed_smart_wallet`). Other failures carry `bad` (the
/// scheme's invalid-signature reason) and name `signer_field`. `Ok(Ok(sig))` is the form that
/// verified (a 65-byte signature of a wallet becomes [`PayerSignature::Contract`]).
///
/// Errors: [`VerifyError::ChainUnavailable`] when the RPC cannot be reached.
pub async fn verify_payer_signature(
    chain: &dyn x402_chain::EvmChain,
    signer: Address,
    digest: B256,
    sig: PayerSignature,
    bad: x402_proto::Reason,
    signer_field: &str,
) -> Result<Result<PayerSignature, crate::Invalid>, crate::VerifyError> {
    use alloy::sol_types::{SolCall, SolValue};
    use x402_chain::eip3009::{ERC1271_MAGIC, IErc1271};
    let refuse = |msg: &str| Ok(Err(crate::Invalid::new(bad, msg, None)));
    let code = |at: Address| async move {
        chain
            .code_at(at)
            .await
            .map_err(|e| crate::VerifyError::ChainUnavailable(e.into()))
    };
    let contract_sig = match sig {
        PayerSignature::Ecdsa(ecdsa) => {
            if recover_ecdsa(&ecdsa, &digest) == Some(signer) {
                return Ok(Ok(PayerSignature::Ecdsa(ecdsa)));
            }
            Bytes::from(ecdsa.as_bytes().to_vec())
        }
        PayerSignature::Contract(bytes) => bytes,
        PayerSignature::Erc6492(wrapped) => {
            if code(signer).await?.is_empty() {
                return Ok(Err(crate::Invalid::new(
                    x402_proto::Reason::EvmUndeployedSmartWallet,
                    "ERC-6492 signature of an undeployed wallet",
                    None,
                )));
            }
            let inner = &wrapped[..wrapped.len() - 32];
            match <(Address, Bytes, Bytes)>::abi_decode_params(inner) {
                Ok((_, _, inner_sig)) => inner_sig,
                Err(_) => return refuse("malformed ERC-6492 wrapper"),
            }
        }
    };
    if code(signer).await?.is_empty() {
        return refuse(&format!("signature does not recover to {signer_field}"));
    }
    let call = IErc1271::isValidSignatureCall {
        hash: digest,
        signature: contract_sig.clone(),
    };
    let tx = alloy::rpc::types::TransactionRequest::default()
        .to(signer)
        .input(call.abi_encode().into());
    match chain.call(&tx).await {
        Ok(ret) if ret.len() >= 4 && ret[..4] == ERC1271_MAGIC => {
            Ok(Ok(PayerSignature::Contract(contract_sig)))
        }
        Ok(_) => refuse("ERC-1271 isValidSignature refused the signature"),
        Err(e) if e.node_message().is_some() => {
            refuse("ERC-1271 isValidSignature refused the signature")
        }
        Err(e) => Err(crate::VerifyError::ChainUnavailable(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libsecp256k1_recovery_agrees_with_k256() {
        use alloy::signers::SignerSync;
        use alloy::signers::local::PrivateKeySigner;
        for i in 0u8..32 {
            let signer = PrivateKeySigner::random();
            let digest = alloy::primitives::keccak256([i; 7]);
            let sig = signer.sign_hash_sync(&digest).unwrap();
            // alloy's signer produces low-s signatures.
            assert_eq!(recover_ecdsa(&sig, &digest), Some(signer.address()));
            assert_eq!(
                recover_ecdsa(&sig, &digest),
                sig.recover_address_from_prehash(&digest).ok()
            );
            // Another digest recovers some other key (or none), never the signer.
            let other = alloy::primitives::keccak256([i; 8]);
            assert_ne!(recover_ecdsa(&sig, &other), Some(signer.address()));
        }
        // r = 0, s = 0, r ≥ n: no key.
        let zero = alloy::primitives::Signature::new(U256::ZERO, U256::from(1u8), false);
        assert_eq!(recover_ecdsa(&zero, &B256::repeat_byte(1)), None);
        let zero_s = alloy::primitives::Signature::new(U256::from(1u8), U256::ZERO, false);
        assert_eq!(recover_ecdsa(&zero_s, &B256::repeat_byte(1)), None);
        let big_r = alloy::primitives::Signature::new(U256::MAX, U256::from(1u8), true);
        assert_eq!(recover_ecdsa(&big_r, &B256::repeat_byte(1)), None);
    }

    #[test]
    fn lengths_and_forms() {
        assert_eq!(
            PayerSignature::parse("12"),
            Err(SignatureParseError::NotHex)
        );
        assert_eq!(
            PayerSignature::parse("0xzz"),
            Err(SignatureParseError::NotHex)
        );
        assert_eq!(
            PayerSignature::parse("0x0102"),
            Err(SignatureParseError::BadLength(2))
        );
        let mut sig65 = vec![1u8; 64];
        sig65.push(27);
        assert!(matches!(
            PayerSignature::parse(&hex::encode_prefixed(&sig65)),
            Ok(PayerSignature::Ecdsa(_))
        ));
        assert!(matches!(
            PayerSignature::parse(&hex::encode_prefixed([1u8; 64])),
            Ok(PayerSignature::Ecdsa(_))
        ));
        assert!(matches!(
            PayerSignature::parse(&hex::encode_prefixed([1u8; 100])),
            Ok(PayerSignature::Contract(_))
        ));
        let mut wrapped = vec![1u8; 96];
        wrapped.extend_from_slice(&ERC6492_SUFFIX);
        assert!(matches!(
            PayerSignature::parse(&hex::encode_prefixed(&wrapped)),
            Ok(PayerSignature::Erc6492(_))
        ));
    }
}
