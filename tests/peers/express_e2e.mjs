// Peer end-to-end: official @x402/express resource server (paymentMiddleware + x402ResourceServer +
// HTTPFacilitatorClient pointed at FACILITATOR_URL) and the official @x402/fetch buyer
// (wrapFetchWithPayment + x402Client + exact EVM client scheme with a viem account).
// The facilitator must be running before this starts (the middleware reads /supported at start).
//
// Env:
//   FACILITATOR_URL  (required)
//   PAYER_KEY        (required) 0x private key of the buyer
//   PAY_TO           (required) seller address
//   PRICE            (default "$0.001"; "$" prices resolve to the network's default USDC)
//   NETWORK          CAIP-2 (default eip155:8453)
//   SCHEME           "exact" (default) or "upto" (@x402/evm's upto server and client schemes)
//   PRICE_JSON       an AssetAmount {"amount","asset","extra"} used instead of PRICE (e.g. a plain
//                    ERC-20 with extra.assetTransferMethod = "permit2")
//   ALLOW_ASSET      a non-default token the buyer may pay (SDK spend controls)
//   CHARGE           upto: the route settles this amount (atomic units) through
//                    setSettlementOverrides, after the work
//
// Stdout: one JSON line
//   {"status402":402, "status200":200, "paymentRequired":{…decoded PAYMENT-REQUIRED…},
//    "paymentResponse":{…decoded PAYMENT-RESPONSE…}, "body":{…}}
// plus "failure" (status, decoded x402 headers, body) when the paid request did not answer 200.
// Exit 0 only when the first answer is 402 and the paid one is 200 with a successful PAYMENT-RESPONSE;
// 1 on a protocol failure, 2 on setup errors (e.g. facilitator unreachable at start).
import express from "express";
import { paymentMiddleware, setSettlementOverrides, x402ResourceServer } from "@x402/express";
import {
  HTTPFacilitatorClient,
  decodePaymentRequiredHeader,
  decodePaymentResponseHeader,
} from "@x402/core/http";
import { ExactEvmScheme as ExactEvmServerScheme } from "@x402/evm/exact/server";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { UptoEvmScheme as UptoEvmClientScheme } from "@x402/evm/upto/client";
import { UptoEvmScheme as UptoEvmServerScheme } from "@x402/evm/upto/server";
import { privateKeyToAccount } from "viem/accounts";
import { env } from "./env.mjs";

function tryDecode(fn, value) {
  if (!value) return undefined;
  try {
    return fn(value);
  } catch (err) {
    return { undecodable: value, error: String(err?.message ?? err) };
  }
}

async function readBody(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function listen(app) {
  return new Promise((resolve, reject) => {
    const server = app.listen(0, "127.0.0.1", () => resolve(server));
    server.once("error", reject);
  });
}

async function main() {
  const facilitatorUrl = env("FACILITATOR_URL");
  const account = privateKeyToAccount(env("PAYER_KEY"));
  const payTo = env("PAY_TO");
  const price = process.env.PRICE_JSON ? JSON.parse(process.env.PRICE_JSON) : env("PRICE", "$0.001");
  const network = env("NETWORK", "eip155:8453");
  const scheme = env("SCHEME", "exact");
  const upto = scheme === "upto";

  const resourceServer = new x402ResourceServer(
    new HTTPFacilitatorClient({ url: facilitatorUrl }),
  ).register(network, upto ? new UptoEvmServerScheme() : new ExactEvmServerScheme());
  // Fail fast (exit 2) when the facilitator's /supported is unusable, instead of a 500 on first request.
  await resourceServer.initialize();

  const app = express();
  app.use(
    paymentMiddleware(
      {
        "GET /weather": {
          accepts: { scheme, price, network, payTo },
          description: "Weather report",
          mimeType: "application/json",
        },
      },
      resourceServer,
    ),
  );
  app.get("/weather", (_req, res) => {
    if (upto && process.env.CHARGE) {
      // Metered: the work cost CHARGE, settled after the handler.
      setSettlementOverrides(res, { amount: process.env.CHARGE });
    }
    res.json({ report: { weather: "sunny", temperature: 70 } });
  });

  const server = await listen(app);
  const url = `http://127.0.0.1:${server.address().port}/weather`;
  const result = {};
  let ok = false;
  try {
    const unpaid = await fetch(url);
    result.status402 = unpaid.status;
    result.paymentRequired = tryDecode(decodePaymentRequiredHeader, unpaid.headers.get("PAYMENT-REQUIRED"));
    await unpaid.text();

    const buyer = new x402Client();
    if (process.env.ALLOW_ASSET) {
      buyer.setSpendControls({ allowedAssets: [{ network, asset: process.env.ALLOW_ASSET }] });
    }
    if (upto) {
      buyer.register("eip155:*", new UptoEvmClientScheme(account));
    } else {
      registerExactEvmScheme(buyer, { signer: account });
    }
    const fetchWithPayment = wrapFetchWithPayment(fetch, buyer);
    const paid = await fetchWithPayment(url, { method: "GET" });
    result.status200 = paid.status;
    result.paymentResponse = tryDecode(decodePaymentResponseHeader, paid.headers.get("PAYMENT-RESPONSE"));
    const body = await readBody(paid);
    if (paid.status === 200) {
      result.body = body;
    } else {
      result.failure = {
        status: paid.status,
        paymentRequired: tryDecode(decodePaymentRequiredHeader, paid.headers.get("PAYMENT-REQUIRED")),
        body,
      };
    }
    ok = result.status402 === 402 && paid.status === 200 && result.paymentResponse?.success === true;
  } finally {
    server.closeAllConnections?.();
    await new Promise(resolve => server.close(() => resolve()));
  }
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = ok ? 0 : 1;
}

main().catch(err => {
  const cause = err?.cause ? ` (cause: ${err.cause?.message ?? err.cause})` : "";
  process.stdout.write(JSON.stringify({ setupError: { error: `${err?.message ?? err}${cause}`, name: err?.name } }) + "\n");
  process.exitCode = 2;
});
