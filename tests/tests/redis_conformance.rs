//! One contract, three backends: the coordinator and idempotency conformance suites against
//! memory, a single Redis server and a three-node Redis Cluster (servers spawned by the test,
//! or `REDIS_URL` for the single server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore};
use ricochet_test_support as common;

use std::sync::Arc;

use common::conformance::{coordinator_suite, idempotency_capacity_suite, idempotency_suite};
use common::RedisCluster;
use ricochet::coordination::{Coordinator, InMemoryCoordinator};
use ricochet::idempotency::{IdempotencyStore, InMemoryIdempotencyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_coordinator_conformance() {
    coordinator_suite(Arc::new(InMemoryCoordinator::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_idempotency_conformance() {
    idempotency_suite(Arc::new(InMemoryIdempotencyStore::new())).await;
}

/// Expired claims make room in a full store (issue 14, item 10): memory with a cap of 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_idempotency_capacity_conformance() {
    idempotency_capacity_suite(Arc::new(InMemoryIdempotencyStore::with_max_records(64)), 64).await;
}

/// The same case on Redis, which has no cap and must answer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_idempotency_capacity_conformance() {
    let (settings, _server) = common::single();
    let store = RedisIdempotencyStore::new(RedisConnection::open(&settings).unwrap());
    idempotency_capacity_suite(Arc::new(store), 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_coordinator_conformance() {
    let (settings, _server) = common::single();
    let coordinator = RedisCoordinator::new(RedisConnection::open(&settings).unwrap());
    assert_eq!(coordinator.name(), "redis");
    coordinator_suite(Arc::new(coordinator)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis_idempotency_conformance() {
    let (settings, _server) = common::single();
    let store = RedisIdempotencyStore::new(RedisConnection::open(&settings).unwrap());
    assert_eq!(store.name(), "redis");
    idempotency_suite(Arc::new(store)).await;
}

/// Both suites on one cluster (starting a cluster costs about a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_conformance() {
    let cluster = RedisCluster::spawn();
    let connection = RedisConnection::open(&cluster.settings()).unwrap();
    let coordinator = RedisCoordinator::new(connection.clone());
    assert_eq!(coordinator.name(), "redis-cluster");
    coordinator_suite(Arc::new(coordinator)).await;
    let store = Arc::new(RedisIdempotencyStore::new(connection));
    assert_eq!(store.name(), "redis-cluster");
    idempotency_suite(store.clone()).await;
    idempotency_capacity_suite(store, 64).await;

    // Each operation's slot counters live on one node (the hash tag), and the operations of
    // the suite spread over more than one node.
    let mut nodes_with_slot_keys = 0;
    for node in &cluster.nodes {
        let keys = node.cli(&["--scan", "--pattern", "ricochet-test-*:slot:*"]);
        let mut tags: Vec<&str> = keys
            .lines()
            .filter_map(|k| k.split(['{', '}']).nth(1))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        for tag in &tags {
            for other in cluster.nodes.iter().filter(|n| n.port != node.port) {
                let elsewhere = other.cli(&["--scan", "--pattern", &format!("*{{{tag}}}*")]);
                assert!(elsewhere.trim().is_empty(), "{tag} split across nodes");
            }
        }
        if !tags.is_empty() {
            nodes_with_slot_keys += 1;
        }
    }
    assert!(
        nodes_with_slot_keys >= 2,
        "slot keys on {nodes_with_slot_keys} node(s) only"
    );
}
