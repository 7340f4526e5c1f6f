//! The hash-tagged key layout on a single Redis (README "Scaling past one Redis"): every key a
//! settlement writes carries a hash tag, and a store written by the layout before `[redis]
//! mode` is moved by `x402-facilitator migrate-redis` so that its payments are still answered
//! (`duplicate_settlement` with the transaction) and found by the status API.

use std::process::Command;

use serde_json::Value;
use x402_tests::eip3009::{ExactEvmRequirements, v2_evm_payment_json};
use x402_tests::facilitator::TestFacilitator;
use x402_tests::{Anvil, DEV_PRIVATE_KEYS, RedisServer, Usdc};

const AMOUNT: u64 = 10_000;

async fn keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg("x402:*")
        .query_async(conn)
        .await
        .unwrap();
    // The reconciler's lease comes and goes with the replicas.
    k.retain(|k| !k.contains(":lock:"));
    k.sort();
    k
}

/// The name a key had before hash tags: the shard suffix `:{x402:N}` dropped, other braces
/// removed (`x402:nonce:evm:{1:0xab}:next` → `x402:nonce:evm:1:0xab:next`).
fn legacy(key: &str) -> String {
    let base = match key.rfind(":{x402:") {
        Some(i) if key.ends_with('}') => &key[..i],
        _ => key,
    };
    base.replace(['{', '}'], "")
}

/// Rewrites the store into the old layout: sharded sets merged into one, every other key
/// renamed to its legacy name.
async fn to_legacy_layout(conn: &mut redis::aio::MultiplexedConnection) {
    for key in keys(conn).await {
        let old = legacy(&key);
        if old == key || key.contains(":answer:") {
            continue;
        }
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let sharded_set = [
            "x402:settlements:open",
            "x402:webhooks:outbox",
            "x402:webhooks:dead",
        ]
        .contains(&old.as_str());
        if kind == "zset" && sharded_set {
            let _: () = redis::cmd("ZUNIONSTORE")
                .arg(&old)
                .arg(2)
                .arg(&old)
                .arg(&key)
                .query_async(conn)
                .await
                .unwrap();
            let _: () = redis::cmd("DEL").arg(&key).query_async(conn).await.unwrap();
        } else {
            let _: () = redis::cmd("RENAME")
                .arg(&key)
                .arg(&old)
                .query_async(conn)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_layout_is_migrated_and_its_payments_still_answered() {
    let anvil = Anvil::spawn().await.unwrap();
    let usdc = Usdc::deploy(&anvil, anvil.signer(0)).await.unwrap();
    usdc.mint(anvil.address(2), 1_000_000u64).await.unwrap();
    let redis = RedisServer::spawn().await.unwrap();
    let toml = TestFacilitator::config_toml_custom(
        &anvil,
        anvil.rpc_url(),
        DEV_PRIVATE_KEYS[1],
        Some(&redis.url()),
        "",
    );
    let req = ExactEvmRequirements::base_usdc(AMOUNT, anvil.address(3));
    let (auth, sig) = req.authorize(&anvil.signer(2)).unwrap();
    let body = v2_evm_payment_json(&req.v2_json(), &sig, &auth);
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, settled) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(settled["success"], true, "{settled}");
    let tx = settled["transaction"].as_str().unwrap().to_string();
    drop(fac);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let tagged = keys(&mut conn).await;
    // Every key of the settlement carries a hash tag (one slot per script on a cluster).
    for k in &tagged {
        assert!(
            k.contains('{') || k.contains(":answer:") || k.contains(":lock:"),
            "{k}: {tagged:?}"
        );
    }
    assert!(
        tagged
            .iter()
            .any(|k| k.starts_with("x402:replay:evm:") && k.ends_with('}')),
        "{tagged:?}"
    );
    assert!(
        tagged.iter().any(|k| k.starts_with("x402:settlement:tx:")),
        "{tagged:?}"
    );
    assert!(
        tagged.iter().any(|k| k.starts_with("x402:nonce:evm:{")),
        "{tagged:?}"
    );

    to_legacy_layout(&mut conn).await;
    let legacy_keys = keys(&mut conn).await;
    assert!(
        legacy_keys.iter().all(|k| !k.contains('{')),
        "{legacy_keys:?}"
    );
    // migrate-redis (the binary), twice: the second run moves nothing.
    let path = std::env::temp_dir().join(format!("x402-migrate-{}.toml", std::process::id()));
    std::fs::write(&path, &toml).unwrap();
    let run = || {
        Command::new(x402_tests::process::facilitator_binary().unwrap())
            .arg("--config")
            .arg(&path)
            .arg("migrate-redis")
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("records: 1"), "{stdout}");
    assert!(stdout.contains("transactions: 1"), "{stdout}");
    let second = run();
    let stdout2 = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.status.success(), "{stdout2}");
    assert!(
        stdout2.contains("records: 0") && stdout2.contains("nonce_keys: 0"),
        "{stdout2}"
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        keys(&mut conn).await,
        tagged,
        "the migration restores the tagged layout"
    );

    // The payment is answered with its transaction and found by the status API.
    let fac = TestFacilitator::start_with_toml(&toml).await.unwrap();
    let (_, again) = fac.post("/settle", &body).await.unwrap();
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(again["transaction"], tx.as_str(), "{again}");
    let (status, found) = fac.get(&format!("/settlements/{tx}")).await.unwrap();
    assert_eq!(status, 200, "{found}");
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found["state"], "settled", "{found}");
}
