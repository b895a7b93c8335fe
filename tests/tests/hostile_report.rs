//! The figures of RELIABILITY.md's "Hostile components and upstreams": every attack of the
//! hostile-guest tests at the size the reviewers used, with what it cost the host — the time,
//! the resident memory the host kept afterwards, and the outcome. Not assertions: the tests
//! (`hostile_sandbox`, `hostile_imports`, `hostile_contract`) hold the bounds.
//!
//! ```sh
//! RICOCHET_REQUIRE_GUESTS=1 cargo test -p ricochet-tests --test hostile_report -- --ignored --nocapture --test-threads 1
//! ```
//!
//! One test per attack, one at a time, so each memory figure is that attack's alone. It uses
//! only what the component host offered before the fixes, so the same file runs against the
//! old host (`git checkout 51298cc -- host/ricochet/src/component host/ricochet/Cargo.toml`)
//! for the "before" column.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::component::{failure_to_wit, wit, PolicyComponent, Sandbox};
use ricochet::coordination::{
    BoxFuture, CoordinationError, Coordinator, InMemoryCoordinator, SlotGrant,
};
use ricochet::engine::PolicyEngine;
use ricochet::idempotency::{
    Begin, HolderToken, IdempotencyStore, InMemoryIdempotencyStore, StoreError,
};
use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::redis::{RedisConnection, RedisIdempotencyStore, RedisSettings};
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::breaker::BreakerConfig;
use ricochet_core::{ErrorCategory, Failure, RetryConfig};
use support::{guest, unique_prefix, RedisServer};
use tracing_subscriber::layer::SubscriberExt;

mod hostile;
use hostile::{attack, component, forger, intruder, policy_module, wat_bytes};

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Prints one row: the attack, what happened, how long, how much memory the host kept.
fn row(attack: &str, outcome: &str, took: Duration, rss_before_kib: u64) {
    let kept_mib = (rss_kib() as f64 - rss_before_kib as f64) / 1024.0;
    println!("| {attack} | {outcome} | {took:.2?} | {kept_mib:+.1} MiB |");
}

fn intruder_component() -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_INTRUDER_COMPONENT,
        "hostile intruder",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default().with_fuel_per_call(4_000_000_000))
        .unwrap()
}

fn forger_component() -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_FORGER_COMPONENT,
        "hostile forger",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

/// `decide` with an intruder attack; its outcome in short.
fn decide(c: &PolicyComponent, state: wit::RetryState) -> String {
    let guards = wit::Guards {
        breaker: None,
        budget: None,
    };
    let failure = failure_to_wit(Failure::new(ErrorCategory::Timeout));
    match c.decide(&RetryConfig::DEFAULT, state, failure, 0, &guards) {
        Ok(Ok(_)) => "answered".into(),
        Ok(Err(e)) => format!("config error {}", e.message),
        Err(e) => format!("{e}"),
    }
}

/// An in-memory coordinator that counts what reached it.
#[derive(Default)]
struct Counted {
    inner: InMemoryCoordinator,
    calls: AtomicUsize,
    name_bytes: AtomicUsize,
}

impl Coordinator for Counted {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.name_bytes
            .fetch_add(service.len() + operation.len(), Ordering::Relaxed);
        self.inner
            .acquire_slot(service, operation, delay_us, window_us)
    }
    fn now_us(&self) -> u64 {
        self.inner.now_us()
    }
    fn name(&self) -> &'static str {
        "counted"
    }
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_1_table_growth() {
    let wat = policy_module(
        1,
        "",
        &[(
            "next-delay",
            "(drop (table.grow $t (ref.null func) (local.get $retry))) (i64.const 0)",
        )],
    );
    let c = PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap();
    let rss = rss_kib();
    let started = Instant::now();
    let outcomes: Vec<String> = (0..10)
        .map(
            |_| match c.next_delay(&RetryConfig::DEFAULT, 9_900_000, 0, 0) {
                Ok(_) => "grew".to_string(),
                Err(e) => format!("{e}"),
            },
        )
        .collect();
    row(
        "table grown by 9.9 M elements per call, 10 calls",
        &format!(
            "{} grew; last: {}",
            outcomes.iter().filter(|o| *o == "grew").count(),
            outcomes[9]
        ),
        started.elapsed(),
        rss,
    );
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_2_slot_names() {
    let counted = Arc::new(Counted::default());
    let c = intruder_component().with_coordinator(counted.clone());
    let rss = rss_kib();
    let started = Instant::now();
    let outcome = decide(&c, attack(intruder::SLOTS, 100_000, 16));
    row(
        "`acquire-slot` for 100 000 made-up services from `decide`",
        &format!(
            "{outcome}; {} calls reached the coordinator",
            counted.calls.load(Ordering::Relaxed)
        ),
        started.elapsed(),
        rss,
    );
    let counted = Arc::new(Counted::default());
    let c = intruder_component().with_coordinator(counted.clone());
    let rss = rss_kib();
    let started = Instant::now();
    let answer = c
        .schedule(
            &RetryConfig::DEFAULT,
            "svc",
            "op",
            attack(intruder::SLOTS, 200, 1 << 20),
            failure_to_wit(Failure::new(ErrorCategory::Timeout)),
        )
        .map(|a| a.is_ok());
    row(
        "`acquire-slot` for 200 services named with 1 MiB each, from `schedule(svc, op)`",
        &format!(
            "{answer:?}; {} calls, {} MiB of names kept by the coordinator",
            counted.calls.load(Ordering::Relaxed),
            counted.name_bytes.load(Ordering::Relaxed) >> 20
        ),
        started.elapsed(),
        rss,
    );
}

/// An in-memory store that counts what reached it.
#[derive(Default)]
struct CountedStore {
    inner: InMemoryIdempotencyStore,
    calls: AtomicUsize,
    longest_ms: AtomicU64,
}

impl CountedStore {
    fn note(&self, ms: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.longest_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

impl IdempotencyStore for CountedStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        self.note(lease_ms);
        self.inner.begin(key, fingerprint, lease_ms)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        result: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note(ttl_ms);
        self.inner.complete(key, token, result, ttl_ms)
    }
    fn fail<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note(0);
        self.inner.fail(key, token)
    }
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note(lease_ms);
        self.inner.renew(key, token, lease_ms)
    }
    fn name(&self) -> &'static str {
        "counted"
    }
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_3_store_flood_in_memory() {
    let store = Arc::new(CountedStore::default());
    let c = intruder_component().with_idempotency_store(store.clone());
    let rss = rss_kib();
    let started = Instant::now();
    let outcome = decide(&c, attack(intruder::STORE, 10_000, 32));
    row(
        "10 000 claims (lease and TTL ten years) from one `decide`, in-memory store",
        &format!(
            "{outcome}; {} store calls, longest lease/TTL {} ms",
            store.calls.load(Ordering::Relaxed),
            store.longest_ms.load(Ordering::Relaxed)
        ),
        started.elapsed(),
        rss,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures for RELIABILITY.md"]
async fn report_4_store_flood_on_redis() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::single(server.url()).with_key_prefix(unique_prefix());
    let store = Arc::new(RedisIdempotencyStore::new(
        RedisConnection::open(&settings).unwrap(),
    ));
    let c = intruder_component().with_idempotency_store(store);
    let rss = rss_kib();
    let started = Instant::now();
    let outcome = decide(&c, attack(intruder::STORE, 10_000, 16));
    let took = started.elapsed();
    let keys: Vec<String> = server
        .cli(&["--scan"])
        .lines()
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let longest_pttl_ms = keys
        .iter()
        .map(|k| server.cli(&["PTTL", k]).trim().parse::<i64>().unwrap())
        .max()
        .unwrap_or(0);
    let sets = server.cli(&["INFO", "commandstats"]);
    let calls = |cmd: &str| {
        sets.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|v| v.split(',').next())
            .unwrap_or("0")
            .to_string()
    };
    row(
        "10 000 claims (lease and TTL ten years) from one `decide`, live Redis",
        &format!(
            "{outcome}; {} keys, longest PTTL {:.1} h; {} EVALSHA, {} SET",
            keys.len(),
            longest_pttl_ms as f64 / 3_600_000.0,
            calls("evalsha"),
            calls("set")
        ),
        took,
        rss,
    );

    // Frozen Redis: 200 claims per decide.
    server.pause();
    let rss = rss_kib();
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        decide(&c, attack(intruder::STORE, 200, 24));
        times.push(started.elapsed());
    }
    server.resume();
    row(
        "200 claims per `decide`, Redis frozen (`SIGSTOP`), 25 ms deadline",
        &format!("each decide took {times:.2?}"),
        times.iter().sum(),
        rss,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures for RELIABILITY.md"]
async fn report_5_victim_key() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(InMemoryIdempotencyStore::new());
    let c = intruder_component().with_idempotency_store(store.clone());
    let rss = rss_kib();
    let started = Instant::now();
    decide(&c, attack(intruder::VICTIM, 1, 0));
    let policy = RetryPolicy::new(RetryConfig::DEFAULT)
        .unwrap()
        .with_idempotency_store(store);
    let outcome = policy
        .execute_idempotent(
            "victim",
            "echo\u{1f}hi",
            || async { Ok::<_, io::Error>("hi".to_string()) },
            "cli",
            "echo",
        )
        .await;
    row(
        "the component claims `cli␟echo␟victim`, then the native `run --service cli --idempotency-key victim -- echo hi`",
        &match outcome {
            Ok(o) => format!("native call: {:?}", o.origin),
            Err(e) => format!("native call: {e}"),
        },
        started.elapsed(),
        rss,
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "figures for RELIABILITY.md"]
async fn report_6_forged_breaker() {
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 2,
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 50,
            failure_rate: 0.0,
            minimum_calls: 1,
            window: 10.0,
            cool_down: 30.0,
            half_open_probes: 1,
        }),
        ..RetryConfig::DEFAULT
    })
    .unwrap()
    .with_seed(forger::BREAKER_OPEN_FOREVER)
    .with_component(forger_component())
    .unwrap();
    let runs = AtomicU32::new(0);
    let call = || async {
        policy
            .execute_classified(
                || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(Err::<(), _>("down"))
                },
                "pay",
                "charge",
                |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
            )
            .await
    };
    let rss = rss_kib();
    let started = Instant::now();
    let _ = call().await;
    let second = match call().await {
        Err(RetryError::CircuitOpen { retry_after }) => format!(
            "next call refused: circuit open (Retry-After {retry_after:?}, again and again: the stored breaker is open until u64::MAX µs)"
        ),
        Err(RetryError::MaxRetriesExceeded(m)) => {
            format!("next call reached the service ({} attempts)", m.attempts)
        }
        other => format!("{other:?}"),
    };
    row(
        "breaker returned open until `u64::MAX` µs after one failure (threshold 50)",
        &second,
        started.elapsed(),
        rss,
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "figures for RELIABILITY.md"]
async fn report_7_long_delay() {
    let backoffs = Arc::new(Mutex::new(Vec::new()));
    let b = backoffs.clone();
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 3,
        initial_delay: 0.1,
        max_delay: 1.0,
        max_retry_after: 60.0,
        ..RetryConfig::DEFAULT
    })
    .unwrap()
    .with_seed(forger::LONG_DELAY)
    .with_notify(move |e| b.lock().unwrap().push(e.backoff))
    .with_component(forger_component())
    .unwrap();
    let rss = rss_kib();
    let started = Instant::now();
    let _ = policy
        .execute_classified(
            || std::future::ready(Err::<(), _>("busy")),
            "svc",
            "op",
            |_: &&str| Classification::new(ErrorCategory::ServiceUnavailable),
        )
        .await;
    row(
        "a 60 s retry with `max_delay: 1` and no server delay",
        &format!("slept {:.2?}", backoffs.lock().unwrap()),
        started.elapsed(),
        rss,
    );
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_8_log_lines() {
    let lines = CapturedLines::default();
    let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
    let c = intruder_component();
    let rss = rss_kib();
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        decide(&c, attack(intruder::LOGS, 20, 1 << 20));
    });
    let took = started.elapsed();
    let lines = lines.lines();
    let total: usize = lines.iter().map(|l| l.len() + 1).sum();
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    row(
        "20 log lines with four 1 MiB fields each, from one `decide`",
        &format!(
            "{} lines, {total} bytes written, the longest {longest} bytes",
            lines.len()
        ),
        took,
        rss,
    );
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_9_trap_names() {
    let name = format!(
        "evil\n    1: 0xdead - core::panicking::fake_frame\u{1b}[31m{}",
        "A".repeat(100_000)
    );
    let extra = format!(
        "(func $evil (@name \"{}\") unreachable)",
        wat_bytes(name.as_bytes())
    );
    let wat = policy_module(1, &extra, &[("plan", "(call $evil) (i32.const 16)")]);
    let c = PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap();
    let rss = rss_kib();
    let started = Instant::now();
    let message = c.plan(&RetryConfig::DEFAULT, 1).unwrap_err().to_string();
    let controls = message.chars().filter(|c| c.is_control()).count();
    row(
        "a trap in a function named `evil\\n    1: 0xdead - …fake_frame\\e[31m` + 100 000 × `A`",
        &format!(
            "error message of {} bytes with {controls} raw control characters",
            message.len()
        ),
        started.elapsed(),
        rss,
    );
    // And a config error that says the same through `create`.
    let field = "max_attempts\u{1b}[2J";
    let text = "fine\n{\"level\":\"INFO\"}";
    let mut result = vec![1, 0, 0, 0];
    for (at, t) in [(512u32, field), (768, text)] {
        result.extend_from_slice(&at.to_le_bytes());
        result.extend_from_slice(&(t.len() as u32).to_le_bytes());
    }
    let extra = format!(
        "(data (i32.const 16) \"{}\") (data (i32.const 512) \"{}\") (data (i32.const 768) \"{}\")",
        wat_bytes(&result),
        wat_bytes(field.as_bytes()),
        wat_bytes(text.as_bytes())
    );
    let wat = policy_module(1, &extra, &[("create", "(i32.const 16)")]);
    let c = PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap();
    let started = Instant::now();
    let message = PolicyEngine::validate(&c, &RetryConfig::DEFAULT)
        .unwrap_err()
        .to_string();
    row(
        "a `config-error` whose field holds `ESC[2J` and whose message holds a newline and a JSON line",
        &format!(
            "{message:?}: {} raw control characters",
            message.chars().filter(|c| c.is_control()).count()
        ),
        started.elapsed(),
        rss,
    );
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_10_first_call_after_idle() {
    let budget = Duration::from_millis(5);
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_SPIN_COMPONENT,
        "hostile spin",
    );
    let c = PolicyComponent::from_bytes(bytes, Sandbox::unmetered().with_time_per_call(budget))
        .unwrap();
    let rss = rss_kib();
    let mut stopped = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let _ = c.plan(&RetryConfig::DEFAULT, 7);
        stopped.push(started.elapsed());
    }
    let total = stopped.iter().sum();
    stopped.sort();
    row(
        "a loop with a 5 ms time budget, started 300 ms after the last call (20 times)",
        &format!(
            "stopped after: median {:.1?}, slowest {:.1?}",
            stopped[10], stopped[19]
        ),
        total,
        rss,
    );
}

#[test]
#[ignore = "figures for RELIABILITY.md"]
fn report_11_refused_imports_in_a_loop() {
    // The default sandbox this time: how much host time a guest can spend on imports that are
    // refused (or fail) before its fuel runs out.
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_INTRUDER_COMPONENT,
        "hostile intruder",
    );
    let c = PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap();
    let counted = Arc::new(Counted::default());
    let c = c.with_coordinator(counted.clone());
    let rss = rss_kib();
    let mut times = Vec::new();
    let mut outcome = String::new();
    for _ in 0..5 {
        let started = Instant::now();
        outcome = decide(&c, attack(intruder::SLOTS, 1_000_000, 16));
        times.push(started.elapsed());
    }
    row(
        "`acquire-slot` in an endless loop (1 000 000 made-up services), default sandbox, 5 calls",
        &format!(
            "{outcome}; {} calls reached the coordinator; each call took {times:.1?}",
            counted.calls.load(Ordering::Relaxed)
        ),
        times.iter().sum(),
        rss,
    );
}
