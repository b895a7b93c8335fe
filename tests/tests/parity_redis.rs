//! Component vs native on a real Redis: the same decisions and the same slot tickets.
//!
//! 1. Through the executor: random configs, seeds and outcome sequences run with the native
//!    policy and with the policy component, each coordinated by a `RedisCoordinator` on one
//!    `redis-server`; every retry's backoff, every ticket and every sleep agree.
//! 2. Through the component's own `schedule` export, whose `coordination` import goes to the
//!    same Redis: its slots and delays agree with the native `schedule_retry`.
//!
//! Each engine uses its own service names, so both count tickets from 0 in their own keys. The
//! windows are long (1 000 000 slots of 1 ms: 1000 s), so a case's tickets share one window and
//! count 0, 1, 2, … in order; a case that straddles a window boundary (about one in 20 000) is
//! compared without its tickets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisSettings};
use ricochet_test_support as support;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ricochet::component::{failure_to_wit, state_to_wit, wit, PolicyComponent, Sandbox};
use ricochet::coordination::{
    schedule_retry, BoxFuture, CoordinationError, Coordinator, Scheduled, SlotGrant,
};
use ricochet::metrics::RetryMetrics;
use ricochet::{Classification, RetryError, RetryPolicy};
use ricochet_core::{Decision, ErrorCategory, Failure, Guards, RetryConfig, RetryState};
use support::{guest, random_config, unique_prefix, Gen, RedisServer};

fn component() -> PolicyComponent {
    let bytes = guest(ricochet_test_support::guests::POLICY_COMPONENT, "policy");
    PolicyComponent::from_bytes(bytes, Sandbox::default()).unwrap()
}

/// A random config scaled to milliseconds, coordinated over long windows, with no time-based
/// decision a few milliseconds of scheduling noise could flip (no deadline, long breaker cool-down).
fn small_config(g: &mut Gen) -> RetryConfig {
    let mut c = random_config(g);
    // At least the transient categories and two attempts, so that most cases do retry.
    for category in &ErrorCategory::ALL[..4] {
        c.retry_on = c.retry_on.with(*category);
    }
    c.max_attempts = c.max_attempts.max(2);
    c.initial_delay = 0.0005 + g.unit() * 0.0015;
    c.max_delay = 0.005;
    c.max_retry_after = 0.004;
    c.slot_count = 1_000_000;
    c.slot_width = 0.001;
    c.slot_capacity = None;
    c.coordination_enabled = !g.chance(5);
    c.max_elapsed = None;
    if let Some(b) = &mut c.circuit_breaker {
        b.window = 60.0;
        b.cool_down = 30.0;
    }
    c
}

/// Records every acquisition a `RedisCoordinator` makes: (service, delay, window_us, grant).
struct Recording {
    inner: RedisCoordinator,
    grants: Mutex<Vec<(String, u64, u64, SlotGrant)>>,
}

impl Coordinator for Recording {
    fn acquire_slot<'a>(
        &'a self,
        service: &'a str,
        operation: &'a str,
        delay_us: u64,
        window_us: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, CoordinationError>> {
        Box::pin(async move {
            let grant = self
                .inner
                .acquire_slot(service, operation, delay_us, window_us)
                .await?;
            self.grants
                .lock()
                .unwrap()
                .push((service.to_string(), delay_us, window_us, grant));
            Ok(grant)
        })
    }

    fn now_us(&self) -> u64 {
        self.inner.now_us()
    }

    fn name(&self) -> &'static str {
        "recording-redis"
    }
}

#[derive(Debug, Clone, Copy)]
struct Scripted(ErrorCategory, Option<u64>);

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scripted {}", self.0.name())
    }
}

/// What one run of a case did.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// (attempt, backoff) before every sleep.
    backoffs: Vec<(u32, Duration)>,
    /// The sleeps themselves (backoff + slot + jitter inside the slot).
    sleeps: Vec<Duration>,
    /// (delay asked for, window length, ticket) of every acquisition.
    tickets: Vec<(u64, u64, u64)>,
    /// The windows the tickets came from.
    windows: BTreeSet<u64>,
    result: String,
}

async fn run(
    coordinator: &Arc<Recording>,
    metrics: &RetryMetrics,
    config: RetryConfig,
    seed: u64,
    script: &[Option<Scripted>],
    service: &str,
    component: Option<&PolicyComponent>,
) -> Run {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let mut policy = RetryPolicy::new(config)
        .unwrap()
        .with_coordinator(coordinator.clone())
        .with_metrics(metrics.clone())
        .with_seed(seed)
        .with_coordination_deadline(Duration::from_secs(2))
        .with_notify(move |ev| e.lock().unwrap().push((ev.attempt, ev.backoff, ev.delay)));
    if let Some(c) = component {
        policy = policy.with_component(c.clone()).unwrap();
    }
    let attempt = Mutex::new(0usize);
    let result = policy
        .execute_classified(
            || {
                let mut n = attempt.lock().unwrap();
                let outcome = script.get(*n).copied().flatten();
                *n += 1;
                std::future::ready(match outcome {
                    Some(failure) => Err(failure),
                    None => Ok(*n),
                })
            },
            service,
            "op",
            |e: &Scripted| Classification::with_server_delay(e.0, e.1.map(Duration::from_micros)),
        )
        .await;
    let events = events.lock().unwrap().clone();
    let grants: Vec<_> = coordinator
        .grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.0 == service)
        .map(|g| (g.1, g.2, g.3))
        .collect();
    Run {
        backoffs: events.iter().map(|e| (e.0, e.1)).collect(),
        sleeps: events.iter().map(|e| e.2).collect(),
        tickets: grants.iter().map(|g| (g.0, g.1, g.2.ticket)).collect(),
        windows: grants.iter().map(|g| g.2.window).collect(),
        result: match result {
            Ok(n) => format!("ok after {n}"),
            Err(RetryError::MaxRetriesExceeded(m)) => format!("{}: {}", m.attempts, m.reason),
            Err(RetryError::NonRetryable(e)) => format!("non-retryable {e}"),
            Err(RetryError::CircuitOpen { .. }) => "circuit open".into(),
        },
    }
}

async fn redis_coordinator(redis: &RedisServer, prefix: &str) -> Arc<Recording> {
    let connection =
        RedisConnection::open(&RedisSettings::parse(&redis.url()).with_key_prefix(prefix)).unwrap();
    let inner = RedisCoordinator::new(connection);
    inner.calibrate(3).await.unwrap();
    Arc::new(Recording {
        inner,
        grants: Mutex::default(),
    })
}

fn counter_sum(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

async fn slot_keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_takes_the_same_tickets_from_redis_with_either_engine() {
    let redis = RedisServer::spawn();
    let prefix = unique_prefix();
    let coordinator = redis_coordinator(&redis, &prefix).await;
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let wasm = component();
    let mut g = Gen(0xC0FF_EE00);
    let (mut tickets, mut compared_sleeps, mut straddled) = (0, 0, 0);
    for case in 0..80 {
        let config = small_config(&mut g);
        let seed = g.next();
        let script: Vec<Option<Scripted>> = (0..1 + g.below(8))
            .map(|_| {
                (!g.chance(8)).then(|| {
                    // Mostly transient categories, so that most cases retry a few times.
                    let any = if g.chance(4) { 10 } else { 4 };
                    Scripted(
                        ErrorCategory::ALL[g.below(any) as usize],
                        g.chance(3).then(|| g.below(6_000)),
                    )
                })
            })
            .collect();
        let native = run(
            &coordinator,
            &metrics,
            config,
            seed,
            &script,
            &format!("native-{case}"),
            None,
        )
        .await;
        let component = run(
            &coordinator,
            &metrics,
            config,
            seed,
            &script,
            &format!("wasm-{case}"),
            Some(&wasm),
        )
        .await;
        assert_eq!(native.result, component.result, "case {case}: {config:?}");
        assert_eq!(native.backoffs, component.backoffs, "case {case}");
        if native.windows.len() > 1 || component.windows.len() > 1 {
            straddled += 1;
            continue;
        }
        assert_eq!(native.tickets, component.tickets, "case {case}");
        assert_eq!(native.sleeps, component.sleeps, "case {case}");
        tickets += native.tickets.len();
        compared_sleeps += native.sleeps.len();
    }
    assert!(
        straddled <= 2,
        "{straddled} cases straddled a 1000 s window"
    );
    eprintln!(
        "{tickets} tickets and {compared_sleeps} sleeps compared, {straddled} cases straddled"
    );
    assert!(tickets >= 40, "only {tickets} tickets compared");
    assert!(compared_sleeps >= 50);
    assert_eq!(
        counter_sum(&registry, "retry_coordination_fallback_total"),
        0.0
    );
    assert_eq!(counter_sum(&registry, "retry_policy_fallback_total"), 0.0);
    let keys = slot_keys(&redis, &prefix).await;
    assert!(
        has_tickets_of(&keys, "wasm", 80) && has_tickets_of(&keys, "native", 80),
        "ticket keys of both engines are in Redis: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_schedule_export_takes_its_tickets_from_redis_like_native() {
    let redis = RedisServer::spawn();
    let prefix = unique_prefix();
    let coordinator = redis_coordinator(&redis, &prefix).await;
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    // Parity, not latency: both sides get a deadline a loaded machine cannot miss (a fallback
    // would take a local slot on one side only; the deadline has tests of its own).
    let deadline = Duration::from_secs(2);
    let wasm = component()
        .with_coordinator(coordinator.clone())
        .with_metrics(Some(metrics.clone()))
        .with_coordination_deadline(deadline);
    let mut g = Gen(0xB1D5);
    let mut compared = 0;
    for case in 0..30 {
        let config = RetryConfig {
            coordination_enabled: true,
            circuit_breaker: None,
            retry_budget: None,
            ..small_config(&mut g)
        };
        let policy = config.validate().unwrap();
        let seed = g.next();
        let mut native_state = RetryState::new(seed, coordinator.now_us());
        let mut wasm_state = state_to_wit(&native_state);
        let mut native_slots = Vec::new();
        let mut wasm_slots = Vec::new();
        for _ in 0..config.max_attempts {
            let failure = Failure::new(ErrorCategory::ALL[g.below(4) as usize]);
            let native = match native_state.on_failure(
                &policy,
                failure,
                coordinator.now_us(),
                Guards::none(),
            ) {
                Decision::Retry { delay_us, .. } => match schedule_retry(
                    coordinator.as_ref(),
                    &policy,
                    seed,
                    native_state.calls(),
                    delay_us,
                    &format!("native-{case}"),
                    "op",
                    deadline,
                    Some(&metrics),
                )
                .await
                {
                    Scheduled::FireIn {
                        delay_us,
                        slot,
                        fallback,
                    } => Some((delay_us, slot, fallback.is_some())),
                    Scheduled::GiveUp(_) => None,
                },
                Decision::GiveUp { .. } => None,
            };
            let (next, outcome) = wasm
                .schedule(
                    &config,
                    &format!("wasm-{case}"),
                    "op",
                    wasm_state,
                    failure_to_wit(failure),
                )
                .unwrap()
                .unwrap();
            wasm_state = next;
            let component = match outcome {
                wit::ScheduleOutcome::Retry(r) => Some((r.delay_us, r.slot, r.fallback)),
                wit::ScheduleOutcome::GiveUp(_) => None,
            };
            native_slots.push(native);
            wasm_slots.push(component);
            if native.is_none() {
                break;
            }
        }
        assert_eq!(native_slots, wasm_slots, "case {case}: {config:?}");
        compared += native_slots.iter().flatten().count();
    }
    assert!(compared >= 30, "only {compared} slots compared");
    assert_eq!(
        counter_sum(&registry, "retry_coordination_fallback_total"),
        0.0
    );
    let keys = slot_keys(&redis, &prefix).await;
    assert!(
        has_tickets_of(&keys, "wasm", 30),
        "the component's tickets are keys in Redis: {keys:?}"
    );
}

/// Whether `keys` hold a slot counter of `<engine>-<case>`/`op` for a case below `cases` (the
/// hash tag is a digest of the names: `ricochet::redis::operation_tag`).
fn has_tickets_of(keys: &[String], engine: &str, cases: usize) -> bool {
    (0..cases).any(|case| {
        let tag = ricochet::redis::operation_tag(&format!("{engine}-{case}"), "op");
        keys.iter().any(|k| k.contains(&format!("{{{tag}}}")))
    })
}
