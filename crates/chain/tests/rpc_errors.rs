//! Chain errors against real TCP listeners on 127.0.0.1 (the production HTTP clients, no mocks):
//! an endpoint that accepts and never answers, a closed port, and one answering an HTML error
//! page. The RPC URL carries a token in its path and query, as hosted RPC URLs carry API keys:
//! no error text or `Debug` may hold it, and each error names the endpoint by its index.

use std::time::{Duration, Instant};

use solana_hash::Hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use x402_chain::{
    AlloyEvmChain, ChainError, EvmChain, FailoverEvmChain, FailoverSvmChain, RpcSvmChain, SvmChain,
    SvmChainError, Unreachable, redacted_detail,
};

const TOKEN: &str = "SECRET-TOKEN-123";
const TIMEOUT: Duration = Duration::from_millis(700);

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/v3/{TOKEN}?apikey={TOKEN}")
}

/// Accepts every connection and reads from it forever, never answering.
async fn stalled() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// A port nothing listens on (bound, then closed): connections are refused.
async fn refused() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Answers every request with HTTP 502 and an HTML page quoting the request line (with the
/// token), as some gateways do.
async fn bad_gateway() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let line = request.lines().next().unwrap_or_default().to_string();
                let body = format!("<html><body>502 Bad Gateway for {line}</body></html>");
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

fn assert_clean(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert!(!text.contains("/v3/"), "the URL path leaked: {text}");
}

fn evm(port: u16) -> AlloyEvmChain {
    AlloyEvmChain::new(&url(port), 8453, vec![], TIMEOUT).unwrap()
}

#[tokio::test]
async fn evm_stalled_endpoint_is_a_timeout_naming_its_index() {
    let port = stalled().await;
    let started = Instant::now();
    let e = evm(port).block_number().await.unwrap_err();
    assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
    assert!(
        matches!(&e, ChainError::Timeout { endpoint } if endpoint.index == 0
            && endpoint.label == format!("http://127.0.0.1:{port}")),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "rpc timeout (endpoint 0)");
    assert!(e.is_unavailable());
    assert_clean(&format!("{e} {e:?}"));
}

#[tokio::test]
async fn evm_refused_and_error_page_are_unavailable_without_upstream_text() {
    let e = evm(refused().await)
        .balance(Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Unavailable {
                kind: Unreachable::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "rpc unavailable: connection failed (endpoint 0)"
    );
    assert_clean(&format!("{e} {e:?}"));

    let e = evm(bad_gateway().await)
        .send_raw(&vec![0x02, 0xc0].into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Unavailable {
                kind: Unreachable::HttpStatus(502),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "rpc unavailable: HTTP status 502 (endpoint 0)"
    );
    assert_clean(&format!("{e} {e:?}"));
}

#[tokio::test]
async fn failover_names_each_endpoint_by_index_and_checks_without_urls() {
    let (dead, hung) = (refused().await, stalled().await);
    let chain = FailoverEvmChain::new(&[url(dead), url(hung)], 8453, vec![], TIMEOUT).unwrap();
    let e = chain.block_number().await.unwrap_err();
    assert_eq!(e.to_string(), "rpc timeout (endpoint 1)");
    let check = chain.check_chain_id().await.unwrap_err();
    assert!(check.contains("rpc timeout (endpoint 1)"), "{check}");
    assert_clean(&check);
    for h in chain.health() {
        assert_clean(&h.endpoint);
        assert!(!h.healthy, "{h:?}");
    }
    // A malformed URL is named by its position, not repeated.
    let err = FailoverEvmChain::new(
        &[url(dead), format!("http://[::1/{TOKEN}")],
        8453,
        vec![],
        TIMEOUT,
    )
    .err()
    .unwrap();
    assert!(err.starts_with("rpc_urls[1]: invalid RPC URL"), "{err}");
    assert_clean(&err);
}

#[tokio::test]
async fn svm_errors_name_the_endpoint_only() {
    let blockhash = Hash::new_unique();
    let hung = stalled().await;
    let e = RpcSvmChain::new(url(hung), TIMEOUT)
        .is_blockhash_valid(&blockhash)
        .await
        .unwrap_err();
    assert!(matches!(e, SvmChainError::Timeout { .. }), "{e:?}");
    assert_eq!(e.to_string(), "rpc timeout (endpoint 0)");
    assert_clean(&format!("{e} {e:?}"));
    // The client's account helpers fold errors into text quoting the URL: not these.
    let e = RpcSvmChain::new(url(hung), TIMEOUT)
        .account(&Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SvmChainError::Timeout { .. }), "{e:?}");
    assert_clean(&format!("{e} {e:?}"));

    let e = RpcSvmChain::new(url(refused().await), TIMEOUT)
        .balance(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SvmChainError::Unavailable {
                kind: Unreachable::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert_clean(&format!("{e} {e:?}"));

    let e = RpcSvmChain::new(url(bad_gateway().await), TIMEOUT)
        .minimum_balance_for_rent_exemption(165)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SvmChainError::Unavailable {
                kind: Unreachable::HttpStatus(502),
                ..
            }
        ),
        "{e:?}"
    );
    assert_clean(&format!("{e} {e:?}"));

    let failover = FailoverSvmChain::new(&[url(refused().await), url(hung)], TIMEOUT).unwrap();
    let e = failover.is_blockhash_valid(&blockhash).await.unwrap_err();
    assert_eq!(e.to_string(), "rpc timeout (endpoint 1)");
}

/// The detail logged for a transport failure: the client's own text, with the URL cut out.
#[tokio::test]
async fn logged_detail_keeps_the_cause_and_drops_the_url() {
    let port = refused().await;
    let e = alloy::transports::http::reqwest::Client::new()
        .post(url(port))
        .send()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(TOKEN),
        "reqwest itself quotes the URL: {e}"
    );
    let detail = redacted_detail(&e, &url(port));
    assert_clean(&detail);
    assert!(
        detail.contains("error sending request") && detail.to_lowercase().contains("refused"),
        "{detail}"
    );
}
