//! `execute_idempotent` end to end, in memory and on real Redis servers: one run for 100
//! concurrent duplicates, takeover after a dead holder's lease, fingerprint mismatches,
//! released failures, hashed keys, and an unreachable or frozen store that never fails a call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisIdempotencyStore, RedisSettings};
use ricochet_test_support as common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{unique_prefix, RedisCluster, RedisServer};
use prometheus::Registry;

use ricochet::idempotency::{
    IdempotencyError, IdempotencyOptions, IdempotencyStore, InMemoryIdempotencyStore, Origin,
};
use ricochet::metrics::RetryMetrics;
use ricochet::{RetryConfig, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
}

fn policy(store: Arc<dyn IdempotencyStore>) -> RetryPolicy {
    RetryPolicy::new(RetryConfig::DEFAULT)
        .unwrap()
        .with_idempotency_store(store)
        .with_metrics(RetryMetrics::register(&Registry::new()).unwrap())
}

fn redis_store(settings: &RedisSettings) -> Arc<dyn IdempotencyStore> {
    Arc::new(RedisIdempotencyStore::new(
        RedisConnection::open(settings).unwrap(),
    ))
}

/// 100 concurrent calls with one key: the operation runs once and every caller gets its result.
async fn hundred_duplicates(store: Arc<dyn IdempotencyStore>) {
    let policy = Arc::new(policy(store));
    let runs = Arc::new(AtomicU32::new(0));
    let key = format!("order-{}", uuid::Uuid::new_v4());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (policy, runs, key) = (policy.clone(), runs.clone(), key.clone());
            tokio::spawn(async move {
                policy
                    .execute_idempotent(
                        &key,
                        "amount=1250",
                        || {
                            let runs = runs.clone();
                            async move {
                                let n = runs.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Ok::<_, io::Error>(Receipt {
                                    charge_id: format!("ch_{n}_{}", uuid::Uuid::new_v4()),
                                    amount_cents: 1250,
                                })
                            }
                        },
                        "payments",
                        "charge",
                    )
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().expect("every duplicate gets the result"));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the operation ran exactly once"
    );
    let first = &outcomes[0].value;
    assert!(
        outcomes.iter().all(|o| &o.value == first),
        "all 100 got the same result"
    );
    assert_eq!(
        outcomes.iter().filter(|o| o.origin == Origin::Ran).count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.origin == Origin::Replayed)
            .count(),
        99
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_duplicates_run_once_in_memory() {
    hundred_duplicates(Arc::new(InMemoryIdempotencyStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_duplicates_run_once_on_redis() {
    let (settings, _server) = common::single();
    hundred_duplicates(redis_store(&settings)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_duplicates_run_once_on_a_cluster() {
    let cluster = RedisCluster::spawn();
    hundred_duplicates(redis_store(&cluster.settings())).await;
}

/// A holder that dies mid-operation is taken over once its lease runs out. It dies as a killed
/// process would: its call is never polled again (no complete, no fail, no renewals) and never
/// dropped — a dropped call releases its claim at once (`a_dropped_call_releases_its_claim`).
async fn takeover(store: Arc<dyn IdempotencyStore>) {
    let policy = Arc::new(policy(store));
    let options = IdempotencyOptions {
        lease: Duration::from_millis(300),
        wait: Duration::from_secs(5),
        ..Default::default()
    };
    let key = format!("job-{}", uuid::Uuid::new_v4());
    let mut doomed = Box::pin(policy.execute_idempotent_with(
        &options,
        &key,
        "fp",
        std::future::pending::<Result<u32, io::Error>>,
        "jobs",
        "run",
    ));
    // Polled long enough to claim the key, then frozen for good.
    let _ = tokio::time::timeout(Duration::from_millis(50), doomed.as_mut()).await;
    std::mem::forget(doomed);
    let started = Instant::now();
    let outcome = policy
        .execute_idempotent_with(
            &options,
            &key,
            "fp",
            || async { Ok::<_, io::Error>(7u32) },
            "jobs",
            "run",
        )
        .await
        .expect("taken over");
    let waited = started.elapsed();
    assert_eq!((outcome.value, outcome.origin), (7, Origin::Ran));
    assert!(
        waited >= Duration::from_millis(150),
        "took over before the lease ended ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(2),
        "waited {waited:?} for a 300 ms lease"
    );
    let again = policy
        .execute_idempotent_with(
            &options,
            &key,
            "fp",
            || async { Ok::<_, io::Error>(8u32) },
            "jobs",
            "run",
        )
        .await
        .unwrap();
    assert_eq!((again.value, again.origin), (7, Origin::Replayed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_taken_over_after_its_lease_in_memory() {
    takeover(Arc::new(InMemoryIdempotencyStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_is_taken_over_after_its_lease_on_redis() {
    let (settings, _server) = common::single();
    takeover(redis_store(&settings)).await;
}

/// A live holder renews its lease: a slow operation is not taken over by a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_holder_keeps_its_claim_by_renewing() {
    let (settings, _server) = common::single();
    let policy = Arc::new(policy(redis_store(&settings)));
    let options = IdempotencyOptions {
        lease: Duration::from_millis(150),
        wait: Duration::from_secs(5),
        ..Default::default()
    };
    let runs = Arc::new(AtomicU32::new(0));
    let call = |policy: Arc<RetryPolicy>, runs: Arc<AtomicU32>, options: IdempotencyOptions| async move {
        policy
            .execute_idempotent_with(
                &options,
                "slow-key",
                "fp",
                || {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        Ok::<_, io::Error>("done".to_string())
                    }
                },
                "jobs",
                "slow",
            )
            .await
            .unwrap()
    };
    let first = tokio::spawn(call(policy.clone(), runs.clone(), options.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = call(policy, runs.clone(), options).await;
    let first = first.await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a renewed lease is not taken over"
    );
    assert_eq!(
        (first.origin, second.origin),
        (Origin::Ran, Origin::Replayed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_fingerprint_is_a_mismatch_and_a_failure_releases_the_key() {
    let (settings, _server) = common::single();
    for store in [
        redis_store(&settings),
        Arc::new(InMemoryIdempotencyStore::new()) as Arc<dyn IdempotencyStore>,
    ] {
        let policy = policy(store);
        let ok = policy
            .execute_idempotent(
                "k1",
                "amount=10",
                || async { Ok::<_, io::Error>(10u32) },
                "s",
                "o",
            )
            .await
            .unwrap();
        assert_eq!(ok.origin, Origin::Ran);
        let other = policy
            .execute_idempotent(
                "k1",
                "amount=99",
                || async { Ok::<_, io::Error>(99u32) },
                "s",
                "o",
            )
            .await;
        assert!(
            matches!(other, Err(IdempotencyError::Mismatch)),
            "{other:?}"
        );
        // The same key under another operation is another logical call.
        let elsewhere = policy
            .execute_idempotent(
                "k1",
                "amount=99",
                || async { Ok::<_, io::Error>(99u32) },
                "s",
                "o2",
            )
            .await;
        assert_eq!(elsewhere.unwrap().origin, Origin::Ran);

        // A non-retryable failure releases the key; the next call runs.
        let failed = policy
            .execute_idempotent(
                "k2",
                "fp",
                || async { Err::<u32, _>(io::Error::from(io::ErrorKind::InvalidInput)) },
                "s",
                "o",
            )
            .await;
        assert!(
            matches!(failed, Err(IdempotencyError::Operation(_))),
            "{failed:?}"
        );
        let retried = policy
            .execute_idempotent("k2", "fp", || async { Ok::<_, io::Error>(2u32) }, "s", "o")
            .await
            .unwrap();
        assert_eq!((retried.value, retried.origin), (2, Origin::Ran));

        // A caller that will not wait gets a clear "in progress".
        let options = IdempotencyOptions {
            wait: Duration::ZERO,
            ..Default::default()
        };
        let holder = {
            let policy = policy.clone();
            tokio::spawn(async move {
                policy
                    .execute_idempotent(
                        "k3",
                        "fp",
                        || async {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok::<_, io::Error>(3u32)
                        },
                        "s",
                        "o",
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let busy = policy
            .execute_idempotent_with(
                &options,
                "k3",
                "fp",
                || async { Ok::<_, io::Error>(0u32) },
                "s",
                "o",
            )
            .await;
        assert!(
            matches!(busy, Err(IdempotencyError::InProgress)),
            "{busy:?}"
        );
        assert_eq!(holder.await.unwrap().unwrap().value, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_fingerprints_reach_redis_only_hashed() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::single(server.url()).with_key_prefix("tenant-7");
    let policy = policy(redis_store(&settings));
    policy
        .execute_idempotent(
            "customer-4711-invoice",
            "iban=DE89370400440532013000",
            || async { Ok::<_, io::Error>(1u8) },
            "s",
            "o",
        )
        .await
        .unwrap();
    let keys = server.cli(&["--scan"]);
    let key = keys.trim();
    assert!(
        key.starts_with("tenant-7:idem:") && key.len() == "tenant-7:idem:".len() + 64,
        "{key}"
    );
    let value = server.cli(&["GET", key]);
    assert!(
        !keys.contains("4711") && !value.contains("DE89"),
        "{keys} {value}"
    );
    let ttl_ms: i64 = server.cli(&["PTTL", key]).trim().parse().unwrap();
    assert!(
        ttl_ms > 3_590_000,
        "completed results live for idempotency_ttl (1 h): {ttl_ms}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_frozen_store_runs_the_operation_unguarded_and_counts_it() {
    let registry = Registry::new();
    let counted = RetryMetrics::register(&registry).unwrap();
    let options = IdempotencyOptions {
        ..Default::default()
    };
    let count = |reason: &str| {
        counted
            .idempotency_fallback
            .with_label_values(&["s", "o", reason])
            .get()
    };

    // Nothing listens: refused at once.
    let port = common::free_port(false);
    let down = policy(redis_store(&RedisSettings::single(format!(
        "redis://127.0.0.1:{port}"
    ))))
    .with_metrics(counted.clone());
    let outcome = down
        .execute_idempotent_with(
            &options,
            "k",
            "fp",
            || async { Ok::<_, io::Error>(5u32) },
            "s",
            "o",
        )
        .await
        .unwrap();
    assert_eq!((outcome.value, outcome.origin), (5, Origin::Unguarded));
    assert!(count("connection") + count("timeout") >= 1);

    // Frozen (SIGSTOP): each call waits no longer than the store deadline.
    let server = RedisServer::spawn();
    let frozen = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ))
    .with_metrics(counted.clone());
    frozen
        .execute_idempotent_with(
            &options,
            "warm",
            "fp",
            || async { Ok::<_, io::Error>(0u32) },
            "s",
            "o",
        )
        .await
        .unwrap();
    server.pause();
    let before = count("timeout");
    let started = Instant::now();
    let outcome = frozen
        .execute_idempotent_with(
            &options,
            "k",
            "fp",
            || async { Ok::<_, io::Error>(6u32) },
            "s",
            "o",
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!((outcome.value, outcome.origin), (6, Origin::Unguarded));
    assert!(
        took < options.store_deadline + Duration::from_millis(100),
        "took {took:?}"
    );
    assert_eq!(count("timeout"), before + 1);
    server.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_on_one_redis_cannot_read_or_clobber_each_other() {
    // Same server, same service/operation/key, different key prefixes: each deployment runs its
    // own operation once, replays only its own result, and leaves the other's keys untouched.
    let server = RedisServer::spawn();
    let blue = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix("blue"),
    ));
    let green = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix("green"),
    ));
    let runs = AtomicU32::new(0);
    let charge = |who: &'static str| {
        let runs = &runs;
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>(Receipt {
                charge_id: who.to_string(),
                amount_cents: 100,
            })
        }
    };
    let b = blue
        .execute_idempotent("order-1", "fp", charge("blue"), "pay", "charge")
        .await
        .unwrap();
    let g = green
        .execute_idempotent("order-1", "fp", charge("green"), "pay", "charge")
        .await
        .unwrap();
    assert_eq!(
        (b.origin, g.origin),
        (Origin::Ran, Origin::Ran),
        "green did not see blue's claim"
    );
    assert_eq!(g.value.charge_id, "green");
    let b2 = blue
        .execute_idempotent("order-1", "fp", charge("blue"), "pay", "charge")
        .await
        .unwrap();
    assert_eq!(
        (b2.origin, b2.value.charge_id.as_str()),
        (Origin::Replayed, "blue"),
        "blue's result survived green"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let keys = server.cli(&["--scan"]);
    let blue_keys = keys.lines().filter(|k| k.starts_with("blue:")).count();
    let green_keys = keys.lines().filter(|k| k.starts_with("green:")).count();
    assert_eq!((blue_keys, green_keys), (1, 1), "{keys}");
    assert!(
        keys.lines()
            .all(|k| k.starts_with("blue:") || k.starts_with("green:")),
        "{keys}"
    );
}

/// The store goes away after the claim, while the operation runs: the call still returns its
/// value, says the result was not stored (`Unrecorded`) and counts it; once the claim has
/// expired, a duplicate runs the operation again — which is what `Unrecorded` warns of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_store_cannot_take_is_returned_as_unrecorded_and_counted() {
    let registry = Registry::new();
    let counted = RetryMetrics::register(&registry).unwrap();
    let options = IdempotencyOptions {
        lease: Duration::from_millis(300),
        ..Default::default()
    };
    let server = RedisServer::spawn();
    let policy = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ))
    .with_metrics(counted.clone());
    let pid = server.pid();
    let outcome = policy
        .execute_idempotent_with(
            &options,
            "order-1",
            "fp",
            || async move {
                // Freeze the server while the operation runs: `complete` times out.
                let stopped = std::process::Command::new("kill")
                    .args(["-STOP", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(stopped.success());
                Ok::<_, io::Error>(1u32)
            },
            "s",
            "o",
        )
        .await
        .unwrap();
    assert_eq!((outcome.value, outcome.origin), (1, Origin::Unrecorded));
    assert_eq!(
        counted
            .idempotency_fallback
            .with_label_values(&["s", "o", "store_timeout"])
            .get(),
        1
    );
    server.resume();
    // The `complete` sent while the server was stopped may still land when it resumes; either
    // way the key is not claimed forever: after the lease a duplicate gets an answer.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = policy
        .execute_idempotent_with(
            &options,
            "order-1",
            "fp",
            || async { Ok::<_, io::Error>(2u32) },
            "s",
            "o",
        )
        .await
        .unwrap();
    assert!(
        matches!(
            (again.value, again.origin),
            (1, Origin::Replayed) | (2, Origin::Ran)
        ),
        "{again:?}"
    );
}

fn fast_options() -> IdempotencyOptions {
    IdempotencyOptions {
        wait: Duration::ZERO,
        ..Default::default()
    }
}

/// Issue 14, item 3: Redis is busy (stopped) past the 100 ms store deadline while a claim is
/// on its way; the call runs unguarded, and when Redis resumes the claim lands — before the
/// fix with nobody to release it, so a duplicate found it in progress for the whole 30 s
/// lease. Now a release for the claim's token follows it, and the duplicate runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_lands_after_the_store_deadline_is_released() {
    let server = RedisServer::spawn();
    let policy = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ));
    let ok = |v: u32| move || async move { Ok::<_, io::Error>(v) };
    let warm = policy
        .execute_idempotent_with(&fast_options(), "warm", "fp", ok(0), "s", "o")
        .await
        .unwrap();
    assert_eq!(warm.origin, Origin::Ran);

    server.pause();
    let pid = server.pid();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
    });
    let first = policy
        .execute_idempotent_with(&fast_options(), "order-1", "fp", ok(1), "s", "o")
        .await
        .unwrap();
    assert_eq!(first.origin, Origin::Unguarded);
    resume.join().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let duplicate = policy
        .execute_idempotent_with(&fast_options(), "order-1", "fp", ok(2), "s", "o")
        .await
        .expect("the late claim was released, not left in progress");
    assert_eq!((duplicate.value, duplicate.origin), (2, Origin::Ran));
}

/// Issue 14, item 3 (the executor's side): an idempotent call dropped by its caller while the
/// operation runs releases its claim, in memory and on Redis; before, the key stayed in
/// progress for the whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_releases_its_claim() {
    let server = RedisServer::spawn();
    for store in [
        Arc::new(InMemoryIdempotencyStore::new()) as Arc<dyn IdempotencyStore>,
        redis_store(&RedisSettings::single(server.url()).with_key_prefix(unique_prefix())),
    ] {
        let name = store.name();
        let policy = policy(store);
        let options = fast_options();
        let slow = policy.execute_idempotent_with(
            &options,
            "order-1",
            "fp",
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, io::Error>(1u32)
            },
            "s",
            "o",
        );
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .expect_err("the caller gives up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let duplicate = policy
            .execute_idempotent_with(
                &fast_options(),
                "order-1",
                "fp",
                || async { Ok::<_, io::Error>(2u32) },
                "s",
                "o",
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: the dropped call's claim is held: {e}"));
        assert_eq!(
            (duplicate.value, duplicate.origin),
            (2, Origin::Ran),
            "{name}"
        );
    }
}

/// Issue 14, item 4: a result past `max_result_bytes` (1 MiB by default) is not sent. Before,
/// a 2 MiB result against `proto-max-bulk-len 1mb` made the server close the connection the
/// coordinator shares, and left the record in progress. Now the call returns it as
/// `Unrecorded` (counted `result_too_large`), releases the claim, and the shared connection
/// keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_cap_is_unrecorded_and_the_shared_connection_survives() {
    use ricochet::coordination::Coordinator;
    let server = RedisServer::spawn_with(&["--proto-max-bulk-len", "1mb"], None);
    let connection = RedisConnection::open(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    )
    .unwrap();
    let coordinator = ricochet::redis::RedisCoordinator::new(connection.clone());
    let registry = Registry::new();
    let counted = RetryMetrics::register(&registry).unwrap();
    let policy =
        policy(Arc::new(RedisIdempotencyStore::new(connection))).with_metrics(counted.clone());
    coordinator.calibrate(1).await.unwrap();

    let big = "x".repeat(2 << 20);
    let outcome = policy
        .execute_idempotent_with(
            &fast_options(),
            "big",
            "fp",
            || {
                let big = big.clone();
                async move { Ok::<_, io::Error>(big) }
            },
            "s",
            "o",
        )
        .await
        .unwrap();
    assert_eq!(outcome.origin, Origin::Unrecorded);
    assert_eq!(outcome.value.len(), 2 << 20);
    assert_eq!(
        counted
            .idempotency_fallback
            .with_label_values(&["s", "o", "result_too_large"])
            .get(),
        1
    );
    let started = Instant::now();
    coordinator
        .acquire_slot("s", "o", 0, 1_000_000)
        .await
        .expect("the shared connection still answers");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    // The claim was released: a duplicate runs (a small result this time) and is stored.
    let duplicate = policy
        .execute_idempotent_with(
            &fast_options(),
            "big",
            "fp",
            || async { Ok::<_, io::Error>("small".to_string()) },
            "s",
            "o",
        )
        .await
        .expect("not left in progress");
    assert_eq!(duplicate.origin, Origin::Ran);
    // Just under the cap is stored.
    let near = "y".repeat((1 << 20) - 16);
    let stored = policy
        .execute_idempotent_with(
            &fast_options(),
            "near",
            "fp",
            || {
                let near = near.clone();
                async move { Ok::<_, io::Error>(near) }
            },
            "s",
            "o",
        )
        .await
        .unwrap();
    assert_eq!(stored.origin, Origin::Ran);
}

/// Issue 14, item 11: the lease is renewed beside the operation, never in its place. Redis is
/// frozen while the operation runs, so each renewal waits its whole store deadline (400 ms);
/// an operation of 20 steps of 5 ms must still finish in about 100 ms. With the renewal
/// awaited inside a `select!` branch (before the library split), the first renewal, 50 ms in,
/// stopped polling the operation for 400 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_renewal_does_not_pause_the_operation() {
    let server = RedisServer::spawn();
    let policy = policy(redis_store(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ));
    let options = IdempotencyOptions {
        lease: Duration::from_millis(150),
        store_deadline: Duration::from_millis(400),
        ..Default::default()
    };
    let pid = server.pid();
    let outcome = policy
        .execute_idempotent_with(
            &options,
            "renewing",
            "fp",
            || async move {
                let stopped = std::process::Command::new("kill")
                    .args(["-STOP", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(stopped.success());
                let started = Instant::now();
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, io::Error>(started.elapsed())
            },
            "s",
            "o",
        )
        .await
        .unwrap();
    server.resume();
    let took = outcome.value;
    assert!(
        took < Duration::from_millis(350),
        "the operation took {took:?}: it was not polled while a renewal waited"
    );
}
