// The package in Cloudflare's runtime: `workerd serve` runs a Worker (test/workerd/worker.js)
// that imports the package unchanged — its `workerd` entry, the engine's core modules declared
// as Wasm modules — and calls a flaky loopback upstream (two 503s, then a 200). The upstream
// records the attempts; the test checks their number and their spacing (lower bounds: the
// policy's 100 ms and 200 ms).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const cleanups = [];
after(() => cleanups.reverse().forEach((f) => f()));

async function freePort() {
  const s = createServer();
  await new Promise((ready) => s.listen(0, "127.0.0.1", ready));
  const { port } = s.address();
  await new Promise((done) => s.close(done));
  return port;
}

/** The Worker and the package files it imports, laid out as workerd names them, and a config. */
function bundle(upstream, port) {
  const dir = mkdtempSync(join(tmpdir(), "ricochet-workerd-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const cores = JSON.parse(readFileSync(join(root, "dist/core-modules.json"), "utf8"));
  const files = [
    ["worker.js", join(root, "test/workerd/worker.js"), "esModule"],
    ["ricochet-retry/src/workerd.js", join(root, "src/workerd.js"), "esModule"],
    ["ricochet-retry/src/index.js", join(root, "src/index.js"), "esModule"],
    ["ricochet-retry/dist/core-modules.workerd.js", join(root, "dist/core-modules.workerd.js"), "esModule"],
    ["ricochet-retry/dist/engine/engine.js", join(root, "dist/engine/engine.js"), "esModule"],
    ...cores.map((f) => [`ricochet-retry/dist/engine/${f}`, join(root, "dist/engine", f), "wasm"]),
  ];
  for (const [name, from] of files) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    copyFileSync(from, join(dir, name));
  }
  const modules = files.map(([name, , kind]) => `(name = "${name}", ${kind} = embed "${name}")`).join(",\n    ");
  writeFileSync(
    join(dir, "config.capnp"),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const worker :Workerd.Worker = (
  modules = [
    ${modules}
  ],
  bindings = [ (name = "UPSTREAM", text = "${upstream}") ],
  compatibilityDate = "2025-09-01",
);
`,
  );
  return join(dir, "config.capnp");
}

async function until(url, deadlineMs) {
  for (const end = Date.now() + deadlineMs; Date.now() < end; ) {
    try {
      return await fetch(url);
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`workerd did not answer on ${url} within ${deadlineMs} ms`);
}

test("in workerd, retryFetch retries a flaky upstream twice, spaced by the policy", async () => {
  const seen = [];
  const upstream = createHttpServer((req, res) => {
    seen.push(Date.now());
    res.writeHead(seen.length <= 2 ? 503 : 200);
    res.end(`attempt ${seen.length}`);
  });
  await new Promise((ready) => upstream.listen(0, "127.0.0.1", ready));
  cleanups.push(() => upstream.close());
  const port = await freePort();
  const config = bundle(`http://127.0.0.1:${upstream.address().port}`, port);
  const workerd = spawn(join(root, "node_modules/.bin/workerd"), ["serve", config], { stdio: ["ignore", "inherit", "inherit"] });
  cleanups.push(() => workerd.kill());
  const res = await until(`http://127.0.0.1:${port}/`, 30_000);
  const report = await res.json();
  assert.equal(report.status, 200, JSON.stringify(report));
  assert.equal(report.body, "attempt 3");
  assert.deepEqual(
    report.retries.map((r) => [r.attempt, r.status, r.category, r.delayMs]),
    [
      [1, 503, "service_unavailable_error", 100],
      [2, 503, "service_unavailable_error", 200],
    ],
  );
  assert.equal(seen.length, 3);
  const gaps = [seen[1] - seen[0], seen[2] - seen[1]];
  assert.ok(gaps[0] >= 100 && gaps[1] >= 200, `attempts spaced ${gaps.join(" ms, ")} ms`);
});
