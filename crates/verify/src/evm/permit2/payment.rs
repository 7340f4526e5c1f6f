//! A verified Permit2 payment (`exact` or `upto`) and the proxy call that settles it.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use x402_chain::permit2::upto::{self, IX402UptoPermit2Proxy};
use x402_chain::permit2::{
    Eip2612Permit, IX402ExactPermit2Proxy, PermitTransferFrom, PermitWitnessTransferFrom,
};

/// A verified Permit2 payment: everything settlement needs to call the proxy's `settle`.
#[derive(Debug, Clone, PartialEq)]
pub struct Permit2Payment {
    /// `permit2Authorization.from` (Permit2's owner).
    pub payer: Address,
    /// The token.
    pub asset: Address,
    /// The signed message's fields, as `exact`'s message (an `upto` witness also names
    /// [`Permit2Payment::facilitator`]).
    pub message: PermitWitnessTransferFrom,
    /// `upto` only: `witness.facilitator`, the signer that must send the settlement (the
    /// proxy reverts `UnauthorizedFacilitator` for any other sender). `None` for `exact`.
    pub facilitator: Option<Address>,
    /// The amount the settlement transfers, atomic token units: `permitted.amount` for
    /// `exact`; for `upto` the requirements' `amount` (the maximum at `/verify`, the actual
    /// charge at `/settle`), at most `permitted.amount`.
    pub amount: U256,
    /// The signature as Permit2 checks it: 65-byte `r‖s‖v` for ECDSA, the wallet's bytes for
    /// ERC-1271.
    pub signature: Bytes,
    /// Whether the signature is a plain ECDSA one.
    pub ecdsa: bool,
    /// The payer's EIP-2612 permit of the token to Permit2 (`eip2612GasSponsoring`): settled
    /// with `settleWithPermit` when present.
    pub permit2612: Option<Eip2612Permit>,
}

impl Permit2Payment {
    /// Calldata of the proxy's settlement: `exact`: `settle(permit, owner, witness,
    /// signature)`, or with an EIP-2612 permit `settleWithPermit(permit2612, permit, owner,
    /// witness, signature)`; `upto`: the same with the amount after `permit`.
    pub fn settlement_calldata(&self) -> Bytes {
        let m = &self.message;
        let permit = PermitTransferFrom {
            permitted: m.permitted.clone(),
            nonce: m.nonce,
            deadline: m.deadline,
        };
        if let Some(facilitator) = self.facilitator {
            return self.upto_calldata(facilitator);
        }
        match &self.permit2612 {
            None => IX402ExactPermit2Proxy::settleCall {
                permit,
                owner: self.payer,
                witness: m.witness.clone(),
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
            Some(permit2612) => IX402ExactPermit2Proxy::settleWithPermitCall {
                permit2612: permit2612.clone(),
                permit,
                owner: self.payer,
                witness: m.witness.clone(),
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }

    fn upto_calldata(&self, facilitator: Address) -> Bytes {
        let m = &self.message;
        let permit = upto::PermitTransferFrom {
            permitted: upto::TokenPermissions {
                token: m.permitted.token,
                amount: m.permitted.amount,
            },
            nonce: m.nonce,
            deadline: m.deadline,
        };
        let witness = upto::Witness {
            to: m.witness.to,
            facilitator,
            validAfter: m.witness.validAfter,
        };
        match &self.permit2612 {
            None => IX402UptoPermit2Proxy::settleCall {
                permit,
                amount: self.amount,
                owner: self.payer,
                witness,
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
            Some(p) => IX402UptoPermit2Proxy::settleWithPermitCall {
                permit2612: upto::Eip2612Permit {
                    value: p.value,
                    deadline: p.deadline,
                    r: p.r,
                    s: p.s,
                    v: p.v,
                },
                permit,
                amount: self.amount,
                owner: self.payer,
                witness,
                signature: self.signature.clone(),
            }
            .abi_encode()
            .into(),
        }
    }

    /// The upto message the payer signed (`None` for `exact`).
    pub fn upto_message(&self) -> Option<upto::PermitWitnessTransferFrom> {
        self.facilitator.map(|f| upto_message(&self.message, f))
    }

    /// The payer as an EIP-55 checksummed string.
    pub fn payer_string(&self) -> String {
        self.payer.to_checksum(None)
    }
}

/// The `upto` message of `message`'s fields with `facilitator` in the witness.
pub fn upto_message(
    message: &PermitWitnessTransferFrom,
    facilitator: Address,
) -> upto::PermitWitnessTransferFrom {
    upto::PermitWitnessTransferFrom {
        permitted: upto::TokenPermissions {
            token: message.permitted.token,
            amount: message.permitted.amount,
        },
        spender: message.spender,
        nonce: message.nonce,
        deadline: message.deadline,
        witness: upto::Witness {
            to: message.witness.to,
            facilitator,
            validAfter: message.witness.validAfter,
        },
    }
}
