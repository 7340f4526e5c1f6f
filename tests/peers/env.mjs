// Shared by the peer scripts: every setting comes from the environment.

/** The value of env var `name`; `fallback` when unset or empty; throws when required and absent. */
export function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === "") {
    if (fallback === undefined) throw new Error(`missing env ${name}`);
    return fallback;
  }
  return v;
}
