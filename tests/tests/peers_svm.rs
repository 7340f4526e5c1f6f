//! Acceptance against the official Solana x402 client: `@x402/svm` 2.27 `ExactSvmScheme`
//! (v2) and `ExactSvmSchemeV1` builds and partially signs the payment transaction against the
//! local surfpool RPC, then `tests/peers/svm_client_verify_settle.mjs` posts it to our facilitator
//! raw and through `@x402/core`'s `HTTPFacilitatorClient`. The payment is checked on chain:
//! signature confirmed, the payee's balance up and the payer's down by exactly the amount.
//!
//! One fresh [`SvmRpcFixture`] per test. Needs `.tools/bin/x402-surfnet`, `redis-server` and the
//! peers (`scripts/install-peers.sh`, run by the harness).

use serde_json::Value;
use solana_signer::Signer;
use x402_tests::peers::{Peer, PeerOutput};
use x402_tests::svm_fixture::{
    FEE_PAYER_LAMPORTS, MEMO_PROGRAM, PAYER_FUNDS, SOLANA_DEVNET_V1, SvmRpcFixture,
};

/// Atomic USDC per payment (0.001 USDC; under the client's default $1 spend cap).
const AMOUNT: u64 = 1_000;

const COMPUTE_BUDGET_PROGRAM: &str = "ComputeBudget111111111111111111111111111111";
const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

fn at<'a>(value: &'a Value, pointer: &str, out: &PeerOutput) -> &'a Value {
    match value.pointer(pointer) {
        Some(v) if !v.is_null() => v,
        _ => panic!("peer answer lacks `{pointer}`\n{out}"),
    }
}

/// Runs the official client for `requirements` (`version` 1 or 2) against the fixture and checks
/// the answers, the transaction it built and the chain. Returns the peer's JSON.
async fn official_client_pays(fx: &SvmRpcFixture, version: u8, requirements: Value) -> Value {
    let network = requirements["network"].as_str().unwrap().to_string();
    let out = Peer::node("svm_client_verify_settle.mjs")
        .env("FACILITATOR_URL", fx.facilitator.url())
        .env("PAYER_KEY", fx.payer_secret_base58())
        .env("SOLANA_RPC_URL", fx.surfnet.rpc_url())
        .env("X402_VERSION", version.to_string())
        .env("REQUIREMENTS_JSON", requirements.to_string())
        .run()
        .await
        .unwrap();
    eprintln!("peer finished in {:?}", out.elapsed);
    let json = out.json().unwrap();
    let payer = fx.payer.pubkey().to_string();
    eprintln!(
        "official client's transaction: {}",
        serde_json::to_string_pretty(at(&json, "/transaction", &out)).unwrap()
    );

    // Raw answers.
    assert_eq!(at(&json, "/verify/status", &out), 200, "{out}");
    let verify = at(&json, "/verify/body", &out);
    assert_eq!(verify["isValid"], true, "{out}");
    assert_eq!(verify["payer"], payer.as_str(), "{out}");
    assert_eq!(at(&json, "/settle/status", &out), 200, "{out}");
    let settle = at(&json, "/settle/body", &out);
    assert_eq!(settle["success"], true, "{out}");
    assert_eq!(settle["payer"], payer.as_str(), "{out}");
    assert_eq!(settle["network"], network.as_str(), "{out}");
    assert_eq!(settle["amount"], AMOUNT.to_string(), "{out}");
    let tx = settle["transaction"].as_str().unwrap_or_default();
    assert_eq!(
        bs58::decode(tx).into_vec().map(|b| b.len()).ok(),
        Some(64),
        "transaction {tx:?} is not a base58 signature\n{out}"
    );

    // The official HTTPFacilitatorClient: /supported lists the kind, verify is valid, and its
    // settle (a retry) is `duplicate_settlement` naming the settled transaction.
    let supported = at(&json, "/supported", &out);
    let fee_payer = fx.fee_payer.pubkey().to_string();
    assert!(
        supported["kinds"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| {
                k["x402Version"] == version
                    && k["network"] == network.as_str()
                    && k["extra"]["feePayer"] == fee_payer.as_str()
            })),
        "{out}"
    );
    let client_verify = at(&json, "/client/verify", &out);
    assert_eq!(client_verify["isValid"], true, "{out}");
    assert_eq!(client_verify["payer"], payer.as_str(), "{out}");
    let client_settle = at(&json, "/client/settle", &out);
    assert_ne!(
        client_settle["success"], true,
        "F3: no second success\n{out}"
    );
    assert_eq!(
        client_settle["errorReason"], "duplicate_settlement",
        "{out}"
    );
    assert_eq!(client_settle["transaction"], tx, "{out}");
    assert!(out.success(), "{out}");

    // The transaction the official client built: fee payer = account 0 (unsigned slot),
    // [SetComputeUnitLimit, SetComputeUnitPrice, TransferChecked, Memo], no lookup tables.
    let summary = at(&json, "/transaction", &out);
    assert_eq!(summary["staticAccounts"][0], fee_payer.as_str(), "{out}");
    let programs: Vec<&str> = summary["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ix| ix["program"].as_str().unwrap())
        .collect();
    let memo = MEMO_PROGRAM.to_string();
    assert_eq!(
        programs,
        [
            COMPUTE_BUDGET_PROGRAM,
            COMPUTE_BUDGET_PROGRAM,
            TOKEN_PROGRAM,
            memo.as_str()
        ],
        "{out}"
    );
    assert_eq!(
        summary["addressTableLookups"],
        serde_json::json!([]),
        "{out}"
    );

    // On chain.
    let status = fx.signature_status(tx).await.unwrap();
    assert!(
        matches!(
            status["confirmationStatus"].as_str(),
            Some("confirmed" | "finalized")
        ) && status["err"].is_null(),
        "{status}\n{out}"
    );
    assert_eq!(fx.pay_to_balance().await.unwrap(), AMOUNT, "{out}");
    assert_eq!(
        fx.payer_balance().await.unwrap(),
        PAYER_FUNDS - AMOUNT,
        "{out}"
    );
    let fee_payer_lamports = fx.surfnet.balance(&fx.fee_payer.pubkey()).await.unwrap();
    eprintln!(
        "fee payer paid {} lamports",
        FEE_PAYER_LAMPORTS - fee_payer_lamports
    );
    json
}

#[tokio::test]
async fn svm_official_client_pays_through_our_api() {
    let fx = SvmRpcFixture::start().await.unwrap();
    official_client_pays(&fx, 2, fx.requirements_v2(AMOUNT)).await;
}

#[tokio::test]
async fn svm_official_v1_client_pays_through_our_api() {
    let fx = SvmRpcFixture::start().await.unwrap();
    let json = official_client_pays(&fx, 1, fx.requirements_v1(AMOUNT)).await;
    assert_eq!(json["paymentPayload"]["x402Version"], 1);
    assert_eq!(json["paymentPayload"]["network"], SOLANA_DEVNET_V1);
}
