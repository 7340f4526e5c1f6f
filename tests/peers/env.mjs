// Shared by the peer scripts: every setting comes from the environment; a call that throws is
// recorded in place of its result.

/** The value of env var `name`; `fallback` when unset or empty; throws when required and absent. */
export function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === "") {
    if (fallback === undefined) throw new Error(`missing env ${name}`);
    return fallback;
  }
  return v;
}

/** A thrown error as JSON: message, name, and the x402 fields the SDK errors carry. */
export function errorJson(err) {
  const out = { error: err?.message ?? String(err), name: err?.name ?? typeof err };
  for (const k of ["statusCode", "invalidReason", "invalidMessage", "errorReason", "errorMessage",
    "payer", "transaction", "network"]) {
    if (err && err[k] !== undefined) out[k] = err[k];
  }
  return out;
}

/** The result of `fn()`, or its error as [`errorJson`]. */
export async function capture(fn) {
  try {
    return await fn();
  } catch (err) {
    return errorJson(err);
  }
}
