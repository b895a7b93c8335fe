// ricochet for workerd and Cloudflare Workers: the same API as the package's main entry, with the
// engine's core modules imported as Wasm modules (these runtimes refuse to compile Wasm at run
// time). Bundlers that know the `workerd` export condition pick this file for `ricochet-retry`.

import { getCoreModule } from "../dist/core-modules.workerd.js";
import { load as loadWith } from "./index.js";

export { ConfigError, Policy, RetryError, Ricochet } from "./index.js";

/** Instantiates the engine from the Wasm modules bundled with the Worker. */
export function load(options = {}) {
  return loadWith({ getCoreModule, ...options });
}

let shared;
/** `fetch` with retries, on a shared engine loaded on first use. */
export async function retryFetch(request, options = {}) {
  shared ??= load();
  return (await shared).retryFetch(request, options);
}
