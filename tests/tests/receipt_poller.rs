//! The per-network receipt poller (crates/settle/src/evm/receipts.rs) on a real anvil: when the
//! chain reorganises under a block it has read, the receipts of the replaced blocks are
//! forgotten (a settlement waiting on one asks the node again instead of trusting the cache), the
//! new blocks are read, and a transaction mined again is seen in its new block. With a
//! WebSocket endpoint it reads a block as soon as anvil announces it (`newHeads`), long before
//! its next scheduled poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::{NetworkTransactionBuilder, TransactionBuilder, eip2718::Encodable2718};
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use serde_json::Value;
use x402_chain::{AlloyEvmChain, EvmChain};
use x402_settle::evm::receipts::ReceiptWatcher;
use x402_tests::Anvil;

/// Waits until `check` holds, at most `within`.
async fn until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 1-wei transfer from `signer` at nonce 0, signed here (its raw bytes, so that the same
/// transaction can be sent again).
async fn signed_transfer(
    anvil: &Anvil,
    signer: &alloy::signers::local::PrivateKeySigner,
) -> Vec<u8> {
    let tx = TransactionRequest::default()
        .with_from(signer.address())
        .with_to(anvil.address(2))
        .with_value(U256::from(1u64))
        .with_nonce(0)
        .with_chain_id(anvil.chain_id())
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(10_000_000_000)
        .with_max_priority_fee_per_gas(1_000_000_000);
    let wallet = alloy::network::EthereumWallet::from(signer.clone());
    tx.build(&wallet).await.unwrap().encoded_2718()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_under_a_read_block_drops_its_receipts_and_reads_the_new_chain() {
    let anvil = Anvil::spawn().await.unwrap();
    let signer = anvil.signer(1);
    let chain: Arc<dyn EvmChain> = Arc::new(
        AlloyEvmChain::new(
            anvil.rpc_url(),
            anvil.chain_id(),
            vec![signer.clone()],
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let watcher = ReceiptWatcher::spawn(
        chain.clone(),
        &[signer.address()],
        Duration::from_millis(50),
        Duration::from_secs(5),
    );
    // The poller covers what is sent after its first look at the chain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_ms = x402_chain::clock::unix_ms();

    // A transfer from the signer, signed here so that the same bytes can be sent again.
    let provider = anvil.provider();
    let raw = signed_transfer(&anvil, &signer).await;
    let hash: B256 = *provider.send_raw_transaction(&raw).await.unwrap().tx_hash();
    until(
        Duration::from_secs(5),
        "the poller caches the receipt",
        || watcher.receipt(&hash).is_some(),
    )
    .await;
    let first_block = watcher.receipt(&hash).unwrap().block_number.unwrap();
    assert!(watcher.covers(sent_ms));

    // The block holding it is replaced by an empty one, and the chain moves on.
    let _: Value = provider
        .raw_request("anvil_reorg".into(), (1u64, Vec::<Value>::new()))
        .await
        .unwrap();
    assert!(
        provider
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .is_none(),
        "anvil dropped the transaction with its block"
    );
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    until(
        Duration::from_secs(5),
        "the poller forgets the receipt of the replaced block",
        || watcher.receipt(&hash).is_none(),
    )
    .await;
    until(
        Duration::from_secs(5),
        "the poller has read the new chain and proves absence again",
        || watcher.covers(sent_ms),
    )
    .await;
    assert!(watcher.receipt(&hash).is_none());

    // The same transaction mined again is seen in its new block.
    let _resent = provider.send_raw_transaction(&raw).await.unwrap();
    until(
        Duration::from_secs(5),
        "the poller caches the receipt of the new block",
        || watcher.receipt(&hash).is_some(),
    )
    .await;
    let receipt = watcher.receipt(&hash).unwrap();
    let on_chain = provider
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.block_hash, on_chain.block_hash);
    assert!(receipt.block_number.unwrap() > first_block);
}

/// A signer transaction mined while the poller sleeps (10 s interval, automine off): a poller
/// following anvil's `newHeads` over WebSocket caches its receipt within a second; one without
/// the subscription has not read the block yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_heads_over_websocket_wake_the_poller_at_once() {
    let anvil = Anvil::spawn().await.unwrap();
    anvil.set_automine(false).await.unwrap();
    let signer = anvil.signer(1);
    let chain: Arc<dyn EvmChain> = Arc::new(
        AlloyEvmChain::new(
            anvil.rpc_url(),
            anvil.chain_id(),
            vec![signer.clone()],
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let interval = Duration::from_secs(10);
    let pushed = ReceiptWatcher::spawn(chain.clone(), &[signer.address()], interval, interval);
    let ws_url = anvil.rpc_url().replace("http://", "ws://");
    pushed.follow_heads(ws_url, Duration::from_secs(5));
    let polled = ReceiptWatcher::spawn(chain.clone(), &[signer.address()], interval, interval);
    until(Duration::from_secs(5), "the subscription is live", || {
        pushed.following_heads()
    })
    .await;
    // Both pollers took their first look at the chain.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let provider = anvil.provider();
    let raw = signed_transfer(&anvil, &signer).await;
    let hash: B256 = *provider.send_raw_transaction(&raw).await.unwrap().tx_hash();
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    until(
        Duration::from_secs(1),
        "the pushed head makes the poller read the block",
        || pushed.receipt(&hash).is_some(),
    )
    .await;
    assert!(
        polled.receipt(&hash).is_none(),
        "the poller without newHeads read the block before its interval"
    );
}
