//! `Idempotency-Key` keying the in-memory idempotency store, through `RetryLayer` and
//! `RetryMiddleware` (the scenarios are shared with the Redis run in `tests/tests`).
#![allow(clippy::unwrap_used)]

mod idempotency_scenarios;
mod tower_server;

use std::sync::Arc;

use idempotency_scenarios as scenario;
use ricochet::idempotency::{IdempotencyStore, InMemoryIdempotencyStore};

fn store() -> Arc<dyn IdempotencyStore> {
    Arc::new(InMemoryIdempotencyStore::new())
}

#[tokio::test]
async fn tower_a_duplicate_post_is_sent_once() {
    scenario::tower_duplicate_is_sent_once(store()).await;
}

#[tokio::test]
async fn tower_the_same_key_with_another_payload_is_refused() {
    scenario::tower_other_payload_is_refused(store()).await;
}

#[tokio::test]
async fn tower_concurrent_duplicates_wait_for_the_first() {
    scenario::tower_concurrent_duplicates_wait(store()).await;
}

#[tokio::test]
async fn tower_a_cancelled_request_releases_the_key() {
    scenario::tower_a_cancelled_request_releases_the_key(store()).await;
}

#[tokio::test]
async fn tower_failures_release_the_key() {
    scenario::tower_failures_release_the_key(store()).await;
}

#[tokio::test]
async fn tower_a_response_over_the_cap_is_not_stored() {
    scenario::tower_a_response_over_the_cap_is_not_stored(store()).await;
}

#[tokio::test]
async fn reqwest_duplicates_and_other_payloads() {
    scenario::reqwest_duplicates_and_other_payloads(store()).await;
}

#[tokio::test]
async fn reqwest_options_before_the_store_are_kept() {
    scenario::reqwest_options_before_the_store_are_kept(store()).await;
}

/// With recorded bodies (the default), a streaming body is read ahead for its fingerprint:
/// within the body limit it is deduplicated; over it, it is sent once, whole, and not.
#[tokio::test]
async fn tower_recorded_bodies_are_read_ahead_for_the_fingerprint() {
    use bytes::Bytes;
    use ricochet::tower::RetryLayer;
    use tower::{Layer, Service, ServiceExt};
    use tower_server::{ChannelBody, Scripted};

    let server = Scripted::start(vec![]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let policy = ricochet::RetryPolicy::new(ricochet::RetryConfig::default())
        .unwrap()
        .without_metrics();
    let mut svc = RetryLayer::new(policy, "uploads")
        .body_limit(16)
        .idempotency_store(store())
        .layer(client);
    let key = scenario::fresh_key("upload");
    let post = |chunks: &'static [&'static str]| {
        let (tx, body) = ChannelBody::new();
        for chunk in chunks {
            tx.try_send(Ok(Bytes::from_static(chunk.as_bytes())))
                .unwrap();
        }
        drop(tx);
        http::Request::post(server.url("/blobs"))
            .header("idempotency-key", key.as_str())
            .body(body)
            .unwrap()
    };
    for _ in 0..2 {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(post(&["small ", "blob"]))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.requests(), 1, "within the limit: deduplicated");
    assert_eq!(server.seen()[0].body.as_deref(), Some(&b"small blob"[..]));

    let long: &[&str] = &["a longer blob ", "than sixteen bytes"];
    for _ in 0..2 {
        let response = svc.ready().await.unwrap().call(post(long)).await.unwrap();
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "over the limit: each sent, once");
    assert_eq!(
        seen[2].body.as_deref(),
        Some(&b"a longer blob than sixteen bytes"[..]),
        "whole"
    );
}

/// A store deduplicates a keyed request; it does not make one retryable that is not: an
/// extension method (or a lowercase `post`, which is one) with a key is sent once, as without
/// a store and as through the middleware.
#[tokio::test]
async fn tower_a_keyed_request_of_a_method_that_is_never_retried_is_sent_once() {
    use bytes::Bytes;
    use http_body_util::Full;
    use ricochet::tower::RetryLayer;
    use tower::{Layer, Service, ServiceExt};
    use tower_server::{Answer, Scripted};

    for method in ["LOCK", "post"] {
        let server = Scripted::start(vec![Answer::status(503)]).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let policy = ricochet::RetryPolicy::new(ricochet::RetryConfig {
            initial_delay: 0.001,
            max_delay: 0.01,
            coordination_enabled: false,
            ..ricochet::RetryConfig::default()
        })
        .unwrap()
        .without_metrics();
        let mut svc = RetryLayer::new(policy, "dav")
            .idempotency_store(store())
            .layer(client);
        let request = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(server.url("/file"))
            .header("idempotency-key", scenario::fresh_key("lock").as_str())
            .body(Full::new(Bytes::from_static(b"owner")))
            .unwrap();
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), 503, "{method}");
        assert_eq!(server.requests(), 1, "{method}: sent once");
    }
}
