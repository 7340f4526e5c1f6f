//! Solana facts the `exact` scheme and its pricing share: program ids and instruction tags the
//! SVM `exact` layout refers to (x402-reference §6), token account sizes, associated token
//! account derivation, and the transaction fee formula.

use solana_address::Address;

/// SPL Token program (`TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA`).
pub const TOKEN_PROGRAM: Address = spl_token_interface::ID;
/// SPL Token-2022 program (`TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb`).
pub const TOKEN_2022_PROGRAM: Address = spl_token_2022_interface::ID;
/// Associated Token Account program (`ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL`).
pub const ASSOCIATED_TOKEN_PROGRAM: Address = spl_associated_token_account_interface::program::ID;
/// SPL Memo program v2 (`MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr`).
pub const MEMO_PROGRAM: Address = spl_memo_interface::v3::ID;
/// Lighthouse assertion program used by wallets (`L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95`).
pub const LIGHTHOUSE_PROGRAM: Address =
    Address::from_str_const("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95");
/// Compute Budget program (`ComputeBudget111111111111111111111111111111`).
pub const COMPUTE_BUDGET_PROGRAM: Address =
    Address::from_str_const("ComputeBudget111111111111111111111111111111");
/// System program (`11111111111111111111111111111111`).
pub const SYSTEM_PROGRAM: Address = Address::from_str_const("11111111111111111111111111111111");

/// ComputeBudget `SetComputeUnitLimit` tag (data: tag, u32 LE units).
pub const SET_COMPUTE_UNIT_LIMIT: u8 = 2;
/// ComputeBudget `SetComputeUnitPrice` tag (data: tag, u64 LE micro-lamports per CU).
pub const SET_COMPUTE_UNIT_PRICE: u8 = 3;
/// SPL Token `TransferChecked` tag (data: tag, u64 LE amount, u8 decimals).
pub const TRANSFER_CHECKED: u8 = 12;
/// Associated Token Account `CreateIdempotent` tag (data: the tag alone).
pub const CREATE_IDEMPOTENT: u8 = 1;

/// Size of an SPL Token account, bytes (`spl_token::state::Account::LEN`).
pub const TOKEN_ACCOUNT_LEN: usize = 165;
/// Size of a Token-2022 associated token account, bytes: 165 + 1 (account type) + 4
/// (`ImmutableOwner` extension header, which the ATA program always adds).
pub const TOKEN_2022_ACCOUNT_LEN: usize = 170;

/// The token amount of an SPL Token or Token-2022 account from its data (the base layout:
/// mint 32 bytes, owner 32, amount u64 little-endian); `None` when the data is too short.
pub fn token_account_amount(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(64..72)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Size of an associated token account under `token_program`, bytes; `None` for a program that
/// is neither SPL Token nor Token-2022. Its rent-exemption minimum is what creating one costs.
pub fn associated_token_account_len(token_program: &Address) -> Option<usize> {
    if *token_program == TOKEN_PROGRAM {
        Some(TOKEN_ACCOUNT_LEN)
    } else if *token_program == TOKEN_2022_PROGRAM {
        Some(TOKEN_2022_ACCOUNT_LEN)
    } else {
        None
    }
}

/// Whether `program` is SPL Token or Token-2022.
pub fn is_token_program(program: &Address) -> bool {
    *program == TOKEN_PROGRAM || *program == TOKEN_2022_PROGRAM
}

/// The associated token account of `owner` for `mint` under `token_program` (a PDA of the ATA
/// program).
pub fn associated_token_address(
    owner: &Address,
    mint: &Address,
    token_program: &Address,
) -> Address {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner,
        mint,
        token_program,
    )
}

/// Lamports charged per required signature of a Solana transaction (the cluster's fixed
/// `lamports_per_signature`).
pub const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// The base fee plus the prioritization fee of a transaction, lamports: `signatures ×`
/// [`LAMPORTS_PER_SIGNATURE`] `+ ceil(compute_unit_price × compute_unit_limit / 10^6)`, with the
/// price in micro-lamports per compute unit (Solana fee structure). Saturates instead of
/// overflowing.
pub fn transaction_fee_lamports(
    signatures: u64,
    compute_unit_limit: u32,
    compute_unit_price_micro_lamports: u64,
) -> u64 {
    let priority = (u128::from(compute_unit_price_micro_lamports) * u128::from(compute_unit_limit))
        .div_ceil(1_000_000);
    signatures
        .saturating_mul(LAMPORTS_PER_SIGNATURE)
        .saturating_add(u64::try_from(priority).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_is_signatures_plus_rounded_up_priority() {
        assert_eq!(transaction_fee_lamports(2, 20_000, 1), 10_001);
        assert_eq!(
            transaction_fee_lamports(1, 200_000, 5_000_000),
            5_000 + 1_000_000
        );
        assert_eq!(transaction_fee_lamports(2, 0, u64::MAX), 10_000);
        assert_eq!(
            transaction_fee_lamports(u64::MAX, u32::MAX, u64::MAX),
            u64::MAX
        );
    }
}
