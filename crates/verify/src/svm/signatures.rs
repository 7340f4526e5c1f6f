//! The payer-side signatures of a Solana payment transaction (Ed25519 over the serialized
//! message), checked locally: the fee-payer slot (index 0) is empty until the facilitator signs.

use solana_transaction::versioned::VersionedTransaction;

/// Checks that every required signature but the fee payer's (indices `1..num_required_signatures`)
/// is present and valid for its account key. Errors: which one is missing or wrong.
pub fn check_payer_signatures(tx: &VersionedTransaction) -> Result<(), String> {
    let required = usize::from(tx.message.header().num_required_signatures);
    let keys = tx.message.static_account_keys();
    if tx.signatures.len() != required {
        return Err(format!(
            "{} signatures for {required} required signers",
            tx.signatures.len()
        ));
    }
    let message = tx.message.serialize();
    for (i, (key, signature)) in keys.iter().zip(&tx.signatures).enumerate().skip(1) {
        if !signature.verify(key.as_ref(), &message) {
            return Err(format!("signature {i} of {key} is missing or invalid"));
        }
    }
    Ok(())
}
