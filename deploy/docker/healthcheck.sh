#!/usr/bin/env bash
# Container health check without curl: GET /health over bash's /dev/tcp and succeed only on
# HTTP 200 (the facilitator answers 503 when its replay store, e.g. Redis, is unreachable).
# The port is taken from X402_LISTEN (host:port, default 0.0.0.0:8402); the check always
# connects to 127.0.0.1, so the facilitator must listen on 0.0.0.0 or 127.0.0.1.
set -euo pipefail
port="${X402_LISTEN:-0.0.0.0:8402}"
port="${port##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 3 status <&3
[[ "$status" == "HTTP/1.1 200"* ]]
