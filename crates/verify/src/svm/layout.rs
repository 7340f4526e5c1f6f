//! The instruction layout rules of the SVM `exact` scheme (x402-reference §6; `@x402/svm` 2.27
//! static path), checked on a decoded message without any RPC.
//!
//! Layout: `[SetComputeUnitLimit, SetComputeUnitPrice, (CreateIdempotent,)? TransferChecked,
//! (Memo | Lighthouse){0,3}]`. The optional `CreateIdempotent` of the destination's associated
//! token account is this facilitator's extension (off unless the operator lists `payTo`).

use solana_address::Address;
use solana_message::VersionedMessage;
use solana_message::compiled_instruction::CompiledInstruction;
use x402_proto::Reason;

use x402_chain::spl::{
    ASSOCIATED_TOKEN_PROGRAM, COMPUTE_BUDGET_PROGRAM, CREATE_IDEMPOTENT, LIGHTHOUSE_PROGRAM,
    MEMO_PROGRAM, SET_COMPUTE_UNIT_LIMIT, SET_COMPUTE_UNIT_PRICE, SYSTEM_PROGRAM, TRANSFER_CHECKED,
    associated_token_address, is_token_program,
};

/// Most optional Memo / Lighthouse instructions after the transfer.
pub const MAX_OPTIONAL_INSTRUCTIONS: usize = 3;

/// What the requirements and the operator's policy ask of the layout.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// `asset`: the SPL mint.
    pub mint: Address,
    /// `payTo`: the owner of the destination token account.
    pub pay_to: Address,
    /// Required amount, atomic token units.
    pub amount: u64,
    /// `extra.memo`, when set.
    pub memo: Option<&'a str>,
    /// Cap on `SetComputeUnitPrice`, micro-lamports per compute unit.
    pub max_compute_unit_price: u64,
    /// Cap on `SetComputeUnitLimit`, compute units.
    pub max_compute_unit_limit: u32,
    /// Whether a `CreateIdempotent` of `payTo`'s token account, funded by the fee payer, is
    /// allowed (the operator listed `payTo` as its own).
    pub may_create_destination: bool,
}

/// The parts of a well-formed payment transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// SPL Token or Token-2022.
    pub token_program: Address,
    /// Source token account.
    pub source: Address,
    /// Destination token account: the associated token account of `payTo`.
    pub destination: Address,
    /// Transfer authority: the payer.
    pub authority: Address,
    /// Transferred amount, atomic token units.
    pub amount: u64,
    /// `SetComputeUnitLimit`, compute units.
    pub compute_unit_limit: u32,
    /// `SetComputeUnitPrice`, micro-lamports per compute unit.
    pub compute_unit_price: u64,
    /// The transaction creates the destination account (fee payer pays its rent).
    pub creates_destination: bool,
}

/// A broken rule: its reason, a message, and the transfer authority once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Reference reason.
    pub reason: Reason,
    /// Human-readable detail.
    pub message: String,
    /// Transfer authority (base58), once the transfer was found.
    pub payer: Option<Address>,
}

fn broken(reason: Reason, message: impl Into<String>, payer: Option<Address>) -> Broken {
    Broken {
        reason,
        message: message.into(),
        payer,
    }
}

/// An instruction with its program and accounts resolved to addresses.
struct Ix<'m> {
    program: Address,
    accounts: Vec<Address>,
    /// Account indices into the static keys (index 0 is the fee payer).
    indices: &'m [u8],
    data: &'m [u8],
}

fn resolve<'m>(keys: &[Address], ix: &'m CompiledInstruction) -> Option<Ix<'m>> {
    let key = |i: u8| keys.get(usize::from(i)).copied();
    Some(Ix {
        program: key(ix.program_id_index)?,
        accounts: ix.accounts.iter().map(|&i| key(i)).collect::<Option<_>>()?,
        indices: &ix.accounts,
        data: &ix.data,
    })
}

/// Checks the instruction layout of `message` (static account keys only; the caller rejects
/// address lookup tables) whose account 0 is the fee payer.
pub fn check(message: &VersionedMessage, expected: &Expected<'_>) -> Result<Layout, Broken> {
    let keys = message.static_account_keys();
    let ixs: Vec<Ix<'_>> = message
        .instructions()
        .iter()
        .map(|ix| resolve(keys, ix))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            broken(
                Reason::SvmCouldNotBeDecoded,
                "an instruction refers to an account index outside the message",
                None,
            )
        })?;
    let creates = ixs
        .get(2)
        .is_some_and(|ix| ix.program == ASSOCIATED_TOKEN_PROGRAM);
    let transfer_at = if creates { 3 } else { 2 };
    let (min, max) = (transfer_at + 1, transfer_at + 1 + MAX_OPTIONAL_INSTRUCTIONS);
    if ixs.len() < min || ixs.len() > max {
        return Err(broken(
            Reason::SvmInstructionsLength,
            format!("{} instructions; expected {min} to {max}", ixs.len()),
            None,
        ));
    }
    let compute_unit_limit = compute_unit_limit(&ixs[0], expected)?;
    let compute_unit_price = compute_unit_price(&ixs[1], expected)?;
    let transfer = transfer_checked(&ixs[transfer_at])?;
    let payer = Some(transfer.authority);
    let fee_payer = keys[0];

    if transfer.authority == fee_payer || transfer.source == fee_payer {
        return Err(broken(
            Reason::SvmFeePayerTransferringFunds,
            "the fee payer is the transfer's authority or source",
            payer,
        ));
    }
    for (i, ix) in ixs.iter().enumerate() {
        let funding_slot = creates && i == 2;
        let uses_fee_payer = ix
            .indices
            .iter()
            .enumerate()
            .any(|(slot, &index)| index == 0 && !(funding_slot && slot == 0));
        if uses_fee_payer {
            return Err(broken(
                Reason::SvmFeePayerTransferringFunds,
                format!("the fee payer appears in the accounts of instruction {i}"),
                payer,
            ));
        }
    }
    if transfer.mint != expected.mint {
        return Err(broken(
            Reason::SvmMintMismatch,
            format!("transfer mint {} is not {}", transfer.mint, expected.mint),
            payer,
        ));
    }
    let destination = associated_token_address(&expected.pay_to, &expected.mint, &transfer.program);
    if transfer.destination != destination {
        return Err(broken(
            Reason::SvmRecipientMismatch,
            format!(
                "destination {} is not payTo's associated token account {destination}",
                transfer.destination
            ),
            payer,
        ));
    }
    if transfer.amount != expected.amount {
        return Err(broken(
            Reason::SvmAmountMismatch,
            format!(
                "transfer amount {} is not the required {}",
                transfer.amount, expected.amount
            ),
            payer,
        ));
    }
    if creates {
        create_destination(&ixs[2], fee_payer, destination, &transfer, expected)?;
    }
    let optional = &ixs[transfer_at + 1..];
    for (i, ix) in optional.iter().enumerate() {
        if ix.program != MEMO_PROGRAM && ix.program != LIGHTHOUSE_PROGRAM {
            let reason = match transfer_at + 1 + i {
                3 => Reason::SvmUnknownFourthInstruction,
                4 => Reason::SvmUnknownFifthInstruction,
                _ => Reason::SvmUnknownSixthInstruction,
            };
            return Err(broken(
                reason,
                format!(
                    "instruction {} calls {}, neither Memo nor Lighthouse",
                    transfer_at + 1 + i,
                    ix.program
                ),
                payer,
            ));
        }
    }
    if let Some(memo) = expected.memo.filter(|m| !m.is_empty()) {
        let memos: Vec<&Ix<'_>> = optional
            .iter()
            .filter(|ix| ix.program == MEMO_PROGRAM)
            .collect();
        if memos.len() != 1 {
            return Err(broken(
                Reason::SvmMemoCount,
                format!(
                    "{} Memo instructions; extra.memo requires exactly one",
                    memos.len()
                ),
                payer,
            ));
        }
        if memos[0].data != memo.as_bytes() {
            return Err(broken(
                Reason::SvmMemoMismatch,
                format!(
                    "memo {:?} is not extra.memo {memo:?}",
                    String::from_utf8_lossy(memos[0].data)
                ),
                payer,
            ));
        }
    }
    Ok(Layout {
        token_program: transfer.program,
        source: transfer.source,
        destination,
        authority: transfer.authority,
        amount: transfer.amount,
        compute_unit_limit,
        compute_unit_price,
        creates_destination: creates,
    })
}

fn compute_unit_limit(ix: &Ix<'_>, expected: &Expected<'_>) -> Result<u32, Broken> {
    let units = match (ix.program == COMPUTE_BUDGET_PROGRAM, ix.data) {
        (true, [SET_COMPUTE_UNIT_LIMIT, rest @ ..]) => rest.try_into().ok().map(u32::from_le_bytes),
        _ => None,
    }
    .ok_or_else(|| {
        broken(
            Reason::SvmComputeLimitInstruction,
            "instruction 0 is not ComputeBudget SetComputeUnitLimit",
            None,
        )
    })?;
    if units > expected.max_compute_unit_limit {
        return Err(broken(
            Reason::SvmComputeLimitTooHigh,
            format!(
                "compute unit limit {units} is above the cap {}",
                expected.max_compute_unit_limit
            ),
            None,
        ));
    }
    Ok(units)
}

fn compute_unit_price(ix: &Ix<'_>, expected: &Expected<'_>) -> Result<u64, Broken> {
    let price = match (ix.program == COMPUTE_BUDGET_PROGRAM, ix.data) {
        (true, [SET_COMPUTE_UNIT_PRICE, rest @ ..]) => rest.try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
    .ok_or_else(|| {
        broken(
            Reason::SvmComputePriceInstruction,
            "instruction 1 is not ComputeBudget SetComputeUnitPrice",
            None,
        )
    })?;
    if price > expected.max_compute_unit_price {
        return Err(broken(
            Reason::SvmComputePriceTooHigh,
            format!(
                "compute unit price {price} micro-lamports is above the cap {}",
                expected.max_compute_unit_price
            ),
            None,
        ));
    }
    Ok(price)
}

/// A decoded `TransferChecked`.
struct Transfer {
    program: Address,
    source: Address,
    mint: Address,
    destination: Address,
    authority: Address,
    amount: u64,
}

fn transfer_checked(ix: &Ix<'_>) -> Result<Transfer, Broken> {
    let not_transfer = |why: &str| {
        broken(
            Reason::SvmNoTransferInstruction,
            format!("the transfer instruction {why}"),
            None,
        )
    };
    if !is_token_program(&ix.program) {
        return Err(not_transfer("is not SPL Token or Token-2022"));
    }
    let (amount, _decimals) = match ix.data {
        [TRANSFER_CHECKED, amount @ .., decimals] if amount.len() == 8 => {
            let amount: [u8; 8] = amount.try_into().map_err(|_| not_transfer("is short"))?;
            (u64::from_le_bytes(amount), *decimals)
        }
        _ => return Err(not_transfer("is not TransferChecked")),
    };
    let [source, mint, destination, authority, ..] = ix.accounts[..] else {
        return Err(not_transfer("has fewer than 4 accounts"));
    };
    Ok(Transfer {
        program: ix.program,
        source,
        mint,
        destination,
        authority,
        amount,
    })
}

/// The `CreateIdempotent` before the transfer: allowed for listed `payTo` owners, funded by the
/// fee payer, creating exactly the destination account.
fn create_destination(
    ix: &Ix<'_>,
    fee_payer: Address,
    destination: Address,
    transfer: &Transfer,
    expected: &Expected<'_>,
) -> Result<(), Broken> {
    let payer = Some(transfer.authority);
    let funder = ix.accounts.first().copied();
    if !expected.may_create_destination {
        let reason = if funder == Some(fee_payer) {
            Reason::SvmFeePayerTransferringFunds
        } else {
            Reason::SvmNoTransferInstruction
        };
        return Err(broken(
            reason,
            "creating payTo's token account is not enabled for this payTo",
            payer,
        ));
    }
    let wanted = [
        fee_payer,
        destination,
        expected.pay_to,
        expected.mint,
        SYSTEM_PROGRAM,
        transfer.program,
    ];
    if ix.data != [CREATE_IDEMPOTENT] || ix.accounts[..] != wanted[..] {
        return Err(broken(
            Reason::SvmNoTransferInstruction,
            "instruction 2 must be CreateIdempotent of payTo's associated token account, \
             funded by the fee payer",
            payer,
        ));
    }
    Ok(())
}
