// Parity with the native core: for the three presets × every jitter strategy × seeds 0..1000,
// the plan and a sequence of decisions through the package (the component, via jco) equal what
// `ricochet-core` computes natively — produced in this run by the workspace's example binary
// `core/examples/parity_vectors.rs`, never checked-in numbers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { load } from "../src/index.js";

const workspace = fileURLToPath(new URL("../../..", import.meta.url));

function nativeVectors() {
  const out = execFileSync("cargo", ["run", "-q", "-p", "ricochet-core", "--example", "parity_vectors"], {
    cwd: workspace,
    maxBuffer: 64 << 20,
    encoding: "utf8",
  });
  return out.trim().split("\n").map((line) => JSON.parse(line));
}

test("plans and decisions equal the native core's for 3 presets × 5 strategies × 1000 seeds", async () => {
  const vectors = nativeVectors();
  assert.equal(vectors.length, 3 * 5 * 1000);
  const r = await load();
  const policies = new Map();
  let delays = 0;
  let decisions = 0;
  for (const v of vectors) {
    const key = `${v.preset}/${v.strategy}`;
    if (!policies.has(key)) policies.set(key, r.policy({ ...r.preset(v.preset), strategy: v.strategy }));
    const policy = policies.get(key);
    const seed = BigInt(v.seed);
    const expectedPlan = v.plan.map(([retry, base, delay]) => ({ retry, baseDelayUs: Number(base), delayUs: Number(delay) }));
    assert.deepEqual(policy.plan(seed), expectedPlan, `${key} seed ${v.seed}`);
    delays += expectedPlan.length;
    let state = policy.start({ seed, nowUs: BigInt(v.decisions[0].now_us) });
    for (const d of v.decisions) {
      const failure = {
        category: d.category,
        serverDelayUs: d.server_delay_us === null ? undefined : BigInt(d.server_delay_us),
        tokenRefreshed: d.token_refreshed,
      };
      const got = policy.decide(state, failure, BigInt(d.now_us));
      const expected = d.retry ? { retry: true, delayUs: Number(d.delay_us) } : { retry: false, reason: d.reason };
      assert.deepEqual(got.decision, expected, `${key} seed ${v.seed} after ${d.category}`);
      const expectedState = { calls: d.state.calls, prevDelayUs: BigInt(d.state.prev_delay_us), authRetried: d.state.auth_retried };
      const { calls, prevDelayUs, authRetried } = got.state;
      assert.deepEqual({ calls, prevDelayUs, authRetried }, expectedState, `${key} seed ${v.seed} state after ${d.category}`);
      state = got.state;
      decisions++;
    }
  }
  assert.ok(delays > 30_000 && decisions > 30_000, `${delays} delays, ${decisions} decisions compared`);
});

test("every preset comes from the core, and a bad config names its field", async () => {
  const r = await load();
  for (const name of r.presets) assert.equal(r.policy(name).config.max_attempts, r.preset(name).max_attempts);
  assert.equal(r.preset("aggressive").max_attempts, 5);
  assert.throws(() => r.policy({ jitter_factor: 1.5 }), { name: "ConfigError", field: "jitter_factor", message: /1\.5/ });
  assert.throws(() => r.policy({ max_attempts: 0 }), { field: "max_attempts" });
  assert.throws(() => r.policy({ initial_delay: "fast" }), { field: "initial_delay" });
  assert.throws(() => r.policy({ max_atempts: 3 }), { field: "max_atempts" });
  assert.throws(() => r.policy({ retry_on: ["flaky"] }), { field: "retry_on", message: /flaky/ });
  assert.throws(() => r.preset("reckless"), { field: "policy" });
});

test("policy files in JSON: extends, presets by name, fields that replace the base's", async () => {
  const r = await load();
  const file = JSON.stringify({
    retry_policies: {
      aggressive: { max_attempts: 7 },
      critical: { extends: "aggressive", initial_delay: 0.2, retry_on: ["ConnectionError", "rate_limited"] },
      payments: { max_delay: 2.5 },
      broken: { exponential_base: 0.5 },
    },
  });
  assert.equal(r.policyFile(file, "aggressive").max_attempts, 7);
  const critical = r.policyFile(file, "critical");
  assert.equal(critical.max_attempts, 7);
  assert.equal(critical.initial_delay, 0.2);
  assert.deepEqual(r.policy(critical).config.retry_on, ["connection_error", "rate_limited"]);
  assert.equal(r.policyFile(file, "payments").max_attempts, r.preset("default").max_attempts);
  assert.throws(() => r.policyFile(file, "broken"), { field: "exponential_base" });
  assert.throws(() => r.policyFile(file, "missing"), { field: "policy" });
});

test("Retry-After in all three HTTP-date forms, RateLimit and X-RateLimit-Reset, read by the core", async () => {
  const r = await load();
  const now = 784_111_777_000_000n; // Sun, 06 Nov 1994 08:49:37 GMT
  for (const date of ["Sun, 06 Nov 1994 08:49:39 GMT", "Sunday, 06-Nov-94 08:49:39 GMT", "Sun Nov  6 08:49:39 1994"]) {
    assert.equal(r.serverDelay("Retry-After", date, now), 2_000_000, date);
  }
  assert.equal(r.serverDelay("retry-after", "3", now), 3_000_000);
  assert.equal(r.serverDelay("RateLimit", '"q";r=0;t=4', now), 4_000_000);
  assert.equal(r.serverDelay("X-RateLimit-Reset", "5", now), 5_000_000);
  assert.equal(r.serverDelay("Retry-After", "soon", now), undefined);
  assert.deepEqual(r.classify(429, { "Retry-After": "Sun, 06 Nov 1994 08:49:38 GMT" }, now), {
    category: "rate_limited",
    serverDelayUs: 1_000_000,
    tokenRefreshed: false,
  });
  // A field the server sent twice reaches `Headers.get` joined ("0, 1"): its longest line holds,
  // as in the Rust layer (a retry never sooner than any line asked).
  const twice = new Headers([["retry-after", "0"], ["retry-after", "1"]]);
  assert.equal(twice.get("retry-after"), "0, 1");
  assert.equal(r.classify(429, twice, now).serverDelayUs, 1_000_000);
  const dates = new Headers([["retry-after", "Sun, 06 Nov 1994 08:49:39 GMT"], ["retry-after", "1"]]);
  assert.equal(r.classify(429, dates, now).serverDelayUs, 2_000_000);
  assert.equal(r.classify(503, {}, now).category, "service_unavailable_error");
  assert.equal(r.classify(400, {}, now).category, "validation_error");
  assert.equal(r.classify(204, {}, now), undefined);
});
