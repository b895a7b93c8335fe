//! `Idempotency-Key` keying a `RedisIdempotencyStore` on a spawned `redis-server` (and on the
//! 3-node cluster fixture), through `RetryLayer` and `RetryMiddleware`: the scenarios of
//! `host/ricochet/tests/http_idempotency.rs`, against a real hyper server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../host/ricochet/tests/idempotency_scenarios/mod.rs"]
mod idempotency_scenarios;
#[path = "../../host/ricochet/tests/tower_server/mod.rs"]
mod tower_server;

use std::sync::Arc;

use idempotency_scenarios as scenario;
use ricochet::idempotency::IdempotencyStore;
use ricochet::redis::{RedisConnection, RedisIdempotencyStore, RedisSettings};
use ricochet_test_support::{single, RedisCluster};

fn store(settings: &RedisSettings) -> Arc<dyn IdempotencyStore> {
    Arc::new(RedisIdempotencyStore::new(
        RedisConnection::open(settings).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_duplicates_reach_the_server_once() {
    let (settings, _server) = single();
    scenario::tower_duplicate_is_sent_once(store(&settings)).await;
    scenario::tower_concurrent_duplicates_wait(store(&settings)).await;
    scenario::tower_failures_release_the_key(store(&settings)).await;
    scenario::tower_a_cancelled_request_releases_the_key(store(&settings)).await;
    scenario::reqwest_duplicates_and_other_payloads(store(&settings)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_another_payload_is_refused_naming_the_key() {
    let (settings, _server) = single();
    scenario::tower_other_payload_is_refused(store(&settings)).await;
    scenario::tower_a_response_over_the_cap_is_not_stored(store(&settings)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_duplicates_reach_the_server_once() {
    let cluster = RedisCluster::spawn();
    scenario::tower_duplicate_is_sent_once(store(&cluster.settings())).await;
    scenario::reqwest_duplicates_and_other_payloads(store(&cluster.settings())).await;
}
