//! What the EVM failover tests on multi-node Redis share (`redis_failover.rs`,
//! `redis_reshard.rs`): anvil with 2 s blocks, the facilitator configuration with two signer
//! keys shared by every replica, a burst of payments over the replicas, the retries that finish
//! it, and the end state every test asserts (each payment settled exactly once, one success at
//! most, none answered `nonce_already_used`, every transaction found by the status API).
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::Value;
use x402_tests::eip3009::{Authorization, ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, Usdc};

/// Atomic USDC per payment (0.01 USDC).
pub const AMOUNT: u64 = 10_000;

/// Payments of a burst.
pub const BURST: usize = 200;

/// Short deadlines so that a failover resolves within a test's time.
pub const SETTLE: &str = r#"[settle]
receipt_timeout_seconds = 8
answer_within_seconds = 8
poll_interval_ms = 100
rpc_timeout_seconds = 3
redis_timeout_ms = 1500
lease_seconds = 3
resend_after_seconds = 4
reconcile_interval_seconds = 1
reserved_wait_seconds = 1
signer_wait_seconds = 10
"#;

/// anvil mining a block every 2 s, USDC with the payer (account 2) funded.
pub async fn chain() -> (Anvil, Usdc) {
    let anvil = Anvil::builder()
        .arg("--block-time")
        .arg("2")
        .spawn()
        .await
        .expect("anvil");
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.expect("usdc");
    usdc.mint(anvil.address(2), 1_000_000_000u64)
        .await
        .expect("mint");
    (anvil, usdc)
}

/// A facilitator configuration with the `[redis]` table `redis` and both signer keys (accounts
/// 1 and 4) shared by every replica.
pub fn config(anvil: &Anvil, redis: &str) -> String {
    let base = TestFacilitator::config_toml_custom(
        anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        None,
        SETTLE,
    );
    let keys = format!(
        "signer_private_keys = [\"{}\", \"{}\"]",
        DEV_PRIVATE_KEYS[1], DEV_PRIVATE_KEYS[4]
    );
    // `[redis]` last: a table header ends the top-level keys.
    format!(
        "{}\n{redis}",
        base.replace(
            &format!("signer_private_keys = [\"{}\"]", DEV_PRIVATE_KEYS[1]),
            &keys
        )
    )
}

/// `n` different payments of [`AMOUNT`] from account 2 to account 3.
pub fn payments(anvil: &Anvil, n: usize) -> Vec<(Authorization, Value)> {
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    (0..n)
        .map(|_| {
            let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
            (
                auth.clone(),
                v2_evm_payment_json(&req.v2_json(), &sig, &auth),
            )
        })
        .collect()
}

pub async fn tx_count(anvil: &Anvil, index: usize) -> u64 {
    anvil
        .provider()
        .get_transaction_count(anvil.address(index))
        .await
        .unwrap()
}

/// The facilitator replicas a test talks to: their base URLs and the API key sent as a bearer
/// token with every request (`None` when the configuration has no key).
#[derive(Clone)]
pub struct Replicas {
    /// Base URLs, one per replica.
    pub urls: Vec<String>,
    /// The API key, if the configuration has keys.
    pub key: Option<String>,
}

impl Replicas {
    pub fn of(urls: impl IntoIterator<Item = String>, key: Option<&str>) -> Self {
        Replicas {
            urls: urls.into_iter().collect(),
            key: key.map(str::to_string),
        }
    }

    /// `method {url of replica i mod n}{path}`, with the key.
    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        i: usize,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.urls[i % self.urls.len()]);
        let req = client.request(method, url);
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }
}

/// What the replicas answered each payment.
#[derive(Default)]
pub struct Tally {
    /// Successes answered, per payment.
    pub successes: Vec<usize>,
    /// The transaction of each payment, once answered (success or `duplicate_settlement`).
    pub transaction: Vec<Option<String>>,
    /// Answers by HTTP status.
    pub statuses: HashMap<u16, usize>,
    /// Answers `…nonce_already_used` (a paid payment told it failed).
    pub nonce_used: usize,
    /// Answers that were neither a success, a 503, `settlement_pending` nor
    /// `duplicate_settlement`: a failure, wrong for a payment that lands.
    pub failures: Vec<(usize, u16, Value)>,
    /// The 503 answers by `errorMessage`.
    pub refusals: HashMap<String, usize>,
}

impl Tally {
    pub fn new(n: usize) -> Self {
        Tally {
            successes: vec![0; n],
            transaction: vec![None; n],
            ..Default::default()
        }
    }

    /// Records one answer of payment `i`; whether the payment is done (its success or its
    /// `duplicate_settlement` with the transaction).
    pub fn record(&mut self, i: usize, status: u16, answer: &Value) -> bool {
        *self.statuses.entry(status).or_default() += 1;
        let reason = answer["errorReason"].as_str().unwrap_or_default();
        if reason.contains("nonce_already_used") {
            self.nonce_used += 1;
        }
        let tx = answer["transaction"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if status == 503 {
            assert!(tx.is_none(), "a 503 names a transaction: {answer}");
            let message = answer["errorMessage"].as_str().unwrap_or_default();
            *self.refusals.entry(message.to_string()).or_default() += 1;
        } else if answer["success"] != true
            && !matches!(reason, "settlement_pending" | "duplicate_settlement")
        {
            self.failures.push((i, status, answer.clone()));
        }
        if answer["success"] == true {
            self.successes[i] += 1;
            self.transaction[i] = tx;
            return true;
        }
        if reason == "duplicate_settlement"
            && let Some(tx) = tx
        {
            self.transaction[i].get_or_insert(tx);
            return true;
        }
        false
    }
}

/// Posts every payment once, spread over the replicas, all at once.
pub fn burst(
    replicas: &Replicas,
    payments: &[(Authorization, Value)],
) -> Vec<tokio::task::JoinHandle<Option<(u16, Value)>>> {
    let client = reqwest::Client::new();
    payments
        .iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let req = replicas
                .request(&client, reqwest::Method::POST, i, "/settle")
                .json(body);
            tokio::spawn(async move {
                let r = req.send().await.ok()?;
                let status = r.status().as_u16();
                Some((status, r.json::<Value>().await.ok()?))
            })
        })
        .collect()
}

/// Retries every payment not done yet until it is, within `within`.
pub async fn finish(
    replicas: &Replicas,
    payments: &[(Authorization, Value)],
    tally: &mut Tally,
    done: &mut [bool],
    within: Duration,
) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut round = 0;
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "payments never settled: {:?}",
            done.iter()
                .enumerate()
                .filter(|(_, d)| !**d)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
        let pending: Vec<usize> = (0..payments.len()).filter(|i| !done[*i]).collect();
        let answers = futures::future::join_all(pending.iter().map(|&i| {
            let req = replicas
                .request(&client, reqwest::Method::POST, i + round, "/settle")
                .json(&payments[i].1)
                .send();
            async move {
                let r = req.await.ok()?;
                let status = r.status().as_u16();
                Some((i, status, r.json::<Value>().await.ok()?))
            }
        }))
        .await;
        let mut sample = None;
        let sent = pending.len();
        let mut got = 0;
        for (i, status, answer) in answers.into_iter().flatten() {
            got += 1;
            if tally.record(i, status, &answer) {
                done[i] = true;
            } else {
                sample.get_or_insert((status, answer));
            }
        }
        if round % 5 == 0 {
            eprintln!(
                "round {round}: {got} of {sent} answered, {} left; e.g. {sample:?}",
                done.iter().filter(|d| !**d).count()
            );
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The end state every failover test asserts: each payment settled exactly once on chain, one
/// success at most per payment, none answered `nonce_already_used` or any other failure (503
/// and `settlement_pending` are not failures), and the status API of every replica finds each
/// transaction, settled.
pub async fn assert_settled_once(
    anvil: &Anvil,
    usdc: &Usdc,
    payments: &[(Authorization, Value)],
    tally: &Tally,
    replicas: &Replicas,
) {
    eprintln!(
        "answers by HTTP status: {:?}; 503 by message: {:#?}; {} failures, e.g. {:?}",
        tally.statuses,
        tally.refusals,
        tally.failures.len(),
        tally.failures.first()
    );
    assert!(
        tally.successes.iter().all(|s| *s <= 1),
        "a payment was answered success twice: {:?}",
        tally.successes
    );
    assert_eq!(
        tally.nonce_used, 0,
        "a paid payment was answered nonce_already_used"
    );
    assert!(
        tally.failures.is_empty(),
        "{} answers were a failure for a payment that lands: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert_eq!(
        usdc.balance_of(anvil.address(3)).await.unwrap(),
        U256::from(AMOUNT * payments.len() as u64),
        "the payee got every payment once"
    );
    for (auth, _) in payments {
        assert!(
            usdc.authorization_state(auth.from, auth.nonce)
                .await
                .unwrap()
        );
    }
    let client = reqwest::Client::new();
    for (i, tx) in tally.transaction.iter().enumerate() {
        let tx = tx
            .as_ref()
            .unwrap_or_else(|| panic!("payment {i} has no transaction"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = replicas
                .request(
                    &client,
                    reqwest::Method::GET,
                    i,
                    &format!("/settlements/{tx}"),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            if status == 200 && body["state"] == "settled" {
                assert_eq!(body["transaction"], tx.as_str(), "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "payment {i}: {tx} not found settled by the status API: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A burst in flight over `replicas`.
pub struct Burst {
    /// Where the payments went.
    pub replicas: Replicas,
    /// The payments (authorization and `/settle` body).
    pub payments: Vec<(Authorization, Value)>,
    /// The first answer of each payment.
    pub tasks: Vec<tokio::task::JoinHandle<Option<(u16, Value)>>>,
}

/// Sends [`BURST`] payments over `replicas` (with the API key `key`, if any) and returns once
/// the signers have sent a few transactions (the moment for a fault).
pub async fn start_burst(
    anvil: &Anvil,
    replicas: &[FacilitatorProcess],
    key: Option<&str>,
) -> Burst {
    let replicas = Replicas::of(replicas.iter().map(|r| r.url().to_string()), key);
    let payments = payments(anvil, BURST);
    let tasks = burst(&replicas, &payments);
    let start = Instant::now();
    while tx_count(anvil, 1).await + tx_count(anvil, 4).await < 10
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Burst {
        replicas,
        payments,
        tasks,
    }
}

/// Collects the burst's answers, retries every payment until it is done, and asserts the end
/// state ([`assert_settled_once`]). Returns the answers.
pub async fn finish_burst(anvil: &Anvil, usdc: &Usdc, burst: Burst) -> Tally {
    let Burst {
        replicas,
        payments,
        tasks,
    } = burst;
    let mut tally = Tally::new(payments.len());
    let mut done = vec![false; payments.len()];
    for (i, t) in tasks.into_iter().enumerate() {
        if let Some((status, answer)) = t.await.unwrap()
            && tally.record(i, status, &answer)
        {
            done[i] = true;
        }
    }
    eprintln!(
        "first answers: {} done, by status {:?}",
        done.iter().filter(|d| **d).count(),
        tally.statuses
    );
    finish(
        &replicas,
        &payments,
        &mut tally,
        &mut done,
        Duration::from_secs(180),
    )
    .await;
    assert_settled_once(anvil, usdc, &payments, &tally, &replicas).await;
    tally
}
