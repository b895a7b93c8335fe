// Types of ricochet-retry (both entries: the default one and `ricochet-retry/workerd`).

/** An error category, as a policy file names it (the seed's class names are accepted too). */
export type Category =
  | "connection_error"
  | "timeout_error"
  | "service_unavailable_error"
  | "rate_limit_exceeded_error"
  | "authentication_error"
  | "validation_error"
  | "resource_not_found_error"
  | "business_logic_error"
  | "rate_limited"
  | "auth_expired";

export type JitterStrategy = "none" | "proportional" | "full" | "equal" | "decorrelated";

export type GiveUpReason =
  | "exhausted"
  | "non_retryable"
  | "deadline"
  | "circuit_open"
  | "budget"
  | "retry_after_too_long";

/** A retry config in policy-file form (durations in seconds). */
export interface RetryConfig {
  max_attempts: number;
  initial_delay: number;
  max_delay: number;
  exponential_base: number;
  jitter: boolean;
  jitter_factor: number;
  slot_count: number;
  slot_width: number;
  coordination_enabled: boolean;
  idempotency_ttl: number;
  strategy: JitterStrategy;
  max_elapsed: number | null;
  max_retry_after: number;
  slot_capacity: number | null;
  retry_on: Category[];
  circuit_breaker: {
    failure_threshold: number;
    failure_rate: number;
    minimum_calls: number;
    window: number;
    cool_down: number;
    half_open_probes: number;
  } | null;
  retry_budget: { max_tokens: number; token_ratio: number } | null;
}

/** A preset name or a partial config (missing fields from `default`). */
export type PolicyInput = "default" | "aggressive" | "conservative" | Partial<RetryConfig> | Policy;

/** The memory of one logical call across attempts (times in µs since the Unix epoch). */
export interface RetryState {
  seed: bigint;
  startedUs: bigint;
  prevDelayUs: bigint;
  calls: number;
  authRetried: boolean;
}

export interface Failure {
  category: Category;
  /** The server's requested delay, µs. */
  serverDelayUs?: number | bigint;
  tokenRefreshed?: boolean;
}

export type Decision = { retry: true; delayUs: number } | { retry: false; reason: GiveUpReason };

export interface PlannedRetry {
  retry: number;
  baseDelayUs: number;
  delayUs: number;
}

/** A bad config: `field` names the policy-file field. */
export class ConfigError extends RangeError {
  field: string;
}

/** `retryFetch` gave up after an error (a response, even a failing one, is returned instead). */
export class RetryError extends Error {
  attempts: number;
  reason: GiveUpReason;
  cause: unknown;
}

/** One validated config, made once in the engine. */
export class Policy {
  private constructor();
  readonly config: Readonly<RetryConfig>;
  nextDelay(retry: number, seed: bigint | number, prevDelayUs?: bigint | number): number;
  plan(seed: bigint | number): PlannedRetry[];
  start(options?: { seed?: bigint | number; nowUs?: bigint | number }): RetryState;
  decide(state: RetryState, failure: Failure, nowUs?: bigint | number): { state: RetryState; decision: Decision };
}

/** One line of the seed's JSON log format. */
export interface LogRecord {
  timestamp: string;
  level: "WARNING" | "ERROR";
  service: string;
  operation: string;
  attempt: number;
  /** Seconds before the next attempt (0 when giving up). */
  delay: number;
  error: string;
  trace_id: string | null;
}

export interface RetryFetchOptions {
  /** Default: the `default` preset. */
  policy?: PolicyInput;
  /** Default: `globalThis.fetch`. */
  fetch?: (request: Request, init: { signal: AbortSignal }) => Promise<Response>;
  /** Used when `request` is a URL. */
  init?: RequestInit;
  /** Each attempt is aborted after this long and counts as a timeout. */
  attemptTimeoutMs?: number;
  /** Cancels the whole call: no retry after it fires. */
  signal?: AbortSignal;
  /** Jitter seed (default: random per call). */
  seed?: bigint | number;
  /** Labels of logs and metrics (defaults: "fetch", "METHOD /path"). */
  service?: string;
  operation?: string;
  log?: (record: LogRecord) => void;
  /** The seed's metrics: retry_attempts_total, retry_success_total, retry_failure_total, retry_duration_seconds. */
  metrics?: {
    counter?: (name: string, labels: Record<string, string>, value: number) => void;
    histogram?: (name: string, labels: Record<string, string>, value: number) => void;
  };
  onRetry?: (event: { attempt: number; delayMs: number; status?: number; error?: unknown; category: Category }) => void;
  /** Default: setTimeout, cancelled by `signal`. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** The engine: the policy component, instantiated once. */
export class Ricochet {
  private constructor();
  readonly presets: string[];
  preset(name: string): RetryConfig;
  policyFile(file: string | object, name?: string): RetryConfig;
  policy(config?: PolicyInput): Policy;
  classify(status: number, headers?: HeadersInit, nowUs?: bigint | number): Failure | undefined;
  serverDelay(header: string, value: string, nowUs?: bigint | number): number | undefined;
  probe(): void;
  retryFetch(request: Request | string | URL, options?: RetryFetchOptions): Promise<Response>;
}

export function load(options?: {
  getCoreModule?: (name: string) => WebAssembly.Module | Promise<WebAssembly.Module>;
  log?: (line: unknown) => void;
}): Promise<Ricochet>;

export function retryFetch(request: Request | string | URL, options?: RetryFetchOptions): Promise<Response>;
