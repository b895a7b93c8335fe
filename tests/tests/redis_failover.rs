//! Issue 14, item 12: a Redis Cluster master dies (SIGKILL) in the middle of idempotent calls,
//! on a cluster of 3 masters and 3 replicas with `--cluster-node-timeout 2000`.
//!
//! Found with `ricochet demo --clients 100 --duration 12s --redis cluster:…` killing the master
//! that held the demo's keys at 4 s: the run took 38 s. A holder whose `complete` met the dead
//! master returned (`Unrecorded`), but its claim — replicated before the master died — stayed
//! in progress on the promoted replica for the whole 30 s lease, and every duplicate waited for
//! it. Now the holder keeps sending its `complete` from a task of its own until the store
//! answers, so the duplicate gets the result soon after the failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet::coordination::{schedule_retry, Scheduled, DEFAULT_COORDINATION_DEADLINE};
use ricochet::idempotency::{IdempotencyOptions, IdempotencyStore, Origin};
use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore};
use ricochet::{RetryConfig, RetryPolicy};
use ricochet_test_support::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_call_stalls_neither_the_calls_nor_their_duplicates() {
    let mut cluster = RedisCluster::spawn_with(1, 2000);
    let connection = RedisConnection::open(&cluster.settings()).unwrap();
    let coordinator = Arc::new(RedisCoordinator::new(connection.clone()));
    let store = Arc::new(RedisIdempotencyStore::new(connection));
    let policy = Arc::new(
        RetryPolicy::new(RetryConfig::DEFAULT)
            .unwrap()
            .with_coordinator(coordinator.clone())
            .with_idempotency_store(store.clone())
            .without_metrics(),
    );
    let options = IdempotencyOptions::default(); // 30 s lease, 30 s wait, 100 ms store deadline
    let record_key = store.record_key("orders\u{1f}submit\u{1f}order-1");
    let victim = cluster.master_of(&record_key);

    // The holder: claims the key, and its operation runs while the master dies.
    let holder = {
        let (policy, options) = (policy.clone(), options.clone());
        tokio::spawn(async move {
            policy
                .execute_idempotent_with(
                    &options,
                    "order-1",
                    "fp",
                    || async {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        Ok::<_, io::Error>(42u32)
                    },
                    "orders",
                    "submit",
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A duplicate arrives while the holder runs, and waits for it.
    let started = Instant::now();
    let duplicate = {
        let (policy, options) = (policy.clone(), options.clone());
        tokio::spawn(async move {
            policy
                .execute_idempotent_with(
                    &options,
                    "order-1",
                    "fp",
                    || async { Ok::<_, io::Error>(7u32) },
                    "orders",
                    "submit",
                )
                .await
        })
    };
    // The premise: the holder's claim reached the replica before its master died (on a loaded
    // machine it may still be on its way after 500 ms, and then the promoted replica has no
    // claim at all — another test).
    wait_replicated(&cluster, victim);
    cluster.nodes[victim].kill9();

    // Meanwhile coordination keeps its deadline on every call (a fallback while it fails over).
    let config = RetryConfig::DEFAULT.validate().unwrap();
    let mut worst = Duration::ZERO;
    for seed in 0..40 {
        let call = Instant::now();
        let s = schedule_retry(
            coordinator.as_ref(),
            &config,
            seed,
            1,
            0,
            "orders",
            "submit",
            DEFAULT_COORDINATION_DEADLINE,
            None,
        )
        .await;
        worst = worst.max(call.elapsed());
        assert!(matches!(s, Scheduled::FireIn { .. }), "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < DEFAULT_COORDINATION_DEADLINE + Duration::from_millis(100),
        "a coordination took {worst:?}"
    );

    let held = holder
        .await
        .unwrap()
        .expect("the holder's own call succeeds");
    assert_eq!(held.value, 42);
    // A duplicate during the failover is not held up either: the store is unreachable for it,
    // so it runs unguarded (or replays, if the failover was already over).
    let during = duplicate
        .await
        .unwrap()
        .expect("the duplicate gets an answer");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the duplicate during the failover took {:?}",
        started.elapsed()
    );

    // Once the replica is promoted (the key's slot answers again: in progress or completed), a
    // duplicate finds the holder's result. Before the fix it found the claim still in progress
    // and waited out the 30 s lease, then ran again.
    let promoted = Instant::now();
    loop {
        let probe = tokio::time::timeout(
            Duration::from_millis(200),
            store.begin("orders\u{1f}submit\u{1f}order-1", "fp", 1000),
        )
        .await;
        if matches!(probe, Ok(Ok(_))) {
            break;
        }

        assert!(
            promoted.elapsed() < Duration::from_secs(20),
            "the cluster did not fail over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = Instant::now();
    let late = policy
        .execute_idempotent_with(
            &options,
            "order-1",
            "fp",
            || async { Ok::<_, io::Error>(8u32) },
            "orders",
            "submit",
        )
        .await
        .expect("the late duplicate gets an answer");
    let waited = after.elapsed();
    println!(
        "holder {:?}; duplicate during the failover {:?} ({}); after it {:?} ({}) in {waited:?}",
        held.origin, during.origin, during.value, late.origin, late.value
    );
    assert!(
        waited < Duration::from_secs(5),
        "the duplicate after the failover waited {waited:?} (lease 30 s)"
    );
    assert_eq!(
        (late.value, late.origin),
        (42, Origin::Replayed),
        "the holder's result reached the promoted replica"
    );

    // And nothing is left that holds the program up: the handles go, within a bound.
    let dropping = Instant::now();
    drop((policy, coordinator, store));
    assert!(dropping.elapsed() < Duration::from_secs(1));
}

/// Waits until every replica of node `master` has processed all of its replication stream, as
/// the replicas themselves report it (the master hears their offsets only once a second).
fn wait_replicated(cluster: &RedisCluster, master: usize) {
    let number = |info: &str, field: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = cluster.nodes[master].cli(&["INFO", "replication"]);
        let sent = number(&info, "master_repl_offset:").expect("a master's offset");
        let replicas: Vec<u16> = info
            .lines()
            .filter(|line| line.starts_with("slave") && line.contains("port="))
            .filter_map(|line| line.split(',').find_map(|kv| kv.strip_prefix("port=")))
            .filter_map(|port| port.parse().ok())
            .collect();
        let caught_up = !replicas.is_empty()
            && replicas.iter().all(|port| {
                cluster
                    .nodes
                    .iter()
                    .find(|n| n.port == *port)
                    .is_some_and(|n| {
                        let info = n.cli(&["INFO", "replication"]);
                        number(&info, "slave_repl_offset:").is_some_and(|done| done >= sent)
                    })
            });
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas of node {master} never caught up: {info}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
