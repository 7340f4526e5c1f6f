#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need (anvil and Circle's USDC artifacts
# from npm into .tools/, redis-server from apt if absent, the official x402 SDKs from npm and PyPI,
# the local Solana RPC server x402-surfnet built from tools/surfnet by scripts/install-surfnet.sh),
# then the whole Cargo workspace's tests: unit tests, end-to-end tests on anvil + real USDC +
# Redis over real HTTP, and the peer-SDK acceptance tests.
# Usage: scripts/test.sh [extra cargo test / nextest arguments]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/x402-target}"

bash scripts/install-tools.sh
bash scripts/install-surfnet.sh
bash scripts/install-peers.sh

# The fault tests run the real binary (kill -9 mid-settlement): build it first.
cargo build --workspace --all-targets

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
