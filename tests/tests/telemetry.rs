//! Logs and traces of the real binary: with `log_format = "json"` the settle log line carries
//! the request's network, payer and transaction; with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! a local HTTP receiver, the requests' spans are exported there as OTLP/HTTP protobuf.

use std::time::Duration;

use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::http_sink::HttpSink;
use x402_tests::process::FacilitatorProcess;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, Usdc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_payment_and_spans_are_exported_over_otlp() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    usdc.mint(anvil.address(2), 1_000_000u64).await.unwrap();
    let collector = HttpSink::start().await.unwrap();
    let toml = format!(
        "log_format = \"json\"\n{}",
        TestFacilitator::config_toml(&anvil, DEV_PRIVATE_KEYS[1], None)
    );
    let endpoint = collector.url("");
    let f = FacilitatorProcess::start_with_env(
        "otlp",
        &toml,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await
    .unwrap();

    let req = ExactEvmRequirements::base_usdc(10_000u64, anvil.address(3));
    let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let (status, verified) = f.post("/verify", &body).await.unwrap();
    assert_eq!((status, &verified["isValid"]), (200, &Value::Bool(true)));
    let (status, settled) = f.post("/settle", &body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(settled["success"], true, "{settled}");
    let tx = settled["transaction"].as_str().unwrap();

    // OTLP: protobuf POSTs to /v1/traces naming the service and the routes.
    let start = std::time::Instant::now();
    let exported = loop {
        let traces: Vec<_> = collector
            .received()
            .into_iter()
            .filter(|r| r.path == "/v1/traces")
            .collect();
        let all: Vec<u8> = traces.iter().flat_map(|r| r.body.clone()).collect();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        if has(b"/verify") && has(b"/settle") {
            break traces;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no OTLP export of the requests: {:?}\n{}",
            collector.received(),
            f.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for r in &exported {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    }
    let all: Vec<u8> = exported.iter().flat_map(|r| r.body.clone()).collect();
    assert!(
        all.windows(16).any(|w| w == b"x402-facilitator"),
        "service.name missing"
    );

    // JSON logs: the settle line carries the request's span with network, payer, transaction.
    let log = f.log_text();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "settle")
        .unwrap_or_else(|| panic!("no settle line in\n{log}"));
    let span = &line["span"];
    assert_eq!(span["name"], "request", "{line}");
    assert!(span["request_id"].as_str().is_some(), "{line}");
    assert_eq!(span["network"], "eip155:8453", "{line}");
    assert_eq!(span["payer"], anvil.address(2).to_checksum(None), "{line}");
    assert_eq!(span["transaction"], tx, "{line}");
}
