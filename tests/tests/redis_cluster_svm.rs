//! Solana `exact` on Redis Cluster (issue 20): two real facilitator replicas share one fee
//! payer and a Redis Cluster of 3 primaries + 3 replicas (`[redis] mode = "cluster"`,
//! `min_replicas_acked = 1`), against a local surfnet ([`SvmRpcFixture`]: devnet USDC
//! planted, a funded payer, a payee with a token account, a fee payer with SOL):
//! - x402-conformance F4: two different transactions carrying one `extra.memo` for one
//!   `payTo`, raced across the replicas, settle once; a third later is refused
//!   (`duplicate_settlement`, nothing broadcast). The memo claim lives in its own slot;
//! - x402-conformance F3: 30 concurrent settles of one payment across the replicas give one
//!   success, one transfer and one fee.
//!
//! Part of the nextest group `redis-multi-node` (`.config/nextest.toml`): one at a time.
//! Needs `.tools/bin/x402-surfnet` (scripts/install-surfnet.sh) and Debian's `redis-server`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use solana_signer::Signer;
use x402_settle::replay::keys::{svm_memo_claim_key, svm_replay_key};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::redis_group::RedisCluster;
use x402_tests::svm_fixture::{
    COMPUTE_UNIT_LIMIT, COMPUTE_UNIT_PRICE, FEE_PAYER_LAMPORTS, KEY_PREFIX, PAYER_FUNDS,
    SOLANA_DEVNET, SvmRpcFixture, to_base64,
};
use x402_tests::svm_payment::{SvmPaymentBuilder, v2_request_json};

/// Atomic USDC per payment (0.25 USDC).
const AMOUNT: u64 = 250_000;

/// Lamports the fee payer pays for one payment transaction: two signatures at 5,000 lamports
/// plus the priority fee `ceil(limit × price / 10^6)` at `price` micro-lamports per unit.
fn fee(price: u64) -> u64 {
    2 * 5_000 + (u64::from(COMPUTE_UNIT_LIMIT) * price).div_ceil(1_000_000)
}

/// The fixture's chain and keys, and two facilitator replicas on a Redis Cluster. The
/// fixture's own facilitator (on its private single Redis) takes no request here.
///
/// Field order is drop order: the replicas stop before the cluster and the chain go away.
struct ClusterSvm {
    a: TestFacilitator,
    b: TestFacilitator,
    cluster: RedisCluster,
    fx: SvmRpcFixture,
}

impl ClusterSvm {
    async fn start() -> Self {
        let fx = SvmRpcFixture::start().await.unwrap();
        let cluster = RedisCluster::spawn(3, 1).await.unwrap();
        let single = format!("[redis]\nurl = \"{}\"\n", fx.redis.url());
        let base = SvmRpcFixture::config_toml(
            &fx.surfnet.rpc_url(),
            &fx.fee_payer,
            &fx.mint,
            &fx.redis.url(),
            30,
        );
        assert!(base.contains(&single), "{base}");
        let toml = base.replace(&single, &cluster.redis_toml(1));
        let a = TestFacilitator::start_with_toml(&toml).await.unwrap();
        let b = TestFacilitator::start_with_toml(&toml).await.unwrap();
        ClusterSvm { a, b, cluster, fx }
    }

    /// Replica `i % 2`.
    fn replica(&self, i: usize) -> &TestFacilitator {
        if i.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }

    /// The payer's partially signed payment of [`AMOUNT`] to the payee on the latest
    /// blockhash at `price` micro-lamports per compute unit, with `memo` if given: its
    /// base64 and the signature the fee payer will put on it (its transaction id).
    async fn payment(&self, price: u64, memo: Option<&str>) -> (String, String) {
        let fx = &self.fx;
        let blockhash = fx.surfnet.latest_blockhash().await.unwrap();
        let builder = SvmPaymentBuilder::new(
            fx.payer.clone(),
            fx.fee_payer.pubkey(),
            fx.mint,
            fx.pay_to,
            AMOUNT,
            blockhash,
        )
        .token_program(fx.token_program)
        .compute_unit_price(price);
        let builder = match memo {
            Some(m) => builder.memo(m),
            None => builder,
        };
        let tx = to_base64(&builder.build());
        let signature = fx.payment_signature(&tx).unwrap();
        (tx, signature)
    }

    /// A v2 `/settle` body for `tx` with `extra.memo` if given.
    fn body(&self, tx: &str, memo: Option<&str>) -> Value {
        let mut extra = self.fx.extra();
        if let Some(m) = memo {
            extra["memo"] = m.into();
        }
        v2_request_json(tx, &self.fx.mint, &self.fx.pay_to, AMOUNT, &extra)
    }

    /// Posts `bodies[i]` to replica `i % 2`, all at once: the answers in order.
    async fn settle_all(&self, bodies: &[Value]) -> Vec<Value> {
        futures::future::join_all(
            bodies
                .iter()
                .enumerate()
                .map(|(i, b)| self.replica(i).post("/settle", b)),
        )
        .await
        .into_iter()
        .map(|r| {
            let (status, answer) = r.unwrap();
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect()
    }

    /// Whether `signature` is confirmed on chain without error (waits up to 30 s when
    /// `expected`, else looks once).
    async fn landed(&self, signature: &str, expected: bool) -> bool {
        if expected {
            let status = self
                .fx
                .wait_confirmed(signature, Duration::from_secs(30))
                .await
                .unwrap();
            return status["err"].is_null();
        }
        !self.fx.signature_status(signature).await.unwrap().is_null()
    }
}

/// F4 on the cluster: two different payment transactions with the same `extra.memo` for one
/// `payTo`, each sent 5 times, alternating between the two replicas, all at once: one of them
/// settles (one success), the other is refused `duplicate_settlement` without a transaction,
/// the payer pays once. The memo's claim in the cluster names the winner's record. A third
/// transaction with that memo, later, on the other replica: refused, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_f4_solana_memo_replay_is_refused() {
    let s = ClusterSvm::start().await;
    let memo = Some("order-7");
    let (first, first_sig) = s.payment(COMPUTE_UNIT_PRICE, memo).await;
    let (second, second_sig) = s.payment(COMPUTE_UNIT_PRICE + 1, memo).await;
    assert_ne!(first_sig, second_sig);
    let bodies: Vec<Value> = (0..10)
        .map(|i| {
            if i % 4 < 2 {
                s.body(&first, memo)
            } else {
                s.body(&second, memo)
            }
        })
        .collect();
    let answers = s.settle_all(&bodies).await;

    let mut by_reason: HashMap<String, usize> = HashMap::new();
    let mut winners = std::collections::HashSet::new();
    for a in &answers {
        let reason = if a["success"] == true {
            winners.insert(a["transaction"].as_str().unwrap().to_string());
            "success"
        } else {
            a["errorReason"].as_str().unwrap_or_default()
        };
        assert!(
            matches!(
                reason,
                "success" | "duplicate_settlement" | "settlement_pending"
            ),
            "{a}"
        );
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    eprintln!("answers: {by_reason:?}");
    assert!(
        by_reason.get("success").copied().unwrap_or(0) <= 1,
        "{answers:#?}"
    );
    // Which transaction won: the one that lands. The other never does.
    let first_landed = s.landed(&first_sig, false).await;
    let (winner, loser) = if first_landed || winners.contains(&first_sig) {
        (&first_sig, &second_sig)
    } else {
        (&second_sig, &first_sig)
    };
    assert!(
        s.landed(winner, true).await,
        "no payment with the memo landed"
    );
    assert!(!s.landed(loser, false).await, "the memo settled twice");
    for (body, a) in bodies.iter().zip(&answers) {
        let tx = body["paymentPayload"]["payload"]["transaction"]
            .as_str()
            .unwrap();
        let sig = s.fx.payment_signature(tx).unwrap();
        if &sig == loser {
            assert_eq!(a["success"], false, "{a}");
            assert_eq!(a["errorReason"], "duplicate_settlement", "{a}");
            assert_eq!(
                a["transaction"], "",
                "the refused payment names a transaction: {a}"
            );
        } else if a["success"] != true {
            assert!(
                a["transaction"] == "" || a["transaction"] == winner.as_str(),
                "{a}"
            );
        }
    }
    assert_eq!(s.fx.pay_to_balance().await.unwrap(), AMOUNT);
    assert_eq!(s.fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    let claim: Option<String> = s
        .cluster
        .query(redis::cmd("GET").arg(svm_memo_claim_key(
            KEY_PREFIX,
            SOLANA_DEVNET,
            &s.fx.pay_to.to_string(),
            "order-7",
        )))
        .await
        .unwrap();
    assert_eq!(
        claim.as_deref(),
        Some(svm_replay_key(KEY_PREFIX, SOLANA_DEVNET, winner).as_str()),
        "the memo's claim names the settled payment"
    );

    // The same memo the second time, in a new transaction, on each replica: refused, and
    // nothing is broadcast.
    let (third, third_sig) = s.payment(COMPUTE_UNIT_PRICE + 2, memo).await;
    for replica in [&s.a, &s.b] {
        let (status, replay) = replica
            .post("/settle", &s.body(&third, memo))
            .await
            .unwrap();
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["success"], false, "memo settled twice: {replay}");
        assert_eq!(replay["errorReason"], "duplicate_settlement", "{replay}");
        assert_eq!(replay["transaction"], "", "nothing broadcast: {replay}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!s.landed(&third_sig, false).await);
    assert_eq!(s.fx.pay_to_balance().await.unwrap(), AMOUNT);
    assert_eq!(s.fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    let winner_price = if winner == &first_sig {
        COMPUTE_UNIT_PRICE
    } else {
        COMPUTE_UNIT_PRICE + 1
    };
    assert_eq!(
        s.fx.surfnet
            .balance(&s.fx.fee_payer.pubkey())
            .await
            .unwrap(),
        FEE_PAYER_LAMPORTS - fee(winner_price),
        "the fee payer paid for more than one transaction"
    );
}

/// F3 on the cluster: 30 concurrent settles of one Solana payment, alternating between the
/// two replicas, give at most one success and one transfer (and one fee); every other answer
/// is `duplicate_settlement` or `settlement_pending`; a later retry answers the receipt (the
/// success if none got it, else `duplicate_settlement` with the transaction). The record is
/// in the cluster under the payment's replay key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_f3_solana_concurrent_settles_succeed_once() {
    let s = ClusterSvm::start().await;
    let (tx, signature) = s.payment(COMPUTE_UNIT_PRICE, None).await;
    let body = s.body(&tx, None);
    let answers = s.settle_all(&vec![body.clone(); 30]).await;

    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for a in &answers {
        let reason = if a["success"] == true {
            assert_eq!(a["transaction"], signature.as_str(), "{a}");
            "success"
        } else {
            let reason = a["errorReason"].as_str().unwrap_or_default();
            match reason {
                "duplicate_settlement" => assert!(
                    a["transaction"] == "" || a["transaction"] == signature.as_str(),
                    "{a}"
                ),
                "settlement_pending" => assert_eq!(a["transaction"], signature.as_str(), "{a}"),
                _ => panic!("a plain failure for a payment being settled: {a}"),
            }
            reason
        };
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    eprintln!("answers: {by_reason:?}");
    let successes = by_reason.get("success").copied().unwrap_or(0);
    assert!(successes <= 1, "{answers:#?}");

    assert!(s.landed(&signature, true).await);
    assert_eq!(s.fx.pay_to_balance().await.unwrap(), AMOUNT);
    assert_eq!(s.fx.payer_balance().await.unwrap(), PAYER_FUNDS - AMOUNT);
    assert_eq!(
        s.fx.surfnet
            .balance(&s.fx.fee_payer.pubkey())
            .await
            .unwrap(),
        FEE_PAYER_LAMPORTS - fee(COMPUTE_UNIT_PRICE),
        "the fee payer paid for more than one transaction"
    );
    let record: Option<String> = s
        .cluster
        .query(redis::cmd("GET").arg(s.fx.replay_key(&signature)))
        .await
        .unwrap();
    let record: Value =
        serde_json::from_str(&record.expect("the record is in the cluster")).unwrap();
    assert_eq!(record["transaction"], signature.as_str(), "{record}");

    // A later retry, on each replica: the receipt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut late_successes = 0;
    for replica in [&s.a, &s.b] {
        let (status, again) = replica.post("/settle", &body).await.unwrap();
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["transaction"], signature.as_str(), "{again}");
        if again["success"] == true {
            late_successes += 1;
        } else {
            assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
        }
    }
    assert_eq!(
        successes + late_successes,
        1,
        "one success in all: {answers:#?}"
    );
    assert_eq!(s.fx.pay_to_balance().await.unwrap(), AMOUNT);
}
