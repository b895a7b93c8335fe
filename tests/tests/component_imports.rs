//! The component's `coordination` import obeys the native deadline-and-fallback rule: a
//! coordinator that answers late, never, or refuses costs the guest at most the deadline, the
//! guest takes the same local slot the native host would, and the host counts the fallback —
//! from any thread: no runtime, a current-thread runtime, a multi-thread worker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisSettings};
use ricochet_test_support as support;

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ricochet::component::{failure_to_wit, state_to_wit, wit, PolicyComponent, Sandbox};
use ricochet::coordination::{
    schedule_retry, wall_clock_us, BoxFuture, CoordinationError, Coordinator, Scheduled, SlotGrant,
};
use ricochet::metrics::RetryMetrics;
use ricochet_core::{ErrorCategory, Failure, RetryConfig, RetryState};
use support::{free_port, guest, RedisServer};

const DEADLINE: Duration = Duration::from_millis(25);
/// What a loaded 2-core machine may add to a deadline.
const SLACK: Duration = Duration::from_millis(150);

/// The policy component (compiled once per test binary) with its imports on `coordinator`.
fn component(coordinator: Arc<dyn Coordinator>, metrics: &RetryMetrics) -> PolicyComponent {
    static LOADED: OnceLock<PolicyComponent> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
            PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
        })
        .clone()
        .with_coordinator(coordinator)
        .with_metrics(Some(metrics.clone()))
        .with_coordination_deadline(DEADLINE)
}

/// A coordinator that never answers.
struct Silent;

impl Coordinator for Silent {
    fn acquire_slot<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: u64,
        _: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        Box::pin(std::future::pending())
    }
    fn now_us(&self) -> u64 {
        wall_clock_us()
    }
    fn name(&self) -> &'static str {
        "silent"
    }
}

/// A coordinator that answers ticket 0 after `delay` (on a tokio timer).
struct Slow(Duration);

impl Coordinator for Slow {
    fn acquire_slot<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        let wait = self.0;
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            let now_us = wall_clock_us();
            let earliest_us = now_us + delay_us;
            Ok(SlotGrant {
                ticket: 0,
                window: earliest_us / window_us,
                earliest_us,
                now_us,
            })
        })
    }
    fn now_us(&self) -> u64 {
        wall_clock_us()
    }
    fn name(&self) -> &'static str {
        "slow"
    }
}

/// One `schedule` call for the first retry: (slot, delay, fallback) and how long it took.
fn schedule_once(c: &PolicyComponent, seed: u64) -> ((u32, u64, bool), Duration) {
    let started = Instant::now();
    let (_, outcome) = c
        .schedule(
            &RetryConfig::DEFAULT,
            "svc",
            "op",
            state_to_wit(&RetryState::new(seed, wall_clock_us())),
            failure_to_wit(Failure::new(ErrorCategory::Timeout)),
        )
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    match outcome {
        wit::ScheduleOutcome::Retry(r) => ((r.slot, r.delay_us, r.fallback), took),
        other => panic!("{other:?}"),
    }
}

/// The native local slot for the first retry of `seed` under the default policy.
async fn native_fallback(seed: u64) -> (u32, u64) {
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let delay_us = policy.next_delay(1, seed, 0).delay_us;
    match schedule_retry(
        &Silent, &policy, seed, 1, delay_us, "s", "o", DEADLINE, None,
    )
    .await
    {
        Scheduled::FireIn {
            delay_us,
            slot,
            fallback: Some(_),
        } => (slot, delay_us),
        other => panic!("{other:?}"),
    }
}

fn fallbacks(metrics: &RetryMetrics, reason: &str) -> u64 {
    metrics
        .coordination_fallback
        .with_label_values(&["svc", "op", reason])
        .get()
}

fn silence_is_a_timeout_fallback_within_the_deadline() {
    let metrics = RetryMetrics::register(&prometheus::Registry::new()).unwrap();
    let c = component(Arc::new(Silent), &metrics);
    for seed in [1, 2, 3] {
        let ((slot, delay_us, fallback), took) = schedule_once(&c, seed);
        assert!(fallback, "no coordinator answered, so the slot is local");
        assert!(
            took >= DEADLINE && took <= DEADLINE + SLACK,
            "took {took:?}"
        );
        let policy = RetryConfig::DEFAULT.validate().unwrap();
        assert_eq!(u64::from(slot), policy.fallback_ticket(seed, 1));
        assert!(delay_us > 0);
    }
    assert_eq!(fallbacks(&metrics, "timeout"), 3);
}

#[test]
fn silence_costs_the_deadline_without_a_runtime() {
    silence_is_a_timeout_fallback_within_the_deadline();
}

#[tokio::test(flavor = "current_thread")]
async fn silence_costs_the_deadline_on_a_current_thread_runtime() {
    silence_is_a_timeout_fallback_within_the_deadline();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_costs_the_deadline_on_a_multi_thread_worker() {
    silence_is_a_timeout_fallback_within_the_deadline();
}

#[tokio::test(flavor = "current_thread")]
async fn the_guest_falls_back_to_the_same_slot_as_the_native_host() {
    let metrics = RetryMetrics::register(&prometheus::Registry::new()).unwrap();
    let c = component(Arc::new(Silent), &metrics);
    for seed in 0..20 {
        let ((slot, delay_us, _), _) = schedule_once(&c, seed);
        assert_eq!((slot, delay_us), native_fallback(seed).await, "seed {seed}");
    }
}

#[test]
fn an_answer_within_the_deadline_is_used_and_a_late_one_is_not() {
    let metrics = RetryMetrics::register(&prometheus::Registry::new()).unwrap();
    let prompt = component(Arc::new(Slow(Duration::from_millis(2))), &metrics);
    let ((slot, _, fallback), _) = schedule_once(&prompt, 5);
    assert_eq!((slot, fallback), (0, false));
    let late = component(Arc::new(Slow(Duration::from_millis(200))), &metrics);
    let ((_, _, fallback), took) = schedule_once(&late, 5);
    assert!(fallback);
    assert!(took <= DEADLINE + SLACK, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_counted_fallback() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let url = format!("redis://127.0.0.1:{}", free_port(false));
    let redis = RedisCoordinator::new(RedisConnection::open(&RedisSettings::parse(&url)).unwrap());
    let c = component(Arc::new(redis), &metrics);
    let ((_, _, fallback), took) = schedule_once(&c, 1);
    assert!(fallback);
    assert!(took <= DEADLINE + SLACK, "took {took:?}");
    assert_eq!(
        fallbacks(&metrics, "connection") + fallbacks(&metrics, "timeout"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_and_never_answers_costs_the_deadline() {
    let metrics = RetryMetrics::register(&prometheus::Registry::new()).unwrap();
    // The kernel completes the handshake; nobody ever reads or writes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let redis = RedisCoordinator::new(RedisConnection::open(&RedisSettings::parse(&url)).unwrap());
    let c = component(Arc::new(redis), &metrics);
    for _ in 0..3 {
        let ((_, _, fallback), took) = schedule_once(&c, 1);
        assert!(fallback);
        assert!(took <= DEADLINE + SLACK, "took {took:?}");
    }
    assert_eq!(fallbacks(&metrics, "timeout"), 3);
    drop(listener);
}

/// A Redis connection opened on a current-thread runtime, called synchronously from that
/// runtime's only thread: the call must come back by its deadline, with a ticket or a fallback,
/// and never panic or hang.
#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_never_hangs_on_redis() {
    let server = RedisServer::spawn();
    let metrics = RetryMetrics::register(&prometheus::Registry::new()).unwrap();
    let settings = RedisSettings::parse(&server.url()).with_key_prefix(support::unique_prefix());
    let redis = RedisCoordinator::new(RedisConnection::open(&settings).unwrap());
    let c = component(Arc::new(redis), &metrics);
    for _ in 0..5 {
        let (_, took) = schedule_once(&c, 1);
        assert!(took <= DEADLINE + SLACK, "took {took:?}");
    }
}

/// A runtime's worker thread keeps the instance it called last (see `component_pool.rs`). When
/// the component is dropped and the worker then exits, the instance — its store's state holding
/// a live Redis coordinator — is dropped in the thread's exit, outside any runtime: no panic, no
/// hang, and the coordinator goes with it.
#[test]
fn a_worker_that_exits_with_a_dropped_components_instance_drops_its_redis_backends() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::parse(&server.url()).with_key_prefix(support::unique_prefix());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let coordinator = rt.block_on(async move {
        tokio::spawn(async move {
            let redis = Arc::new(RedisCoordinator::new(
                RedisConnection::open(&settings).unwrap(),
            ));
            let coordinator = Arc::downgrade(&redis);
            let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
            let c = PolicyComponent::from_bytes(bytes, Sandbox::default())
                .unwrap()
                .with_coordinator(redis)
                .with_coordination_deadline(Duration::from_secs(2));
            let ((_, _, fallback), _) = tokio::task::block_in_place(|| schedule_once(&c, 3));
            assert!(!fallback, "Redis answered");
            drop(c);
            coordinator
        })
        .await
        .unwrap()
    });
    assert!(
        coordinator.upgrade().is_some(),
        "the worker keeps the dropped component's instance, and its coordinator"
    );
    rt.shutdown_timeout(Duration::from_secs(10));
    let gone_by = Instant::now() + Duration::from_secs(10);
    while coordinator.upgrade().is_some() && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        coordinator.upgrade().is_none(),
        "the worker's exit dropped the instance"
    );
}
