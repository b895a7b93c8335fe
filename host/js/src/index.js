// ricochet for JavaScript: the ricochet-core policy component, transpiled by jco, behind a small
// API. Every delay, decision, preset, status category and Retry-After/RateLimit reading comes
// from the core inside the component; this file converts values and does the I/O (fetch, timers).
// It uses only what Node, workerd and browsers share: fetch, AbortController, setTimeout,
// WebAssembly, BigInt.

import { instantiate } from "../dist/engine/engine.js";

const CATEGORIES = [
  ["connection_error", "ConnectionError", "connectionError"],
  ["timeout_error", "TimeoutError", "timeoutError"],
  ["service_unavailable_error", "ServiceUnavailableError", "serviceUnavailableError"],
  ["rate_limit_exceeded_error", "RateLimitExceededError", "rateLimitExceededError"],
  ["authentication_error", "AuthenticationError", "authenticationError"],
  ["validation_error", "ValidationError", "validationError"],
  ["resource_not_found_error", "ResourceNotFoundError", "resourceNotFoundError"],
  ["business_logic_error", "BusinessLogicError", "businessLogicError"],
  ["rate_limited", "RateLimited", "rateLimited"],
  ["auth_expired", "AuthExpired", "authExpired"],
];
const STRATEGIES = ["none", "proportional", "full", "equal", "decorrelated"];
const PRESETS = ["default", "aggressive", "conservative"];

// Policy-file field (snake_case, as in a ricochet policy file) → component record field.
const NUMBER_FIELDS = {
  initial_delay: "initialDelay",
  max_delay: "maxDelay",
  exponential_base: "exponentialBase",
  jitter_factor: "jitterFactor",
  slot_width: "slotWidth",
  idempotency_ttl: "idempotencyTtl",
  max_retry_after: "maxRetryAfter",
};
const INTEGER_FIELDS = { max_attempts: "maxAttempts", slot_count: "slotCount" };
const BOOLEAN_FIELDS = { jitter: "jitter", coordination_enabled: "coordinationEnabled" };
const BREAKER_FIELDS = {
  failure_threshold: ["failureThreshold", "integer"],
  failure_rate: ["failureRate", "number"],
  minimum_calls: ["minimumCalls", "integer"],
  window: ["window", "number"],
  cool_down: ["coolDown", "number"],
  half_open_probes: ["halfOpenProbes", "integer"],
};
const BUDGET_FIELDS = { max_tokens: ["maxTokens", "integer"], token_ratio: ["tokenRatio", "number"] };

/** A config the core (or the shape of the input) refused; `field` is the policy-file field. */
export class ConfigError extends RangeError {
  constructor(field, message) {
    super(message);
    this.name = "ConfigError";
    this.field = field;
  }
}

/** A `retryFetch` that gave up on an error (not on a response): the last error is `cause`. */
export class RetryError extends Error {
  constructor(message, { attempts, reason, cause }) {
    super(message, { cause });
    this.name = "RetryError";
    this.attempts = attempts;
    this.reason = reason;
  }
}

function bad(field, message) {
  return new ConfigError(field, message);
}

function integer(field, value, max = 0xffff_ffff) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw bad(field, `${field} must be an integer within [0, ${max}], got ${JSON.stringify(value)}`);
  }
  return value;
}

function number(field, value) {
  if (typeof value !== "number") throw bad(field, `${field} must be a number, got ${JSON.stringify(value)}`);
  return value;
}

// Exact u64 ↔ JS: seeds and times in, as BigInt; delays out, as Number of µs (saturated at
// Number.MAX_SAFE_INTEGER µs, 285 years: past any cap a config can mean).
function u64(field, value) {
  const v = typeof value === "bigint" ? value : Number.isInteger(value) ? BigInt(value) : undefined;
  if (v === undefined || v < 0n || v > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`${field} must be an integer within [0, 2^64), got ${String(value)}`);
  }
  return v;
}

function micros(value) {
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

function categoryFlag(field, name) {
  const entry = CATEGORIES.find(([snake, pascal]) => name === snake || name === pascal);
  if (!entry) throw bad(field, `${field}: unknown error category ${JSON.stringify(name)}`);
  return entry;
}

/** The component record for a core config in policy-file form (every field present). */
function toRecord(config) {
  const record = {};
  for (const [k, f] of Object.entries(INTEGER_FIELDS)) record[f] = integer(k, config[k]);
  for (const [k, f] of Object.entries(NUMBER_FIELDS)) record[f] = number(k, config[k]);
  for (const [k, f] of Object.entries(BOOLEAN_FIELDS)) {
    if (typeof config[k] !== "boolean") throw bad(k, `${k} must be true or false, got ${JSON.stringify(config[k])}`);
    record[f] = config[k];
  }
  if (!STRATEGIES.includes(config.strategy)) {
    throw bad("strategy", `strategy must be one of ${STRATEGIES.join(", ")}, got ${JSON.stringify(config.strategy)}`);
  }
  record.strategy = config.strategy;
  record.maxElapsed = config.max_elapsed == null ? undefined : number("max_elapsed", config.max_elapsed);
  record.slotCapacity = config.slot_capacity == null ? undefined : integer("slot_capacity", config.slot_capacity);
  if (!Array.isArray(config.retry_on)) throw bad("retry_on", "retry_on must be a list of error categories");
  record.retryOn = Object.fromEntries(CATEGORIES.map(([, , flag]) => [flag, false]));
  for (const name of config.retry_on) record.retryOn[categoryFlag("retry_on", name)[2]] = true;
  record.circuitBreaker = config.circuit_breaker == null ? undefined : nested("circuit_breaker", config.circuit_breaker, BREAKER_FIELDS);
  record.retryBudget = config.retry_budget == null ? undefined : nested("retry_budget", config.retry_budget, BUDGET_FIELDS);
  return record;
}

function nested(name, value, fields) {
  const out = {};
  for (const key of Object.keys(value)) {
    if (!(key in fields)) throw bad(`${name}.${key}`, `${name}: unknown field ${JSON.stringify(key)}`);
  }
  for (const [k, [f, kind]] of Object.entries(fields)) {
    if (!(k in value)) throw bad(`${name}.${k}`, `${name}.${k} is missing`);
    out[f] = kind === "integer" ? integer(`${name}.${k}`, value[k]) : number(`${name}.${k}`, value[k]);
  }
  return out;
}

/** A component record as a config in policy-file form. */
function fromRecord(r) {
  const config = {};
  for (const [k, f] of Object.entries({ ...INTEGER_FIELDS, ...NUMBER_FIELDS, ...BOOLEAN_FIELDS })) config[k] = r[f];
  config.strategy = r.strategy;
  config.max_elapsed = r.maxElapsed ?? null;
  config.slot_capacity = r.slotCapacity ?? null;
  config.retry_on = CATEGORIES.filter(([, , flag]) => r.retryOn[flag]).map(([snake]) => snake);
  const back = (value, fields) =>
    value === undefined ? null : Object.fromEntries(Object.entries(fields).map(([k, [f]]) => [k, value[f]]));
  config.circuit_breaker = back(r.circuitBreaker, BREAKER_FIELDS);
  config.retry_budget = back(r.retryBudget, BUDGET_FIELDS);
  return config;
}

const KNOWN_FIELDS = new Set([
  ...Object.keys(INTEGER_FIELDS),
  ...Object.keys(NUMBER_FIELDS),
  ...Object.keys(BOOLEAN_FIELDS),
  "strategy",
  "max_elapsed",
  "slot_capacity",
  "retry_on",
  "circuit_breaker",
  "retry_budget",
]);

function categoryOf(name) {
  const entry = CATEGORIES.find((c) => c.includes(name));
  if (!entry) throw new RangeError(`unknown error category ${JSON.stringify(name)}`);
  return entry[0];
}

function toWitCategory(name) {
  return categoryOf(name).replaceAll("_", "-");
}

function fromWitCategory(name) {
  return name.replaceAll("-", "_");
}

function toWitState(s) {
  return {
    seed: u64("state.seed", s.seed),
    startedUs: u64("state.startedUs", s.startedUs),
    prevDelayUs: u64("state.prevDelayUs", s.prevDelayUs ?? 0),
    calls: integer("state.calls", s.calls ?? 0),
    authRetried: Boolean(s.authRetried),
  };
}

function fromWitState(s) {
  return { seed: s.seed, startedUs: s.startedUs, prevDelayUs: s.prevDelayUs, calls: s.calls, authRetried: s.authRetried };
}

function toWitFailure(f) {
  return {
    category: toWitCategory(f.category),
    serverDelayUs: f.serverDelayUs == null ? undefined : u64("failure.serverDelayUs", f.serverDelayUs),
    tokenRefreshed: Boolean(f.tokenRefreshed),
  };
}

function fromWitDecision(d) {
  if (d.tag === "retry") return { retry: true, delayUs: micros(d.val) };
  return { retry: false, reason: d.val.replaceAll("-", "_") };
}

// The state after a failed call that `d` (the component's decision) answered: the core's
// `RetryState::record_failure`, restated because the component answers only the decision. The
// parity test compares every state this makes with the core's, in the same run.
function recordFailure(s, failure, d) {
  const next = { ...s, calls: Math.min(s.calls + 1, 0xffff_ffff) };
  if (d.tag === "retry") {
    next.prevDelayUs = d.val;
    if (failure.category === "auth-expired") next.authRetried = true;
  }
  return next;
}

function nowUs() {
  return BigInt(Date.now()) * 1000n;
}

function randomSeed() {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return (BigInt(words[0]) << 32n) | BigInt(words[1]);
}

/** One validated config: made once, asked many times (the component's `policy` resource). */
export class Policy {
  #inner;
  constructor(inner, config) {
    this.#inner = inner;
    /** The config, every field present, in policy-file form. */
    this.config = Object.freeze(config);
  }

  /** The delay (µs) before retry `retry` (1 = first) for `seed`. */
  nextDelay(retry, seed, prevDelayUs = 0) {
    return micros(this.#inner.nextDelay(integer("retry", retry), u64("seed", seed), u64("prevDelayUs", prevDelayUs)));
  }

  /** The whole schedule for `seed`: `{ retry, baseDelayUs, delayUs }` per retry. */
  plan(seed) {
    return this.#inner
      .plan(u64("seed", seed))
      .map((r) => ({ retry: r.retry, baseDelayUs: micros(r.baseDelayUs), delayUs: micros(r.delayUs) }));
  }

  /** The state of a new logical call (seed random unless given; times in µs since the epoch). */
  start({ seed = randomSeed(), nowUs: startedUs = nowUs() } = {}) {
    return { seed: u64("seed", seed), startedUs: u64("nowUs", startedUs), prevDelayUs: 0n, calls: 0, authRetried: false };
  }

  /**
   * One decision after a failed call at `nowUs`: `{ state, decision }`, the decision
   * `{ retry: true, delayUs }` or `{ retry: false, reason }`.
   */
  decide(state, failure, at = nowUs()) {
    const before = toWitState(state);
    const failed = toWitFailure(failure);
    const d = this.#inner.decide(before, failed, u64("nowUs", at));
    return { state: fromWitState(recordFailure(before, failed, d)), decision: fromWitDecision(d) };
  }
}

/** The engine: the policy component, instantiated once. */
export class Ricochet {
  #exports;
  constructor(exports) {
    this.#exports = exports;
  }

  /** The preset names. */
  get presets() {
    return [...PRESETS];
  }

  /** A preset's config (policy-file form), from the core. */
  preset(name) {
    const r = this.#exports.http.preset(String(name));
    if (r === undefined) throw bad("policy", `unknown preset ${JSON.stringify(name)} (presets: ${PRESETS.join(", ")})`);
    return fromRecord(r);
  }

  /**
   * A config from a ricochet policy file in JSON (`{"retry_policies": {name: {...}}}`, the
   * seed's format): the entry starts from the policy it `extends` (a preset or another entry),
   * else from the preset of its name, else from `default`; fields it sets replace the base's.
   */
  policyFile(file, name = "default") {
    const doc = typeof file === "string" ? JSON.parse(file) : file;
    const entries = doc?.retry_policies;
    if (entries === null || typeof entries !== "object") throw bad("retry_policies", "a policy file has a retry_policies map");
    const resolve = (n, seen) => {
      if (seen.includes(n)) throw bad("extends", `extends cycle: ${[...seen, n].join(" → ")}`);
      const entry = entries[n];
      if (entry === undefined) {
        if (PRESETS.includes(n)) return this.preset(n);
        throw bad("policy", `no policy ${JSON.stringify(n)} in the file`);
      }
      const { extends: base, ...fields } = entry;
      for (const key of Object.keys(fields)) {
        if (!KNOWN_FIELDS.has(key)) throw bad(key, `policy ${JSON.stringify(n)}: unknown field ${JSON.stringify(key)}`);
      }
      const start =
        base !== undefined ? resolve(base, [...seen, n]) : PRESETS.includes(n) ? this.preset(n) : this.preset("default");
      return { ...start, ...fields };
    };
    const config = resolve(name, []);
    this.policy(config); // validated here, so a bad file fails where it is read
    return config;
  }

  /** A policy for `config` (a preset name, or a config object in policy-file form; missing fields from `default`). */
  policy(config = "default") {
    const full = typeof config === "string" ? this.preset(config) : { ...this.preset("default"), ...config };
    for (const key of Object.keys(full)) {
      if (!KNOWN_FIELDS.has(key)) throw bad(key, `unknown field ${JSON.stringify(key)}`);
    }
    const record = toRecord(full);
    let inner;
    try {
      inner = this.#exports.retryPolicy.Policy.create(record);
    } catch (e) {
      const payload = e?.payload;
      if (payload && typeof payload.field === "string") throw bad(payload.field, payload.message);
      throw e;
    }
    return new Policy(inner, fromRecord(record));
  }

  /**
   * The failure an HTTP response stands for (`undefined` below 400), read by the core: the
   * category (snake_case) and the server's delay in µs from `Retry-After` (seconds or any of the
   * three HTTP-date forms), `RateLimit`/`RateLimit-Reset` or `X-RateLimit-Reset`.
   */
  classify(status, headers = new Headers(), at = nowUs()) {
    const h = headers instanceof Headers ? headers : new Headers(headers);
    const get = (...names) => names.map((n) => h.get(n)).find((v) => v !== null) ?? undefined;
    const f = this.#exports.http.classifyResponse(
      integer("status", status, 0xffff),
      get("retry-after"),
      get("ratelimit", "ratelimit-reset"),
      get("x-ratelimit-reset", "x-rate-limit-reset"),
      u64("nowUs", at),
    );
    if (f === undefined) return undefined;
    return {
      category: fromWitCategory(f.category),
      serverDelayUs: f.serverDelayUs === undefined ? undefined : micros(f.serverDelayUs),
      tokenRefreshed: f.tokenRefreshed,
    };
  }

  /** The delay (µs) one server header asks for (`Retry-After`, `RateLimit`, …), read by the core. */
  serverDelay(header, value, at = nowUs()) {
    const d = this.#exports.http.serverDelay(String(header), String(value), u64("nowUs", at));
    return d === undefined ? undefined : micros(d);
  }

  /** Calls the component's empty export (for measuring a crossing). */
  probe() {
    this.#exports.probe.empty();
  }

  /**
   * `fetch` with retries decided by the core. See README.md: options `policy`, `fetch`,
   * `attemptTimeoutMs`, `signal`, `seed`, `service`, `operation`, `log`, `metrics`,
   * `onRetry`, `sleep`.
   */
  async retryFetch(request, options = {}) {
    return retryFetchWith(this, request, options);
  }
}

function errorName(failure) {
  return CATEGORIES.find(([snake]) => snake === failure.category)?.[1] ?? failure.category;
}

function sleepMs(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

class AttemptTimeout extends Error {
  constructor(ms) {
    super(`attempt timed out after ${ms} ms`);
    this.name = "TimeoutError";
  }
}

async function retryFetchWith(engine, request, options) {
  const {
    policy: given = "default",
    fetch: fetchImpl = globalThis.fetch,
    attemptTimeoutMs,
    signal,
    seed,
    service = "fetch",
    operation,
    log,
    metrics,
    onRetry,
    sleep = sleepMs,
  } = options;
  const policy = given instanceof Policy ? given : engine.policy(given);
  const original = request instanceof Request ? request : new Request(request, options.init);
  const op = operation ?? `${original.method} ${new URL(original.url).pathname}`;
  const labels = (extra) => ({ service, operation: op, ...extra });
  const emit = (level, attempt, delayS, error) =>
    log?.({ timestamp: new Date().toISOString(), level, service, operation: op, attempt, delay: delayS, error, trace_id: null });
  const started = Date.now();
  let state = policy.start({ seed: seed ?? randomSeed(), nowUs: nowUs() });
  for (let attempt = 1; ; attempt++) {
    metrics?.counter?.("retry_attempts_total", labels({ attempt: String(attempt) }), 1);
    const controller = new AbortController();
    const forward = () => controller.abort(signal.reason);
    if (signal?.aborted) throw signal.reason;
    signal?.addEventListener("abort", forward, { once: true });
    let timer;
    if (attemptTimeoutMs !== undefined) {
      timer = setTimeout(() => controller.abort(new AttemptTimeout(attemptTimeoutMs)), attemptTimeoutMs);
    }
    let response;
    let error;
    let failure;
    try {
      response = await fetchImpl(original.clone(), { signal: controller.signal });
      failure = engine.classify(response.status, response.headers);
    } catch (e) {
      if (signal?.aborted) throw e; // the caller cancelled: no retry
      error = controller.signal.reason instanceof AttemptTimeout ? controller.signal.reason : e;
      failure = { category: error instanceof AttemptTimeout ? "timeout_error" : "connection_error" };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", forward);
    }
    if (failure === undefined) {
      metrics?.counter?.("retry_success_total", labels({ attempts_needed: String(attempt) }), 1);
      metrics?.histogram?.("retry_duration_seconds", labels({}), (Date.now() - started) / 1000);
      return response;
    }
    const { state: next, decision } = policy.decide(state, failure, nowUs());
    state = next;
    const what = response ? `HTTP ${response.status}` : `${errorName(failure)}: ${error?.message ?? error}`;
    if (!decision.retry) {
      emit("ERROR", attempt, 0, what);
      metrics?.counter?.("retry_failure_total", labels({ error_type: errorName(failure) }), 1);
      metrics?.histogram?.("retry_duration_seconds", labels({}), (Date.now() - started) / 1000);
      if (response) return response; // the server's last word, for the caller to read
      throw new RetryError(`gave up after ${attempt} attempts (${decision.reason}): ${what}`, {
        attempts: attempt,
        reason: decision.reason,
        cause: error,
      });
    }
    const delayMs = decision.delayUs / 1000;
    emit("WARNING", attempt, delayMs / 1000, what);
    onRetry?.({ attempt, delayMs, status: response?.status, error, category: failure.category });
    await response?.body?.cancel().catch(() => {});
    await sleep(delayMs, signal);
  }
}

/**
 * Instantiates the engine. `getCoreModule(name)` gives jco's core modules (default: the ones
 * built into the package, compiled at run time; workerd passes its imported modules — see
 * `ricochet-retry/workerd`). `hooks.log(record)` receives the component's own log lines.
 */
export async function load({ getCoreModule, log } = {}) {
  const loader = getCoreModule ?? (await import("../dist/core-modules.js")).getCoreModule;
  const unavailable = (what) => ({ payload: { tag: "connection", val: `${what}: no coordinator in JavaScript` } });
  const clock = { nowUs };
  const coordination = {
    acquireSlot() {
      throw unavailable("acquire-slot");
    },
    idempotencyBegin() {
      throw unavailable("idempotency-begin");
    },
    idempotencyComplete() {
      throw unavailable("idempotency-complete");
    },
    idempotencyFail() {
      throw unavailable("idempotency-fail");
    },
  };
  const logging = { log: (line) => log?.(line) };
  const metrics = { counterAdd() {}, histogramObserve() {} };
  const imports = {};
  // jco reads the unversioned names and types the versioned ones: give both.
  for (const [name, value] of Object.entries({ clock, coordination, logging, metrics, types: {} })) {
    imports[`ricochet:retry/${name}`] = value;
    imports[`ricochet:retry/${name}@0.2.0`] = value;
  }
  const exports = await instantiate(loader, imports);
  return new Ricochet(exports);
}

let shared;
/** `fetch` with retries, on a shared engine loaded on first use (see `Ricochet.retryFetch`). */
export async function retryFetch(request, options = {}) {
  shared ??= load();
  return (await shared).retryFetch(request, options);
}
