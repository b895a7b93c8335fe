// Type-checked by test.sh (tsc --noEmit): the declarations in src/index.d.ts describe the API as used.
import { retryFetch, load, type RetryConfig, ConfigError } from "../src/index.js";
async function main(): Promise<void> {
  const r = await load();
  const c: RetryConfig = r.preset("default");
  const p = r.policy({ ...c, max_attempts: 4 });
  const s = p.start();
  const d = p.decide(s, { category: "rate_limited", serverDelayUs: 1000 });
  if (d.decision.retry) console.log(d.decision.delayUs);
  const res: Response = await retryFetch("http://x", { policy: "aggressive", attemptTimeoutMs: 10 });
  console.log(res.status, ConfigError);
}
void main;
