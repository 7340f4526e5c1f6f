//! A tiny run of the load harness (`bench`): every phase answers every request, and the settle
//! phase's successes are exactly the transfers found on chain. Counts only: speed is measured by
//! the harness itself, never asserted here.

use std::time::Duration;

use x402_tests::bench::{self, BenchConfig, FacilitatorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_smoke_run_answers_everything_and_counts_add_up() {
    let config = BenchConfig {
        payments: 6,
        payers: 3,
        verify_requests: 12,
        concurrency: 4,
        settle_concurrency: 6,
        block_time_seconds: None,
        rpc_delay: Duration::from_millis(5),
        signers: 2,
        replicas: 2,
        facilitator: FacilitatorKind::InProcess,
        phase_deadline: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        ..BenchConfig::default()
    };
    let report = bench::run(&config).await.unwrap();
    println!("{report}");

    let eth_call = report.phase("eth_call").unwrap();
    assert_eq!(eth_call.requests, 12, "{report}");
    assert_eq!(eth_call.count("ok"), 12, "{report}");

    let verify = report.phase("verify").unwrap();
    assert_eq!(verify.requests, 12, "{report}");
    assert_eq!(verify.count("valid"), 12, "{report}");

    let settle = report.phase("settle").unwrap();
    assert_eq!(settle.requests, 6, "{report}");
    assert_eq!(settle.answers.values().sum::<usize>(), 6, "{report}");
    assert_eq!(settle.count("success"), 6, "{report}");

    let chain = report.chain.as_ref().unwrap();
    assert_eq!(chain.successes, 6, "{report}");
    assert_eq!(chain.unique_transactions, chain.successes, "{report}");
    assert_eq!(chain.transfers_on_chain, chain.successes, "{report}");
    assert!(chain.blocks_used >= 1, "{report}");
    assert!(chain.max_txs_per_block >= 1, "{report}");
}
