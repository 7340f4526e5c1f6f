// Peer client: the official @x402/evm client signs an EIP-3009 payment and the official
// @x402/core HTTPFacilitatorClient calls GET /supported, POST /verify and POST /settle.
//
// Env:
//   FACILITATOR_URL  (required) e.g. http://127.0.0.1:8080
//   PAYER_KEY        (required) 0x-prefixed secp256k1 private key of the payer
//   PAY_TO           (required) recipient address
//   ASSET            token address (default Base USDC 0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913)
//   AMOUNT           atomic amount (default 1000)
//   NETWORK          CAIP-2 (default eip155:8453); for X402_VERSION=1 a v1 name ("base") or a CAIP-2
//                    eip155 id that is mapped to its v1 name
//   X402_VERSION     1 or 2 (default 2)
//   TOKEN_NAME / TOKEN_VERSION   EIP-712 domain in extra (default "USD Coin" / "2")
//   MAX_TIMEOUT_SECONDS          (default 60)
//   REQUIREMENTS_JSON  a whole PaymentRequirements object (v1 or v2 shape as X402_VERSION says),
//                    used verbatim as the only `accepts` entry (e.g. from our POST /requirements);
//                    ASSET/AMOUNT/NETWORK/TOKEN_*/MAX_TIMEOUT_SECONDS are then ignored
//   ALLOW_ASSET      a non-default token the client may pay (SDK spend controls allow only
//                    default assets otherwise), e.g. the plain ERC-20 of the Permit2 tests
//   SKIP_SETTLE=1    only /supported and /verify
//   SETTLE_AGAIN=1   after the first /settle, settle the identical payload once more (replay);
//                    its answer is printed as "settleAgain" (one success per payment: it must
//                    not be a success, unless PAYMENT_IDENTIFIER=1)
//   PENDING_RETRY=1  settle through @x402/core's x402ResourceServer.settleWithPendingRetry (one
//                    retry of a `settlement_pending` answer); every facilitator answer is printed
//                    in "settleAttempts"
//   PAYMENT_IDENTIFIER=1  the 402 declares @x402/extensions' `payment-identifier` and the client
//                    appends an id (appendPaymentIdentifierToExtensions): the replay with the id
//                    ("settleAgain") must get the same success again; the payload without the
//                    extension is settled once more ("settleWithoutId", must not succeed)
//
// Stdout: one JSON line
//   {"supported":…, "verify":…, "settle":…, "settleAgain"?:…, "paymentPayload":…,
//    "paymentRequirements":…}
// A call that throws is recorded as {"error": message, "name": ErrorClass, "statusCode"?, ...fields}.
// Exit 0 when verify.isValid and settle.success (or SKIP_SETTLE), 1 otherwise, 2 on setup errors.
import { HTTPFacilitatorClient } from "@x402/core/http";
import { x402ResourceServer } from "@x402/core/server";
import { x402Client } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { EVM_NETWORK_CHAIN_ID_MAP } from "@x402/evm/v1";
import { privateKeyToAccount } from "viem/accounts";
import {
  PAYMENT_IDENTIFIER, appendPaymentIdentifierToExtensions, declarePaymentIdentifierExtension,
  extractPaymentIdentifier,
} from "@x402/extensions/payment-identifier";
import { capture, env, errorJson } from "./env.mjs";


function v1NetworkName(network) {
  if (!network.includes(":")) return network;
  const chainId = Number(network.split(":")[1]);
  const name = Object.entries(EVM_NETWORK_CHAIN_ID_MAP).find(([, id]) => id === chainId)?.[0];
  if (!name) throw new Error(`no x402 v1 network name for ${network}`);
  return name;
}

async function main() {
  const url = env("FACILITATOR_URL");
  const account = privateKeyToAccount(env("PAYER_KEY"));
  const payTo = env("PAY_TO");
  const asset = env("ASSET", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
  const amount = env("AMOUNT", "1000");
  const version = Number(env("X402_VERSION", "2"));
  const network = env("NETWORK", "eip155:8453");
  const extra = { name: env("TOKEN_NAME", "USD Coin"), version: env("TOKEN_VERSION", "2") };
  const maxTimeoutSeconds = Number(env("MAX_TIMEOUT_SECONDS", "60"));
  const resourceUrl = "http://127.0.0.1/peer-client";

  let paymentRequired;
  if (version === 2) {
    paymentRequired = {
      x402Version: 2,
      resource: { url: resourceUrl, description: "peer client", mimeType: "application/json" },
      accepts: [{ scheme: "exact", network, amount, asset, payTo, maxTimeoutSeconds, extra }],
    };
  } else if (version === 1) {
    paymentRequired = {
      x402Version: 1,
      accepts: [{
        scheme: "exact", network: v1NetworkName(network), maxAmountRequired: amount,
        resource: resourceUrl, description: "peer client", mimeType: "application/json",
        payTo, maxTimeoutSeconds, asset, extra,
      }],
    };
  } else {
    throw new Error(`X402_VERSION must be 1 or 2, got ${version}`);
  }
  if (process.env.REQUIREMENTS_JSON) {
    paymentRequired.accepts = [JSON.parse(process.env.REQUIREMENTS_JSON)];
  }
  const paymentRequirements = paymentRequired.accepts[0];
  const withId = process.env.PAYMENT_IDENTIFIER === "1";
  if (withId) {
    // The resource server declares the extension; the client appends its id.
    paymentRequired.extensions = { [PAYMENT_IDENTIFIER]: declarePaymentIdentifierExtension(false) };
    appendPaymentIdentifierToExtensions(paymentRequired.extensions);
  }

  const client = new x402Client();
  if (process.env.ALLOW_ASSET) {
    client.setSpendControls({
      allowedAssets: [{ network: paymentRequirements.network, asset: process.env.ALLOW_ASSET }],
    });
  }
  registerExactEvmScheme(client, { signer: account });
  const paymentPayload = await client.createPaymentPayload(paymentRequired);
  if (withId && !extractPaymentIdentifier(paymentPayload)) {
    paymentPayload.extensions = { ...(paymentPayload.extensions ?? {}), ...paymentRequired.extensions };
  }
  const paymentId = withId ? extractPaymentIdentifier(paymentPayload) : undefined;

  const facilitator = new HTTPFacilitatorClient({ url });
  const supported = await capture(() => facilitator.getSupported());
  const verify = await capture(() => facilitator.verify(paymentPayload, paymentRequirements));
  const skipSettle = process.env.SKIP_SETTLE === "1";
  const settleAttempts = [];
  const recording = {
    settle: async (payload, requirements) => {
      const started = Date.now();
      try {
        const answer = await facilitator.settle(payload, requirements);
        settleAttempts.push({ ...answer, elapsedMs: Date.now() - started });
        return answer;
      } catch (err) {
        settleAttempts.push({ ...errorJson(err), elapsedMs: Date.now() - started });
        throw err;
      }
    },
  };
  const settle = skipSettle
    ? null
    : process.env.PENDING_RETRY === "1"
      ? await capture(() => x402ResourceServer.prototype.settleWithPendingRetry.call(
        undefined, recording, paymentPayload, paymentRequirements))
      : await capture(() => facilitator.settle(paymentPayload, paymentRequirements));

  const settleAgainWanted = !skipSettle && process.env.SETTLE_AGAIN === "1";
  const settleAgain = settleAgainWanted
    ? await capture(() => facilitator.settle(paymentPayload, paymentRequirements))
    : undefined;

  let settleWithoutId;
  if (withId && !skipSettle) {
    const { extensions, ...stripped } = paymentPayload;
    settleWithoutId = await capture(() => facilitator.settle(stripped, paymentRequirements));
  }

  process.stdout.write(JSON.stringify({
    supported, verify, settle, settleAgain, settleWithoutId, settleAttempts, paymentId,
    paymentPayload, paymentRequirements,
  }) + "\n");
  const againOk = withId ? settleAgain?.success === true : settleAgain?.success !== true;
  const ok = verify?.isValid === true && (skipSettle || settle?.success === true)
    && (!settleAgainWanted || againOk) && settleWithoutId?.success !== true;
  process.exitCode = ok ? 0 : 1;
}

main().catch(err => {
  process.stdout.write(JSON.stringify({ setupError: errorJson(err) }) + "\n");
  process.exitCode = 2;
});
