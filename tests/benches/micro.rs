//! Micro-benchmarks of the request path's CPU, without HTTP or a real RPC:
//!
//! - `evm_signature`: EIP-712 digest + ECDSA recovery, alloy's generic path on pure-Rust k256
//!   (what `/verify` used before) next to the fixed-layout digest + libsecp256k1 it uses now;
//! - `request_parse`: a `/verify` body into `PaymentRequest` + the EVM payload, through a JSON
//!   tree (before) and directly (now);
//! - `evm_verify`: `ExactEvmVerifier::verify` of a valid payment over a chain stub whose
//!   `eth_call` answers at once (everything `/verify` does but HTTP and the RPC round trip),
//!   and `Permit2Verifier::verify` of an `exact` and an `upto` Permit2 payment over it;
//! - `svm_verify`: Solana transaction decode + rule checks + payer signature
//!   (`ExactSvmVerifier::verify` without simulation, in-process SVM);
//! - `redis_reserve`: one reservation, `ReplayStore::create` of a `reserved` record (one atomic
//!   Lua step in Redis), on a private Redis.
//!
//! Run: `cargo bench -p x402-tests --bench micro` (a filter: `-- evm_signature`).

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::rpc::types::{FeeHistory, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::Value;
use x402_chain::eip712::{self, TransferWithAuthorization};
use x402_chain::{ChainError, EvmChain, SignedTx};
use x402_proto::PaymentRequest;
use x402_proto::evm::ExactEvmPayload;
use x402_settle::replay::{
    Created, PaymentFacts, RedisStore, ReplayStore, Reserved, SettlementRecord,
};
use x402_tests::RedisServer;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::permit2;
use x402_tests::svm_payment::SvmFixture;
use x402_verify::Verdict;
use x402_verify::evm::permit2::{Permit2Verifier, Stage};
use x402_verify::evm::signature::{PayerSignature, recover_ecdsa};
use x402_verify::evm::{ExactEvmVerifier, VALID_BEFORE_MARGIN_SECONDS};

/// An EVM chain that answers every read at once: `eth_call` succeeds, every address has code;
/// `DOMAIN_SEPARATOR()` answers `domain_separator` (or nothing).
struct InstantChain {
    signers: Vec<Address>,
    domain_separator: Option<B256>,
}

#[async_trait::async_trait]
impl EvmChain for InstantChain {
    fn chain_id(&self) -> u64 {
        8453
    }
    fn signers(&self) -> &[Address] {
        &self.signers
    }
    async fn call(&self, tx: &TransactionRequest) -> Result<Bytes, ChainError> {
        use alloy::sol_types::SolCall;
        let selector = x402_chain::eip3009::IEip3009Token::DOMAIN_SEPARATORCall::SELECTOR;
        let input = tx.input.input().map(|b| b.as_ref()).unwrap_or_default();
        match self.domain_separator {
            Some(sep) if input.starts_with(&selector) => Ok(Bytes::copy_from_slice(sep.as_slice())),
            _ => Ok(Bytes::new()),
        }
    }
    async fn estimate_gas(&self, _: &TransactionRequest) -> Result<u64, ChainError> {
        Ok(100_000)
    }
    async fn fee_history(&self, _: u64, _: &[f64]) -> Result<FeeHistory, ChainError> {
        Err(ChainError::Unsupported("stub"))
    }
    async fn code_at(&self, _: Address) -> Result<Bytes, ChainError> {
        Ok(Bytes::from_static(&[0x60]))
    }
    async fn pending_nonce(&self, _: Address) -> Result<u64, ChainError> {
        Ok(0)
    }
    async fn balance(&self, _: Address) -> Result<U256, ChainError> {
        Ok(U256::MAX)
    }
    async fn transaction_known(&self, _: B256) -> Result<bool, ChainError> {
        Ok(false)
    }
    async fn sign(&self, _: TransactionRequest) -> Result<SignedTx, ChainError> {
        Err(ChainError::Unsupported("stub"))
    }
    async fn send_raw(&self, _: &Bytes) -> Result<B256, ChainError> {
        Err(ChainError::Unsupported("stub"))
    }
    async fn receipt(&self, _: B256) -> Result<Option<TransactionReceipt>, ChainError> {
        Ok(None)
    }
}

/// A valid v2 `/verify` body of 0.01 USDC on Base and the Unix time to verify it at.
fn evm_body() -> (Vec<u8>, u64) {
    let payer = PrivateKeySigner::random();
    let req = ExactEvmRequirements::base_usdc(10_000u64, Address::repeat_byte(0x42));
    let (auth, sig) = req.authorize(&payer).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    (
        serde_json::to_vec(&body).unwrap(),
        auth.valid_after + 600 - VALID_BEFORE_MARGIN_SECONDS,
    )
}

fn bench_evm_signature(c: &mut Criterion) {
    let (body, _) = evm_body();
    let req = PaymentRequest::parse(&body).unwrap();
    let payload: ExactEvmPayload = req.scheme_payload_as().unwrap();
    let a = &payload.authorization;
    let auth = TransferWithAuthorization {
        from: a.from.parse().unwrap(),
        to: a.to.parse().unwrap(),
        value: U256::from_str_radix(&a.value, 10).unwrap(),
        validAfter: U256::from_str_radix(&a.valid_after, 10).unwrap(),
        validBefore: U256::from_str_radix(&a.valid_before, 10).unwrap(),
        nonce: a.nonce.parse().unwrap(),
    };
    let PayerSignature::Ecdsa(sig) = PayerSignature::parse(&payload.signature).unwrap() else {
        panic!("ECDSA expected")
    };
    let usdc = x402_tests::BASE_USDC;
    let mut g = c.benchmark_group("evm_signature");
    g.bench_function("digest+recover: alloy Eip712Domain + k256 (before)", |b| {
        b.iter(|| {
            let d = eip712::digest(&eip712::domain("USD Coin", "2", 8453, usdc), &auth);
            let from = sig.recover_address_from_prehash(&d).unwrap();
            assert_eq!(from, auth.from);
        })
    });
    g.bench_function("digest+recover: fixed layout + libsecp256k1 (now)", |b| {
        b.iter(|| {
            let sep = eip712::domain_separator("USD Coin", "2", 8453, usdc);
            let d = eip712::signing_digest(&sep, &auth);
            assert_eq!(recover_ecdsa(&sig, &d), Some(auth.from));
        })
    });
    let d = eip712::signing_digest(
        &eip712::domain_separator("USD Coin", "2", 8453, usdc),
        &auth,
    );
    g.bench_function("digest only: alloy", |b| {
        b.iter(|| eip712::digest(&eip712::domain("USD Coin", "2", 8453, usdc), &auth))
    });
    g.bench_function("digest only: fixed layout", |b| {
        b.iter(|| {
            eip712::signing_digest(
                &eip712::domain_separator("USD Coin", "2", 8453, usdc),
                &auth,
            )
        })
    });
    g.bench_function("recover only: k256", |b| {
        b.iter(|| sig.recover_address_from_prehash(&d).unwrap())
    });
    g.bench_function("recover only: libsecp256k1", |b| {
        b.iter(|| recover_ecdsa(&sig, &d).unwrap())
    });
    g.finish();
}

fn bench_request_parse(c: &mut Criterion) {
    let (body, _) = evm_body();
    let mut g = c.benchmark_group("request_parse");
    g.bench_function("JSON tree + from_value + payload copy (before)", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let req = PaymentRequest::from_value(v).unwrap();
            let p: ExactEvmPayload =
                x402_proto::request::typed(req.scheme_payload().clone(), "").unwrap();
            (req, p)
        })
    });
    g.bench_function("direct (now)", |b| {
        b.iter(|| {
            let req = PaymentRequest::parse(&body).unwrap();
            let p: ExactEvmPayload = req.scheme_payload_as().unwrap();
            (req, p)
        })
    });
    g.finish();
}

fn bench_evm_verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (body, now) = evm_body();
    let req = PaymentRequest::parse(&body).unwrap();
    let separator = eip712::domain_separator(
        req.extra_str("name").unwrap(),
        req.extra_str("version").unwrap(),
        8453,
        x402_tests::BASE_USDC,
    );
    let mut g = c.benchmark_group("evm_verify");
    for (label, domain_separator) in [
        (
            "parse + verify, instant eth_call, signature recovered",
            None,
        ),
        (
            "parse + verify, instant eth_call, signature proven by the simulation",
            Some(separator),
        ),
    ] {
        let chain = Arc::new(InstantChain {
            signers: vec![Address::repeat_byte(1)],
            domain_separator,
        });
        let verifier = ExactEvmVerifier::new(chain, vec![x402_tests::BASE_USDC]);
        g.bench_function(label, |b| {
            b.iter(|| {
                let req = PaymentRequest::parse(&body).unwrap();
                let verdict = rt.block_on(verifier.verify(&req, now, true)).unwrap();
                assert!(matches!(verdict, Verdict::Valid(_)));
            })
        });
    }
    // Permit2 (issue 17 target: verify CPU per Permit2 payment within 1.5x of EIP-3009's):
    // the same steps over the same instant chain, `exact` and `upto`.
    let facilitator = Address::repeat_byte(1);
    let chain = Arc::new(InstantChain {
        signers: vec![facilitator],
        domain_separator: None,
    });
    let verifier = Permit2Verifier::new(
        chain,
        vec![x402_tests::BASE_USDC],
        permit2::PERMIT2,
        permit2::EXACT_PROXY,
    )
    .with_upto(permit2::UPTO_PROXY);
    let payer = PrivateKeySigner::random();
    let pay_to = Address::repeat_byte(0x42);
    let amount = U256::from(10_000u64);
    for (label, upto) in [
        ("permit2 exact: parse + verify, instant eth_call", false),
        ("permit2 upto: parse + verify, instant eth_call", true),
    ] {
        let (req, auth) = if upto {
            (
                permit2::upto_requirements(
                    8453,
                    x402_tests::BASE_USDC,
                    amount,
                    pay_to,
                    facilitator,
                ),
                permit2::Permit2Auth::upto(
                    payer.address(),
                    x402_tests::BASE_USDC,
                    amount,
                    pay_to,
                    facilitator,
                    600,
                ),
            )
        } else {
            (
                permit2::requirements(8453, x402_tests::BASE_USDC, amount, pay_to),
                permit2::Permit2Auth::new(
                    payer.address(),
                    x402_tests::BASE_USDC,
                    amount,
                    pay_to,
                    600,
                ),
            )
        };
        let signature = auth.sign(&payer, 8453).unwrap();
        let body = serde_json::to_vec(&permit2::body(&req, &signature, &auth)).unwrap();
        let now = x402_tests::eip3009::unix_now();
        g.bench_function(label, |b| {
            b.iter(|| {
                let req = PaymentRequest::parse(&body).unwrap();
                let verdict = rt
                    .block_on(verifier.verify(&req, now, Stage::Verify))
                    .unwrap();
                assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
            })
        });
    }
    g.finish();
}

fn bench_svm_verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fx = SvmFixture::new().unwrap();
    let tx = fx.payment(10_000).build_base64();
    let body = serde_json::to_vec(&x402_tests::svm_payment::v2_request_json(
        &tx,
        &fx.mint,
        &fx.pay_to,
        10_000,
        &fx.extra(&serde_json::json!({})),
    ))
    .unwrap();
    let mut g = c.benchmark_group("svm_verify");
    g.bench_function(
        "parse + decode + rules + payer signature, no simulation",
        |b| {
            b.iter(|| {
                let req = PaymentRequest::parse(&body).unwrap();
                let verdict = rt.block_on(fx.verifier.verify(&req, false)).unwrap();
                assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
            })
        },
    );
    g.finish();
}

fn bench_redis_reserve(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (redis, store) = rt.block_on(async {
        let redis = RedisServer::spawn().await.unwrap();
        let store = RedisStore::connect(&redis.url(), "x402bench", Duration::from_secs(2))
            .await
            .unwrap();
        (redis, store)
    });
    let record = SettlementRecord::Reserved(Reserved {
        payment: PaymentFacts {
            binding: format!("{:#x}", B256::repeat_byte(7)),
            network: "eip155:8453".into(),
            payer: Address::repeat_byte(2).to_checksum(None),
            amount: "10000".into(),
            asset: x402_tests::BASE_USDC.to_checksum(None),
            pay_to: Address::repeat_byte(3).to_checksum(None),
            created_at: 1_800_000_000,
            valid_until: 1_800_003_600,
            key: None,
            answer_keys: vec![],
            kind: None,
        },
        owner: "bench:1:0".into(),
        lease_until_ms: 1_800_000_030_000,
    });
    let mut n = 0u64;
    let mut g = c.benchmark_group("redis_reserve");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("ReplayStore::create of a reserved record, new key", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("x402:bench:reserve:{n}")
            },
            |key| {
                let created = rt
                    .block_on(store.create(&key, &record, Duration::from_secs(60), &[]))
                    .unwrap();
                assert!(matches!(created, Created::Created(_)));
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(store);
    drop(redis);
}

criterion_group!(
    benches,
    bench_evm_signature,
    bench_request_parse,
    bench_evm_verify,
    bench_svm_verify,
    bench_redis_reserve
);
criterion_main!(benches);
