# syntax=docker/dockerfile:1
#
# x402 facilitator image.
#
#   docker build -t x402-facilitator .
#   docker run --rm x402-facilitator keygen --name client   # a key for callers + its SHA-256
#   docker run --rm x402-facilitator keygen --name ops --scopes admin
#   docker run --rm -p 8402:8402 \
#     -e X402_EVM_SIGNER_KEYS=0x... -e X402_REDIS_URL=redis://redis:6379/0 \
#     -e X402_API_KEY_SHA256_CLIENT=<sha256> -e X402_API_KEY_SHA256_OPS=<sha256> \
#     -v "$PWD/my-config.toml:/etc/x402/config.toml:ro" x402-facilitator
#   docker run --rm -e X402_EVM_SIGNER_KEYS=0x... -e X402_API_KEY_SHA256_CLIENT=... \
#     -e X402_API_KEY_SHA256_OPS=... x402-facilitator --check         # validate config
#
# The image ships deploy/config.example.toml as /etc/x402/config.toml; mount your own over it.
# It listens on 0.0.0.0, where a start without API keys is refused: the shipped config names
# two keys ("client", "ops") whose SHA-256 come from the environment as above.
# Signer keys are never baked in: pass X402_EVM_SIGNER_KEYS (or X402_EVM_<chainId>_SIGNER_KEYS).

# ---- build -----------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts (BuildKit) keep the crates.io download and the target dir between builds; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p x402-facilitator \
    && install -m 0755 target/release/x402-facilitator /usr/local/bin/x402-facilitator

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to https RPC endpoints and rediss:// (rustls with the system roots).
# Unpinned on purpose: take the distribution's current security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 x402 \
    && useradd --system --uid 10001 --gid x402 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin x402
COPY --from=builder /usr/local/bin/x402-facilitator /usr/local/bin/x402-facilitator
COPY deploy/docker/healthcheck.sh /usr/local/bin/x402-healthcheck
COPY deploy/config.example.toml /etc/x402/config.toml

# Inside a container the facilitator must listen on all interfaces (the file's default is
# 127.0.0.1:8402, unreachable from outside the container). Override with -e X402_LISTEN=...
ENV X402_LISTEN=0.0.0.0:8402 \
    RUST_LOG=info
EXPOSE 8402
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/x402-healthcheck"]
ENTRYPOINT ["/usr/local/bin/x402-facilitator", "--config", "/etc/x402/config.toml"]
CMD []
