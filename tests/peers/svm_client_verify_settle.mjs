// Peer client for Solana: the official @x402/svm `exact` client (ExactSvmScheme, or ExactSvmSchemeV1
// for x402Version 1) builds and partially signs a payment transaction for the given requirements,
// reading the mint and a blockhash from SOLANA_RPC_URL; then the payment goes to the facilitator
// twice over: raw `fetch` POSTs of /verify and /settle (the JSON exactly as answered), and the
// official @x402/core HTTPFacilitatorClient (GET /supported, POST /verify, POST /settle; that
// second /settle is a retry of the settled payment and must return the first receipt).
//
// Env:
//   FACILITATOR_URL    (required) e.g. http://127.0.0.1:8080
//   PAYER_KEY          (required) base58 of the payer's 64-byte keypair (secret ‖ public key)
//   SOLANA_RPC_URL     (required) JSON-RPC URL the client reads the mint and blockhash from
//   REQUIREMENTS_JSON  (required) one PaymentRequirements object (v2 shape, or v1 with
//                      X402_VERSION=1), with extra.feePayer; used as the only `accepts` entry
//   X402_VERSION       1 or 2 (default 2)
//   SKIP_SETTLE=1      only /supported and /verify
//
// Stdout: one JSON line
//   {"supported", "verify", "settle", "client": {"verify", "settle"}, "paymentPayload",
//    "paymentRequirements", "transaction": {decoded summary of payload.transaction}}
// `verify`/`settle` are the raw HTTP answers {status, body}; `client.*` the HTTPFacilitatorClient
// results. A call that throws is recorded as {"error", "name", "statusCode"?, ...fields}.
// Exit 0 when both verifies are valid and both settles succeed (or SKIP_SETTLE), 1 otherwise,
// 2 on setup errors.
import { HTTPFacilitatorClient } from "@x402/core/http";
import { x402Client } from "@x402/core/client";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { ExactSvmSchemeV1 } from "@x402/svm/exact/v1/client";
import {
  createKeyPairSignerFromBytes,
  getBase58Encoder,
  getBase58Decoder,
  getBase64Encoder,
  getTransactionDecoder,
  getCompiledTransactionMessageDecoder,
} from "@solana/kit";
import { capture, env, errorJson } from "./env.mjs";


async function post(url, path, body) {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

const hex = bytes => Buffer.from(bytes).toString("hex");

/** What the client put in the transaction: version, header, keys, instructions, blockhash. */
function describe(base64Tx) {
  const tx = getTransactionDecoder().decode(getBase64Encoder().encode(base64Tx));
  const message = getCompiledTransactionMessageDecoder().decode(tx.messageBytes);
  const b58 = getBase58Decoder();
  const keys = message.staticAccounts;
  return {
    version: message.version,
    header: message.header,
    staticAccounts: keys,
    lifetimeToken: message.lifetimeToken,
    signatures: Object.fromEntries(
      Object.entries(tx.signatures).map(([k, s]) => [k, s ? b58.decode(s) : null])),
    instructions: message.instructions.map(ix => ({
      program: keys[ix.programAddressIndex],
      accounts: (ix.accountIndices ?? []).map(i => keys[i]),
      data: hex(ix.data ?? new Uint8Array()),
    })),
    addressTableLookups: message.addressTableLookups ?? [],
  };
}

async function main() {
  const url = env("FACILITATOR_URL");
  const rpcUrl = env("SOLANA_RPC_URL");
  const version = Number(env("X402_VERSION", "2"));
  const paymentRequirements = JSON.parse(env("REQUIREMENTS_JSON"));
  const signer = await createKeyPairSignerFromBytes(getBase58Encoder().encode(env("PAYER_KEY")));

  const client = new x402Client();
  let paymentRequired;
  if (version === 2) {
    client.register(paymentRequirements.network, new ExactSvmScheme(signer, { rpcUrl }));
    paymentRequired = {
      x402Version: 2,
      resource: { url: "http://127.0.0.1/peer-client", description: "peer client",
        mimeType: "application/json" },
      accepts: [paymentRequirements],
    };
  } else if (version === 1) {
    client.registerV1(paymentRequirements.network, new ExactSvmSchemeV1(signer, { rpcUrl }));
    paymentRequired = { x402Version: 1, accepts: [paymentRequirements] };
  } else {
    throw new Error(`X402_VERSION must be 1 or 2, got ${version}`);
  }
  const paymentPayload = await client.createPaymentPayload(paymentRequired);
  const transaction = describe(paymentPayload.payload.transaction);
  const body = { x402Version: paymentPayload.x402Version, paymentPayload, paymentRequirements };
  const skipSettle = process.env.SKIP_SETTLE === "1";

  // Raw HTTP (the exact JSON our facilitator answers) and the official facilitator client
  // (zod-validated answers): both verify before anything settles; the client's settle comes
  // second, so it is a retry of the settled payment: one success per payment, so it must be
  // duplicate_settlement naming the settled transaction (x402-conformance F3).
  const facilitator = new HTTPFacilitatorClient({ url });
  const supported = await capture(() => facilitator.getSupported());
  const verify = await capture(() => post(url, "/verify", body));
  const clientVerify = await capture(() => facilitator.verify(paymentPayload, paymentRequirements));
  const settle = skipSettle ? null : await capture(() => post(url, "/settle", body));
  const clientSettle = skipSettle
    ? null
    : await capture(() => facilitator.settle(paymentPayload, paymentRequirements));

  process.stdout.write(JSON.stringify({
    supported, verify, settle, client: { verify: clientVerify, settle: clientSettle },
    paymentPayload, paymentRequirements, transaction, payer: signer.address,
  }) + "\n");
  const ok = verify?.body?.isValid === true && clientVerify?.isValid === true
    && (skipSettle || (settle?.body?.success === true && clientSettle?.success !== true
      && clientSettle?.errorReason === "duplicate_settlement"));
  process.exitCode = ok ? 0 : 1;
}

main().catch(err => {
  process.stdout.write(JSON.stringify({ setupError: { ...errorJson(err), stack: err?.stack } })
    + "\n");
  process.exitCode = 2;
});
