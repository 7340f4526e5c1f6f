#!/usr/bin/env bash
# Builds the local Solana JSON-RPC test server (tools/surfnet, surfpool's offline simnet; its own
# Cargo workspace) and links it at <repo>/.tools/bin/x402-surfnet (git-ignored).
# Debug profile, --locked, target dir outside the clone so that it survives fresh checkouts:
#   X402_SURFNET_TARGET_DIR (default ~/.cache/x402-surfnet-target).
# A cold build takes about 18 minutes and 4.4 GB; when the binary is up to date this is cargo's
# freshness check only (a few seconds). Quiet on success, loud on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
TARGET_DIR="${X402_SURFNET_TARGET_DIR:-$HOME/.cache/x402-surfnet-target}"
BUILT_BIN="$TARGET_DIR/debug/x402-surfnet"
LINK="$TOOLS/bin/x402-surfnet"

SCRIPT_NAME=install-surfnet.sh
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

command -v cargo >/dev/null 2>&1 || fail "cargo not found (needed to build tools/surfnet)"

if [[ ! -x "$BUILT_BIN" ]]; then
    echo "$SCRIPT_NAME: building x402-surfnet into $TARGET_DIR (cold build: about 18 minutes)" >&2
fi
quiet env CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --locked --manifest-path "$ROOT/tools/surfnet/Cargo.toml" --bin x402-surfnet
[[ -x "$BUILT_BIN" ]] || fail "binary missing after cargo build: $BUILT_BIN"

if [[ "$(readlink "$LINK" 2>/dev/null || true)" != "$BUILT_BIN" ]]; then
    mkdir -p "$TOOLS/bin"
    ln -sfn "$BUILT_BIN" "$LINK"
fi
