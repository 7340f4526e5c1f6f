#!/usr/bin/env bash
# One real x402 payment, end to end, on a local chain:
#   anvil (chain 8453) + Circle's real USDC (FiatTokenV2_2) at the Base USDC address,
#   Redis (127.0.0.1:6379 if it answers, else a private redis-server),
#   the real `x402-facilitator` binary, and /supported → /verify → /settle over HTTP
#   for 0.01 USDC from anvil account 2 to account 3.
# With --solana, then one Solana payment as well: a local Solana RPC server (surfnet) with devnet
#   USDC, the real `x402-facilitator` binary with one [[svm]] network (SOL price fixed at 150 USD),
#   /quote → /requirements → /verify → /settle for 0.01 USDC + fee + the rent of the payee's new
#   token account, and the SOL the fee payer spent next to the quote.
#
# Needs: cargo (Rust 1.95+), npm (anvil + USDC artifacts go into .tools), and redis-server
# (installed with apt-get when absent). --solana also builds tools/surfnet with
# scripts/install-surfnet.sh (about 19 minutes the first time, seconds after).
# Exits non-zero if anything fails.
#
# Usage: bash scripts/demo.sh [--solana]
# Builds into $CARGO_TARGET_DIR, default ~/.cache/x402-target: the same folder as scripts/test.sh,
# so whichever runs second reuses the first one's build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/x402-target}"

usage() { echo "usage: bash scripts/demo.sh [--solana]"; }
SOLANA=0
for arg in "$@"; do
    case "$arg" in
        --solana) SOLANA=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

command -v cargo >/dev/null 2>&1 || { echo "demo.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

echo "==> tools: anvil, USDC artifacts, redis-server (scripts/install-tools.sh)"
bash scripts/install-tools.sh

if (( SOLANA )); then
    echo "==> tools: local Solana RPC server x402-surfnet (scripts/install-surfnet.sh; ~19 min the first time)"
    bash scripts/install-surfnet.sh
fi

echo "==> build: the workspace, exactly as scripts/test.sh builds it (so each reuses the other's build)"
cargo build --quiet --workspace --all-targets

echo "==> run"
# `cargo run` finds the target directory (CARGO_TARGET_DIR or ./target); the demo starts the
# x402-facilitator binary that sits next to it.
exec cargo run --quiet -p x402-demo --bin demo -- "$@"
