// retryFetch against a real loopback HTTP server (node:http): the server's script of answers,
// the attempts it saw and when. Delays are checked as lower bounds (a retry never comes before
// the policy's or the server's delay), never as timings of the machine.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { load, RetryError } from "../src/index.js";

const r = await load();
const servers = [];
after(() => Promise.all(servers.map((s) => new Promise((done) => s.close(done)))));

/** A server that answers request n with `script[n]` (the last one repeats): `[status, headers, delayMs]`. */
async function scripted(script) {
  const seen = [];
  const server = createServer((req, res) => {
    const n = seen.length;
    seen.push({ at: Date.now(), method: req.method, url: req.url });
    const [status, headers = {}, delayMs = 0] = script[Math.min(n, script.length - 1)];
    const timer = setTimeout(() => {
      res.writeHead(status, headers);
      res.end(`answer ${n + 1}: ${status}`);
    }, delayMs);
    res.on("close", () => clearTimeout(timer));
  });
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  servers.push(server);
  return { url: `http://127.0.0.1:${server.address().port}/thing`, seen };
}

// Fast retries for the tests: 20 ms, 40 ms, … (no jitter), up to 5 attempts.
const quick = { max_attempts: 5, initial_delay: 0.02, max_delay: 1, jitter: false, max_retry_after: 5 };

test("a 503 then a 200: one retry after the policy's delay, the 200 returned", async () => {
  const { url, seen } = await scripted([[503], [200]]);
  const retries = [];
  const res = await r.retryFetch(url, { policy: quick, onRetry: (e) => retries.push(e) });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "answer 2: 200");
  assert.equal(seen.length, 2);
  assert.deepEqual(retries.map((e) => [e.attempt, e.status, e.category, e.delayMs]), [[1, 503, "service_unavailable_error", 20]]);
  assert.ok(seen[1].at - seen[0].at >= 20, `retried after ${seen[1].at - seen[0].at} ms`);
});

test("a 429 with Retry-After: 1 waits the server's second, not the policy's 20 ms", async () => {
  const { url, seen } = await scripted([[429, { "Retry-After": "1" }], [200]]);
  const retries = [];
  const res = await r.retryFetch(url, { policy: quick, onRetry: (e) => retries.push(e) });
  assert.equal(res.status, 200);
  assert.equal(retries[0].delayMs, 1000);
  assert.ok(seen[1].at - seen[0].at >= 1000, `retried after ${seen[1].at - seen[0].at} ms`);
});

test("a 429 with an HTTP-date waits until that date", async () => {
  // Three seconds ahead, in IMF-fixdate (whole seconds: the wait is between 2 and 3 s, less
  // the few milliseconds the request took).
  const date = new Date(Date.now() + 3000).toUTCString();
  const { url, seen } = await scripted([[429, { "Retry-After": date }], [200]]);
  const retries = [];
  const res = await r.retryFetch(url, { policy: quick, onRetry: (e) => retries.push(e) });
  assert.equal(res.status, 200);
  assert.ok(retries[0].delayMs > 1500 && retries[0].delayMs <= 3000, `delay ${retries[0].delayMs} ms for ${date}`);
  assert.ok(seen[1].at - seen[0].at >= 1500, `retried after ${seen[1].at - seen[0].at} ms`);
});

test("a 503 with a RateLimit header is throttling, with the header's delay", async () => {
  const { url } = await scripted([[503, { RateLimit: '"default";r=0;t=1' }], [200]]);
  const retries = [];
  await r.retryFetch(url, { policy: quick, onRetry: (e) => retries.push(e) });
  assert.deepEqual(retries.map((e) => [e.category, e.delayMs]), [["rate_limited", 1000]]);
});

test("a Retry-After past max_retry_after gives up at once and returns the 429", async () => {
  const { url, seen } = await scripted([[429, { "Retry-After": "3600" }], [200]]);
  const res = await r.retryFetch(url, { policy: quick });
  assert.equal(res.status, 429);
  assert.equal(seen.length, 1);
});

test("a 400 is not retried: one attempt, the 400 returned", async () => {
  const { url, seen } = await scripted([[400], [200]]);
  const retries = [];
  const lines = [];
  const res = await r.retryFetch(url, { policy: quick, onRetry: (e) => retries.push(e), log: (l) => lines.push(l) });
  assert.equal(res.status, 400);
  assert.equal(seen.length, 1);
  assert.equal(retries.length, 0);
  assert.equal(lines.length, 1);
  assert.equal(lines[0].level, "ERROR");
  assert.equal(lines[0].error, "HTTP 400");
});

test("an attempt that outlives its timeout is cancelled and retried", async () => {
  const { url, seen } = await scripted([[200, {}, 2000], [200]]);
  const retries = [];
  const res = await r.retryFetch(url, { policy: quick, attemptTimeoutMs: 100, onRetry: (e) => retries.push(e) });
  assert.equal(res.status, 200);
  assert.equal(seen.length, 2);
  assert.equal(retries[0].category, "timeout_error");
  assert.equal(retries[0].error.name, "TimeoutError");
});

test("attempts that all time out end in a RetryError after max_attempts, with the last error", async () => {
  const { url, seen } = await scripted([[200, {}, 2000]]);
  const policy = { ...quick, max_attempts: 3 };
  await assert.rejects(r.retryFetch(url, { policy, attemptTimeoutMs: 50 }), (e) => {
    assert.ok(e instanceof RetryError);
    assert.equal(e.attempts, 3);
    assert.equal(e.reason, "exhausted");
    assert.equal(e.cause.name, "TimeoutError");
    return true;
  });
  assert.equal(seen.length, 3);
});

test("a refused connection is a connection error, retried", async () => {
  const { url } = await scripted([[200]]);
  const closed = servers.pop();
  await new Promise((done) => closed.close(done));
  const retries = [];
  await assert.rejects(r.retryFetch(url, { policy: { ...quick, max_attempts: 2 }, onRetry: (e) => retries.push(e) }), RetryError);
  assert.deepEqual(retries.map((e) => e.category), ["connection_error"]);
});

test("the caller's signal cancels without a retry", async () => {
  const { url, seen } = await scripted([[200, {}, 2000]]);
  const controller = new AbortController();
  setTimeout(() => controller.abort(new Error("caller gave up")), 50);
  await assert.rejects(r.retryFetch(url, { policy: quick, signal: controller.signal }), /caller gave up/);
  assert.equal(seen.length, 1);
});

test("metrics and log lines go to the caller's hooks, with the seed's names and fields", async () => {
  const { url } = await scripted([[502], [504], [200]]);
  const counters = [];
  const histograms = [];
  const lines = [];
  const res = await r.retryFetch(new Request(url, { method: "POST", body: "payload" }), {
    policy: quick,
    service: "billing",
    metrics: { counter: (...c) => counters.push(c), histogram: (...h) => histograms.push(h) },
    log: (l) => lines.push(l),
  });
  assert.equal(res.status, 200);
  assert.deepEqual(
    counters.map(([name, labels]) => [name, labels.attempt ?? labels.attempts_needed]),
    [
      ["retry_attempts_total", "1"],
      ["retry_attempts_total", "2"],
      ["retry_attempts_total", "3"],
      ["retry_success_total", "3"],
    ],
  );
  assert.equal(counters[0][1].service, "billing");
  assert.equal(counters[0][1].operation, "POST /thing");
  assert.equal(histograms[0][0], "retry_duration_seconds");
  assert.deepEqual(lines.map((l) => [l.level, l.attempt, l.error]), [
    ["WARNING", 1, "HTTP 502"],
    ["WARNING", 2, "HTTP 504"],
  ]);
  for (const key of ["timestamp", "level", "service", "operation", "attempt", "delay", "error", "trace_id"]) {
    assert.ok(key in lines[0], key);
  }
});
