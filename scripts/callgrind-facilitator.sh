#!/usr/bin/env bash
# Runs x402-facilitator under valgrind's callgrind, for instruction counts of the request path:
#   bench --facilitator-bin scripts/callgrind-facilitator.sh --phases verify --verify-requests 2000
# FACILITATOR_BIN: the binary (default: $CARGO_TARGET_DIR/release/x402-facilitator).
# CALLGRIND_OUT: output file (default: /tmp/callgrind.x402-facilitator.<pid>); read it with
# callgrind_annotate. The bench stops replicas with SIGTERM, so callgrind writes it on exit.
set -euo pipefail
BIN="${FACILITATOR_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/x402-target}/release/x402-facilitator}"
exec valgrind --tool=callgrind --quiet \
    --callgrind-out-file="${CALLGRIND_OUT:-/tmp/callgrind.x402-facilitator.%p}" "$BIN" "$@"
