//! A component that abuses the host's imports — slots for services it was not called for,
//! floods of store calls with endless leases, another caller's idempotency key, megabyte log
//! lines — gets only what a policy needs: its names and keys do not outlive the call in the
//! host's coordinator, store or metrics, its store calls share the export's deadline and are
//! capped, its keys live in its own namespace, its log lines are cut. The attacker is
//! `guests/hostile` built with `intruder` (the attack chosen by `state.seed`, sized by
//! `state.prev-delay-us`), run against the real in-memory backends and a real `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::component::{
    failure_to_wit, wit, PolicyComponent, Sandbox, MAX_GUEST_LEASE_MS, MAX_LOG_ERROR_BYTES,
    MAX_LOG_LINES_PER_CALL, MAX_LOG_NAME_BYTES, MAX_SLOT_CALLS_PER_CALL, MAX_STORE_CALLS_PER_CALL,
};
use ricochet::coordination::{
    BoxFuture, CoordinationError, Coordinator, InMemoryCoordinator, SlotGrant,
};
use ricochet::idempotency::{
    Begin, HolderToken, IdempotencyStore, InMemoryIdempotencyStore, Origin, StoreError,
};
use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::metrics::RetryMetrics;
use ricochet::redis::{RedisConnection, RedisIdempotencyStore, RedisSettings};
use ricochet::RetryPolicy;
use ricochet_core::{ErrorCategory, Failure, RetryConfig};
use support::{guest, unique_prefix, RedisServer};
use tracing_subscriber::layer::SubscriberExt;

mod hostile;
use hostile::attack;
use hostile::intruder::{BOUND_SLOTS, LOGS, SLOTS, STORE, VICTIM};

/// The intruder, with fuel for its loops (a thousand calls and megabyte strings): these tests
/// are about what its imports may do, not about how long it may run.
fn intruder() -> PolicyComponent {
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_INTRUDER_COMPONENT,
        "hostile intruder",
    );
    PolicyComponent::from_bytes(bytes, Sandbox::default().with_fuel_per_call(2_000_000_000))
        .unwrap()
}

fn timeout() -> wit::Failure {
    failure_to_wit(Failure::new(ErrorCategory::Timeout))
}

fn no_guards() -> wit::Guards {
    wit::Guards {
        breaker: None,
        budget: None,
    }
}

/// Runs `decide` with the given attack; the intruder answers "give up" afterwards.
fn decide(c: &PolicyComponent, state: wit::RetryState) {
    let answer = c
        .decide(&RetryConfig::DEFAULT, state, timeout(), 0, &no_guards())
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}

/// Runs `schedule` for `svc`/`op` with the given attack.
fn schedule(c: &PolicyComponent, state: wit::RetryState) {
    let answer = c
        .schedule(&RetryConfig::DEFAULT, "svc", "op", state, timeout())
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}

/// The in-memory coordinator, with a record of the names that reached it.
#[derive(Default)]
struct WatchedCoordinator {
    inner: InMemoryCoordinator,
    names: Mutex<Vec<(String, String)>>,
}

impl WatchedCoordinator {
    fn calls(&self) -> usize {
        self.names.lock().unwrap().len()
    }
    fn distinct_names(&self) -> usize {
        self.names
            .lock()
            .unwrap()
            .iter()
            .collect::<HashSet<_>>()
            .len()
    }
}

impl Coordinator for WatchedCoordinator {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        self.names
            .lock()
            .unwrap()
            .push((service.to_string(), operation.to_string()));
        self.inner
            .acquire_slot(service, operation, delay_us, window_us)
    }
    fn now_us(&self) -> u64 {
        self.inner.now_us()
    }
    fn name(&self) -> &'static str {
        "watched"
    }
}

#[test]
fn slots_may_be_taken_only_for_the_service_and_operation_of_the_call() {
    let coordinator = Arc::new(WatchedCoordinator::default());
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let c = intruder()
        .with_coordinator(coordinator.clone())
        .with_metrics(Some(metrics));
    // The reviewer's attacks: 100 000 made-up services (85 MB of coordinator keys), 200
    // services named with 1 MiB each (222 MB). Here: 1 000 names from `decide` (which is
    // called for no service at all) and 20 names of 1 MiB from `schedule` (called for svc/op).
    decide(&c, attack(SLOTS, 1_000, 16));
    schedule(&c, attack(SLOTS, 20, 1 << 20));
    assert_eq!(
        coordinator.calls(),
        0,
        "a made-up name reached the coordinator"
    );
    assert_eq!(
        c.import_stats()
            .refused_import_calls
            .load(Ordering::Relaxed),
        1_020
    );
    // Nor a metric label: refusals are not coordination fallbacks.
    assert!(registry
        .gather()
        .iter()
        .all(|f| f.name() != "retry_coordination_fallback_total"));

    // Its own service and operation, yes — a few times per call, not a thousand.
    schedule(&c, attack(BOUND_SLOTS, 1_000, 0));
    assert_eq!(coordinator.calls(), MAX_SLOT_CALLS_PER_CALL as usize);
    assert_eq!(coordinator.distinct_names(), 1);
    // And not from `decide`, which is not called for a service.
    decide(&c, attack(BOUND_SLOTS, 10, 0));
    assert_eq!(coordinator.calls(), MAX_SLOT_CALLS_PER_CALL as usize);
}

/// The in-memory store, with a record of what reached it.
#[derive(Default)]
struct WatchedStore {
    inner: InMemoryIdempotencyStore,
    /// (operation, key, lease or TTL in ms).
    calls: Mutex<Vec<(&'static str, String, u64)>>,
}

impl WatchedStore {
    fn note(&self, what: &'static str, key: &str, ms: u64) {
        self.calls.lock().unwrap().push((what, key.to_string(), ms));
    }
}

impl IdempotencyStore for WatchedStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Begin, StoreError>> {
        self.note("begin", key, lease_ms);
        self.inner.begin(key, fingerprint, lease_ms)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        result: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note("complete", key, ttl_ms);
        self.inner.complete(key, token, result, ttl_ms)
    }
    fn fail<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note("fail", key, 0);
        self.inner.fail(key, token)
    }
    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a HolderToken,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.note("renew", key, lease_ms);
        self.inner.renew(key, token, lease_ms)
    }
    fn name(&self) -> &'static str {
        "watched"
    }
}

#[test]
fn store_calls_are_capped_per_call_with_bounded_leases_and_ttls_in_their_own_namespace() {
    let store = Arc::new(WatchedStore::default());
    let c = intruder().with_idempotency_store(store.clone());
    // 10 000 claims with a lease of ten years, each completed with a TTL of ten years.
    decide(&c, attack(STORE, 10_000, 32));
    let calls = store.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), MAX_STORE_CALLS_PER_CALL as usize);
    let ttl_cap_ms = (RetryConfig::DEFAULT.idempotency_ttl * 1000.0) as u64;
    for (what, key, ms) in &calls {
        match *what {
            "begin" => assert_eq!(*ms, MAX_GUEST_LEASE_MS, "lease"),
            "complete" => assert_eq!(*ms, ttl_cap_ms, "ttl"),
            other => panic!("unexpected {other}"),
        }
        // `␞component:<32 hex digits>␟<the guest's key>`.
        let (namespace, own) = key
            .strip_prefix("\u{1e}component:")
            .and_then(|rest| rest.split_once('\u{1f}'))
            .unwrap_or_else(|| panic!("{key:?} is not in the component's namespace"));
        assert_eq!(namespace.len(), 32, "{key:?}");
        assert!(own.starts_with("k-"), "{key:?}");
    }
    let refused = c
        .import_stats()
        .refused_import_calls
        .load(Ordering::Relaxed);
    assert_eq!(refused, 10_000 - u64::from(MAX_STORE_CALLS_PER_CALL) / 2);
    // The cap is per call: the next call gets its share again (a new key: longer padding).
    decide(&c, attack(STORE, 1, 40));
    assert_eq!(store.calls.lock().unwrap().len(), calls.len() + 2);
    // A key, fingerprint or value over its size is refused without reaching the store.
    decide(&c, attack(STORE, 1, 100_000));
    assert_eq!(store.calls.lock().unwrap().len(), calls.len() + 2);
}

/// The reviewer's cross-claim: a component claimed `cli␟echo␟victim`, and then
/// `ricochet run --idempotency-key victim --service cli -- echo hi` failed with "reused with a
/// different payload". Guest keys now live under the component's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_cannot_claim_a_key_of_the_native_executor() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(InMemoryIdempotencyStore::new());
    let c = intruder().with_idempotency_store(store.clone());
    decide(&c, attack(VICTIM, 1, 0));
    let policy = RetryPolicy::new(RetryConfig::DEFAULT)
        .unwrap()
        .with_idempotency_store(store.clone());
    let outcome = policy
        .execute_idempotent(
            "victim",
            "echo\u{1f}hi",
            || async { Ok::<_, io::Error>("hi".to_string()) },
            "cli",
            "echo",
        )
        .await
        .expect("the native call is not disturbed by the component's claim");
    assert_eq!(
        (outcome.value.as_str(), outcome.origin),
        ("hi", Origin::Ran)
    );
    // A duplicate replays the native result, not the component's.
    let again = policy
        .execute_idempotent(
            "victim",
            "echo\u{1f}hi",
            || async { Ok::<_, io::Error>("ran twice".to_string()) },
            "cli",
            "echo",
        )
        .await
        .unwrap();
    assert_eq!(
        (again.value.as_str(), again.origin),
        ("hi", Origin::Replayed)
    );
}

#[test]
fn log_lines_are_cut_and_counted() {
    let lines = CapturedLines::default();
    let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
    let c = intruder();
    // 100 lines whose four text fields are 1 MiB each: 400 MiB of log from one call.
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    tracing::subscriber::with_default(subscriber, || {
        decide(&c, attack(LOGS, 100, 1 << 20));
    });
    let lines = lines.lines();
    assert_eq!(lines.len(), MAX_LOG_LINES_PER_CALL as usize);
    let longest = lines.iter().map(String::len).max().unwrap();
    let bound = 2 * MAX_LOG_NAME_BYTES + MAX_LOG_ERROR_BYTES + 64 + 200;
    assert!(longest <= bound, "a line of {longest} bytes");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["service"].as_str().unwrap().len(), MAX_LOG_NAME_BYTES);
        assert_eq!(v["error"].as_str().unwrap().len(), MAX_LOG_ERROR_BYTES);
    }
    assert_eq!(
        c.import_stats().dropped_log_lines.load(Ordering::Relaxed),
        100 - u64::from(MAX_LOG_LINES_PER_CALL)
    );
}

/// With Redis writes paused (`SIGSTOP`), 200 claims per `decide` used to take 5 s — every store
/// call got the whole 25 ms deadline, and the time meter does not count host time. Now every
/// store call of one export call shares that deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_share_the_export_calls_deadline_when_redis_is_frozen() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::single(server.url()).with_key_prefix(unique_prefix());
    let store = Arc::new(RedisIdempotencyStore::new(
        RedisConnection::open(&settings).unwrap(),
    ));
    let deadline = Duration::from_millis(25);
    let c = intruder()
        .with_idempotency_store(store)
        .with_coordination_deadline(deadline);
    decide(&c, attack(STORE, 1, 8)); // connected and warm
    server.pause();
    for _ in 0..3 {
        let started = Instant::now();
        decide(&c, attack(STORE, 200, 8));
        let took = started.elapsed();
        // Generous: a loaded 2-core machine; the defect was 200 × 25 ms.
        assert!(
            took <= deadline + Duration::from_millis(250),
            "took {took:?}"
        );
    }
    server.resume();
}

/// On a live Redis, 10 000 claims per `decide` made 50 000 SETs and 10 001 keys with a 10-year
/// PTTL. Now one call makes at most its share of keys, each gone within the config's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_leave_few_keys_with_bounded_ttls_on_redis() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::single(server.url()).with_key_prefix(unique_prefix());
    let store = Arc::new(RedisIdempotencyStore::new(
        RedisConnection::open(&settings).unwrap(),
    ));
    // What is counted here is keys and TTLs, not time: a deadline a loaded machine cannot miss
    // (a claim that misses it is released again, and its key is gone before the count).
    let c = intruder()
        .with_idempotency_store(store)
        .with_coordination_deadline(Duration::from_secs(5));
    decide(&c, attack(STORE, 10_000, 16));
    let keys: Vec<String> = server
        .cli(&["--scan"])
        .lines()
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect();
    assert!(
        !keys.is_empty() && keys.len() <= MAX_STORE_CALLS_PER_CALL as usize / 2,
        "{keys:?}"
    );
    let ttl_cap_ms = (RetryConfig::DEFAULT.idempotency_ttl * 1000.0) as i64;
    for key in keys {
        let pttl: i64 = server.cli(&["PTTL", &key]).trim().parse().unwrap();
        assert!(pttl > 0 && pttl <= ttl_cap_ms, "{key}: PTTL {pttl} ms");
    }
}
