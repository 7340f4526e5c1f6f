#!/usr/bin/env bash
# One real x402 payment, end to end, on a local chain:
#   anvil (chain 8453) + Circle's real USDC (FiatTokenV2_2) at the Base USDC address,
#   Redis (127.0.0.1:6379 if it answers, else a private redis-server),
#   the real `x402-facilitator` binary, and /supported → /verify → /settle over HTTP
#   for 0.01 USDC from anvil account 2 to account 3.
#
# Needs: cargo (Rust 1.95+), npm (anvil + USDC artifacts go into .tools), and redis-server
# (installed with apt-get when absent). Exits non-zero if anything fails.
#
# Usage: bash scripts/demo.sh        (respects CARGO_TARGET_DIR)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || { echo "demo.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

echo "==> tools: anvil, USDC artifacts, redis-server (scripts/install-tools.sh)"
bash scripts/install-tools.sh

echo "==> build: x402-facilitator + demo"
cargo build --quiet -p x402-facilitator -p x402-tests --bins

echo "==> run"
# `cargo run` finds the target directory (CARGO_TARGET_DIR or ./target); the demo starts the
# x402-facilitator binary that sits next to it.
exec cargo run --quiet -p x402-tests --bin demo -- "$@"
