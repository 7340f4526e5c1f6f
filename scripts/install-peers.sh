#!/usr/bin/env bash
# Installs the peer implementations used by the acceptance tests (official x402 SDKs we did not write):
#   - npm  tests/peers/node_modules  from tests/peers/package-lock.json (`npm ci`)
#   - pip  <repo>/.tools/venv        from tests/peers/requirements.txt (x402 2.25.0, x402-conformance 1.6.0,
#          check-jsonschema and kubernetes-validate for the packaging tests)
# Idempotent: reinstalls only when a lockfile / requirements file changed. Quiet on success, loud on failure.
# Needs node >= 20 with npm, and python3.11 (or python3 >= 3.10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/tests/peers"
VENV="$ROOT/.tools/venv"
REQS="$PEERS/requirements.txt"
STAMP="$VENV/.peers-requirements.sha256"

SCRIPT_NAME=install-peers.sh
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# --- npm peers -------------------------------------------------------------------------------
command -v npm >/dev/null 2>&1 || fail "npm not found"
[[ -f "$PEERS/package-lock.json" ]] || fail "missing $PEERS/package-lock.json"
# npm writes node_modules/.package-lock.json on every install; older than the lockfile = out of date.
HIDDEN_LOCK="$PEERS/node_modules/.package-lock.json"
if [[ ! -f "$HIDDEN_LOCK" || "$PEERS/package-lock.json" -nt "$HIDDEN_LOCK" || "$PEERS/package.json" -nt "$HIDDEN_LOCK" ]]; then
    quiet npm ci --prefix "$PEERS" --no-audit --no-fund
    [[ -f "$PEERS/node_modules/@x402/core/package.json" ]] || fail "@x402/core missing after npm ci"
fi

# --- Python peers ----------------------------------------------------------------------------
PY=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
        PY="$candidate"
        break
    fi
done
[[ -n "$PY" ]] || fail "python3.11 (or python3 >= 3.10) not found"

# A venv left half-made by an interrupted run (no pip) is made again.
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$ROOT/.tools"
    quiet "$PY" -m venv "$VENV"
fi
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$WANT" != "$HAVE" ]]; then
    quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS"
    "$VENV/bin/python" -c 'import x402, x402conf, yaml' 2>/dev/null || fail "x402 / x402conf / yaml not importable after pip install"
    for tool in check-jsonschema kubernetes-validate; do
        [[ -x "$VENV/bin/$tool" ]] || fail "$tool missing after pip install"
    done
    echo "$WANT" > "$STAMP"
fi
