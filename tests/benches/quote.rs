//! `GET /quote` is answered from the quote cache: no RPC or price API on the request path.
//!
//! Measures the full HTTP round trip over loopback against the in-process facilitator, first
//! with the chain up, then with anvil stopped (any RPC on the request path would fail or time
//! out). Run: `cargo bench -p x402-tests --bench quote`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use x402_tests::Anvil;
use x402_tests::facilitator::EvmFixture;

const GAS_TOML: &str = r#"
[evm.gas]
[[evm.gas.price_sources]]
kind = "fixed"
usd = "3000.00"

[quotes]
refresh_seconds = 3600
max_age_seconds = 3600
"#;

fn bench_quote(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(async {
        let anvil = Anvil::spawn().await.unwrap();
        EvmFixture::start_custom(anvil, None, 10, GAS_TOML)
            .await
            .unwrap()
    });
    let client = reqwest::Client::new();
    let url = format!("{}/quote?network=eip155:8453", fx.facilitator.url());
    let get = || async {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap()
    };
    rt.block_on(async {
        for _ in 0..100 {
            if client.get(&url).send().await.unwrap().status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no quote");
    });

    let mut group = c.benchmark_group("quote");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("GET /quote, chain up", |b| b.to_async(&rt).iter(get));
    let EvmFixture {
        anvil, facilitator, ..
    } = fx;
    drop(anvil);
    group.bench_function("GET /quote, chain down", |b| b.to_async(&rt).iter(get));
    group.finish();
    rt.block_on(async move { drop(facilitator) });
}

criterion_group!(benches, bench_quote);
criterion_main!(benches);
