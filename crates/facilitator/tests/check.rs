//! `x402-facilitator --check`: the binary validates the configuration once, names a bad key,
//! and warns about deprecated keys, naming their replacements.

use std::path::PathBuf;
use std::process::{Command, Output};

const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaf784d7bf4f2ff80";

/// Runs `x402-facilitator --check` on `toml` with `env`.
fn check(name: &str, toml: &str, env: &[(&str, &str)]) -> Output {
    let path: PathBuf =
        std::env::temp_dir().join(format!("x402-check-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_x402-facilitator"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    out
}

fn base(extra_top: &str, extra_evm: &str) -> String {
    format!(
        "{extra_top}\n[[evm]]\nnetwork = \"base\"\nrpc_url = \"http://127.0.0.1:8545\"\n\
         signer_private_keys = [\"{ANVIL_KEY}\"]\n{extra_evm}\n"
    )
}

#[test]
fn check_names_a_bad_key() {
    let out = check(
        "bad",
        &base(
            "",
            "[[evm.assets]]\naddress = \"0x12\"\nname = \"USD Coin\"\nversion = \"2\"",
        ),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("config: evm[0].assets[0].address: not a 0x 20-byte address"),
        "{stderr}"
    );
    let out = check("bad-timeout", &base("", "rpc_timeout_seconds = 0"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("config: evm[0].rpc_timeout_seconds: must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_deprecated_keys_with_a_warning_naming_the_new_key() {
    let out = check(
        "deprecated",
        &base(
            "[settle]\nrpc_timeout_seconds = 3\n[health]\nmin_evm_signer_balance_wei = 1\n",
            "",
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("config ok"), "{stdout}");
    let warns: Vec<&str> = stdout.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 2, "{stdout}");
    assert!(
        warns[0].contains(
            "config: settle.rpc_timeout_seconds is deprecated: set [[evm]] rpc_timeout_seconds"
        ),
        "{stdout}"
    );
    assert!(
        warns[1].contains(
            "config: health.min_evm_signer_balance_wei is deprecated: set [[evm]] \
             min_signer_balance_wei"
        ),
        "{stdout}"
    );
    // The new keys: no warning.
    let out = check(
        "new-keys",
        &base("", "rpc_timeout_seconds = 3\nmin_signer_balance_wei = 1"),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("WARN"), "{stdout}");
}

/// The shipped example passes `--check` (with signer keys and the API keys' SHA-256 from the
/// environment, on the image's 0.0.0.0) and uses no deprecated key.
#[test]
fn example_config_checks_without_deprecations() {
    let example = include_str!("../../../deploy/config.example.toml");
    let (client, ops) = ("ab".repeat(32), "cd".repeat(32));
    let out = check(
        "example",
        example,
        &[
            ("X402_EVM_SIGNER_KEYS", ANVIL_KEY),
            ("X402_API_KEY_SHA256_CLIENT", &client),
            ("X402_API_KEY_SHA256_OPS", &ops),
            ("X402_LISTEN", "0.0.0.0:8402"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("config ok"), "{stdout}");
    assert!(!stdout.contains("deprecated"), "{stdout}");
}

/// `[redis] mode`: the three modes pass `--check` (nothing is connected); a bad key is named.
#[test]
fn check_accepts_the_three_redis_modes_and_names_a_bad_key() {
    for (name, redis) in [
        ("single", "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n"),
        (
            "single-urls",
            "[redis]\nmode = \"single\"\nurls = [\"rediss://cache.example:6380\"]\n",
        ),
        (
            "sentinel",
            "[redis]\nmode = \"sentinel\"\nurls = [\"redis://10.0.0.1:26379\", \
             \"redis://10.0.0.2:26379\"]\nsentinel_master = \"x402\"\nmin_replicas_acked = 1\n",
        ),
        (
            "cluster",
            "[redis]\nmode = \"cluster\"\nurls = [\"redis://10.0.0.1:7000\"]\nindex_shards = 64\n",
        ),
    ] {
        let out = check(name, &base(redis, ""), &[("X402_REDIS_PASSWORD", "secret")]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("config ok"), "{name}: {stdout}");
        assert!(!stdout.contains("secret"), "{name}: {stdout}");
    }
    for (name, redis, message) in [
        (
            "unknown-mode",
            "[redis]\nmode = \"ring\"\nurl = \"redis://a:1\"\n",
            "unknown variant `ring`",
        ),
        (
            "unknown-key",
            "[redis]\nurl = \"redis://a:1\"\nsentinel = \"x\"\n",
            "unknown field `sentinel`",
        ),
        (
            "sentinel-no-master",
            "[redis]\nmode = \"sentinel\"\nurls = [\"redis://a:26379\"]\n",
            "config: redis.sentinel_master: mode \"sentinel\" needs the name of the group's primary",
        ),
        (
            "cluster-no-urls",
            "[redis]\nmode = \"cluster\"\n",
            "config: redis.urls: mode \"cluster\" needs at least one URL",
        ),
        (
            "cluster-url",
            "[redis]\nmode = \"cluster\"\nurl = \"redis://a:1\"\n",
            "config: redis.url: is the single-node shorthand",
        ),
        (
            "bad-scheme",
            "[redis]\nmode = \"cluster\"\nurls = [\"redis://a:1\", \"http://b:2\"]\n",
            "config: redis.urls[1]: must start with redis:// or rediss://",
        ),
        (
            "two-single",
            "[redis]\nurls = [\"redis://a:1\", \"redis://b:2\"]\n",
            "config: redis.url: mode \"single\" takes one URL",
        ),
        (
            "shards",
            "[redis]\nurl = \"redis://a:1\"\nindex_shards = 0\n",
            "config: redis.index_shards: must be between 1 and 1024",
        ),
    ] {
        let out = check(name, &base(redis, ""), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
}
