// Peer client for the `upto` scheme: the official @x402/evm upto server scheme builds the
// requirements from this facilitator's GET /supported kind (it adds `assetTransferMethod` and
// `extra.facilitatorAddress`), the official @x402/evm upto client signs the Permit2
// authorization of the maximum, and @x402/core's HTTPFacilitatorClient calls POST /verify (the
// maximum) and POST /settle with `amount` set to the actual charge (what a resource server's
// settlement override sends).
//
// Env:
//   FACILITATOR_URL    (required)
//   PAYER_KEY          (required) 0x private key of the payer
//   REQUIREMENTS_JSON  (required) v2 PaymentRequirements of scheme "upto" (amount = the maximum)
//   CHARGE             (required) the amount to settle, atomic units
//   ALLOW_ASSET        a non-default token the client may pay
//   SETTLE_AGAIN=1     settle the identical request once more (must not succeed)
//
// Stdout: one JSON line {"supported", "kind", "verify", "settle", "settleAgain"?,
// "paymentPayload", "paymentRequirements"}. Exit 0 when verify.isValid and settle.success (and
// the replay did not succeed), 1 otherwise, 2 on setup errors.
import { HTTPFacilitatorClient } from "@x402/core/http";
import { x402Client } from "@x402/core/client";
import { UptoEvmScheme as UptoClient } from "@x402/evm/upto/client";
import { UptoEvmScheme as UptoServer } from "@x402/evm/upto/server";
import { privateKeyToAccount } from "viem/accounts";
import { capture, env, errorJson } from "./env.mjs";

async function main() {
  const url = env("FACILITATOR_URL");
  const account = privateKeyToAccount(env("PAYER_KEY"));
  const base = JSON.parse(env("REQUIREMENTS_JSON"));
  const charge = env("CHARGE");

  const facilitator = new HTTPFacilitatorClient({ url });
  const supported = await facilitator.getSupported();
  const kind = supported.kinds.find(k => k.scheme === "upto" && k.network === base.network);
  if (!kind) throw new Error(`no upto kind for ${base.network} in /supported`);
  const paymentRequirements = await new UptoServer().enhancePaymentRequirements(base, kind, []);

  const client = new x402Client();
  if (process.env.ALLOW_ASSET) {
    client.setSpendControls({
      allowedAssets: [{ network: base.network, asset: process.env.ALLOW_ASSET }],
    });
  }
  client.register("eip155:*", new UptoClient(account));
  const paymentPayload = await client.createPaymentPayload({
    x402Version: 2,
    resource: { url: "http://127.0.0.1/upto", description: "metered", mimeType: "application/json" },
    accepts: [paymentRequirements],
  });

  const verify = await capture(() => facilitator.verify(paymentPayload, paymentRequirements));
  const charged = { ...paymentRequirements, amount: charge };
  const settle = await capture(() => facilitator.settle(paymentPayload, charged));
  const again = process.env.SETTLE_AGAIN === "1";
  const settleAgain = again
    ? await capture(() => facilitator.settle(paymentPayload, charged))
    : undefined;

  process.stdout.write(JSON.stringify({
    supported, kind, verify, settle, settleAgain, paymentPayload, paymentRequirements,
  }) + "\n");
  const ok = verify?.isValid === true && settle?.success === true
    && (!again || settleAgain?.success !== true);
  process.exitCode = ok ? 0 : 1;
}

main().catch(err => {
  process.stdout.write(JSON.stringify({ setupError: errorJson(err) }) + "\n");
  process.exitCode = 2;
});
