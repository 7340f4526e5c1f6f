"""Peer client (Python): the official PyPI `x402` 2.25 client signs an EIP-3009 payment
(x402ClientSync + register_exact_evm_client with an eth_account key, no RPC) and
HTTPFacilitatorClientSync calls GET /supported, POST /verify and POST /settle.

Same env contract as client_verify_settle.mjs:
  FACILITATOR_URL, PAYER_KEY, PAY_TO (required); ASSET (default Base USDC), AMOUNT (default 1000),
  NETWORK (default eip155:8453; v1: a v1 name or an eip155 CAIP-2 id mapped to its name),
  X402_VERSION (1|2, default 2), TOKEN_NAME/TOKEN_VERSION (default "USD Coin"/"2"),
  MAX_TIMEOUT_SECONDS (default 60), SKIP_SETTLE=1.
Stdout: one JSON line {"supported", "verify", "settle", "paymentPayload", "paymentRequirements"};
a call that raised is recorded as {"error": str, "name": ExceptionClass}.
Note: HTTPFacilitatorClientSync raises ValueError for any HTTP status other than 200.
Exit 0 when verify.isValid and settle.success (or SKIP_SETTLE), 1 otherwise, 2 on setup errors.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, "")
    if value == "":
        if default is None:
            raise KeyError(f"missing env {name}")
        return default
    return value


def dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return model


def capture(fn: Callable[[], Any]) -> Any:
    try:
        return dump(fn())
    except Exception as err:  # noqa: BLE001 - recorded for the caller
        return {"error": str(err), "name": type(err).__name__}


def v1_network_name(network: str) -> str:
    if ":" not in network:
        return network
    from x402.mechanisms.evm import V1_NETWORK_CHAIN_IDS

    chain_id = int(network.split(":", 1)[1])
    for name, cid in V1_NETWORK_CHAIN_IDS.items():
        if cid == chain_id:
            return name
    raise ValueError(f"no x402 v1 network name for {network}")


def main() -> int:
    from eth_account import Account
    from x402 import x402ClientSync
    from x402.http import HTTPFacilitatorClientSync
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.schemas import (
        PaymentRequired,
        PaymentRequiredV1,
        PaymentRequirements,
        PaymentRequirementsV1,
        ResourceInfo,
    )

    url = env("FACILITATOR_URL")
    account = Account.from_key(env("PAYER_KEY"))
    pay_to = env("PAY_TO")
    asset = env("ASSET", USDC_BASE)
    amount = env("AMOUNT", "1000")
    version = int(env("X402_VERSION", "2"))
    network = env("NETWORK", "eip155:8453")
    extra = {"name": env("TOKEN_NAME", "USD Coin"), "version": env("TOKEN_VERSION", "2")}
    max_timeout = int(env("MAX_TIMEOUT_SECONDS", "60"))
    resource_url = "http://127.0.0.1/peer-client"

    if version == 2:
        requirements: Any = PaymentRequirements(
            scheme="exact", network=network, amount=amount, asset=asset, pay_to=pay_to,
            max_timeout_seconds=max_timeout, extra=extra,
        )
        payment_required: Any = PaymentRequired(
            x402_version=2,
            resource=ResourceInfo(url=resource_url, description="peer client", mime_type="application/json"),
            accepts=[requirements],
        )
    elif version == 1:
        requirements = PaymentRequirementsV1(
            scheme="exact", network=v1_network_name(network), max_amount_required=amount,
            resource=resource_url, description="peer client", mime_type="application/json",
            pay_to=pay_to, max_timeout_seconds=max_timeout, asset=asset, extra=extra,
        )
        payment_required = PaymentRequiredV1(x402_version=1, accepts=[requirements])
    else:
        raise ValueError(f"X402_VERSION must be 1 or 2, got {version}")

    client = x402ClientSync()
    register_exact_evm_client(client, account)
    payload = client.create_payment_payload(payment_required)

    skip_settle = os.environ.get("SKIP_SETTLE") == "1"
    with HTTPFacilitatorClientSync({"url": url}) as facilitator:
        supported = capture(facilitator.get_supported)
        verify = capture(lambda: facilitator.verify(payload, requirements))
        settle = None if skip_settle else capture(lambda: facilitator.settle(payload, requirements))

    out = {
        "supported": supported,
        "verify": verify,
        "settle": settle,
        "paymentPayload": dump(payload),
        "paymentRequirements": dump(requirements),
    }
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    ok = isinstance(verify, dict) and verify.get("isValid") is True and (
        skip_settle or (isinstance(settle, dict) and settle.get("success") is True)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as err:  # noqa: BLE001
        sys.stdout.write(json.dumps({"setupError": {"error": str(err), "name": type(err).__name__}}) + "\n")
        sys.exit(2)
