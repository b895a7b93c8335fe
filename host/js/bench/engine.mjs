// One decision and one plan through the package in Node, µs per call (compare with the native
// figures of `cargo bench -p ricochet-tests --bench component`: decision/native, plan/native/10).
//
//   node bench/engine.mjs
import { load } from "../src/index.js";

const r = await load();
const NOW = 1_800_000_000_000_000n;

function measure(name, iterations, f) {
  for (let i = 0; i < iterations / 10; i++) f(i); // warm up (JIT)
  const runs = [];
  for (let run = 0; run < 5; run++) {
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) f(i);
    runs.push(((performance.now() - t0) * 1000) / iterations);
  }
  runs.sort((a, b) => a - b);
  console.log(`${name.padEnd(34)} median ${runs[2].toFixed(3)} µs/call  (min ${runs[0].toFixed(3)}, max ${runs[4].toFixed(3)})`);
}

const policy = r.policy("default");
const state = policy.start({ seed: 0xdec1den, nowUs: NOW - 1000n });
const failure = { category: "service_unavailable_error" };
measure("probe (empty export)", 200_000, () => r.probe());
measure("decide (default preset)", 100_000, () => policy.decide(state, failure, NOW));
const ten = r.policy({ max_attempts: 11 });
measure("plan (10 retries)", 50_000, (i) => ten.plan(BigInt(i)));
measure("classify (429, Retry-After date)", 50_000, () =>
  r.classify(429, { "retry-after": "Sun, 06 Nov 1994 08:49:39 GMT" }, 784_111_777_000_000n),
);
