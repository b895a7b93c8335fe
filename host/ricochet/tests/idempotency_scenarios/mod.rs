//! `Idempotency-Key` keying an idempotency store, through `RetryLayer` on a hyper client and
//! through `RetryMiddleware` on reqwest, against a real hyper server on loopback that counts
//! what reaches it. Each scenario takes the store, so the same ones run in memory (here) and
//! on a real `redis-server` (`tests/tests/http_idempotency_redis.rs`).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ricochet::http::{CallError, IdempotencyRefusal};
use ricochet::idempotency::{IdempotencyOptions, IdempotencyStore};
use ricochet::reqwest::RetryMiddleware;
use ricochet::tower::RetryLayer;
use ricochet::{RetryConfig, RetryPolicy};
use tower::{Layer, Service, ServiceExt};

use crate::tower_server::{Answer, Scripted};

/// A key no other test (or earlier run against the same Redis) used.
pub fn fresh_key(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig {
        max_attempts: 4,
        initial_delay: 0.001,
        max_delay: 0.01,
        coordination_enabled: false,
        ..RetryConfig::default()
    })
    .unwrap()
    .with_seed(11)
    .without_metrics()
}

type Hyper = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn layered(
    store: Arc<dyn IdempotencyStore>,
) -> ricochet::tower::RetryService<Hyper, ricochet::tower::CloneBodies, ricochet::tower::WithStore>
{
    let client: Hyper = Client::builder(TokioExecutor::new()).build_http();
    RetryLayer::new(policy(), "payments")
        .clone_bodies()
        .idempotency_store(store)
        .layer(client)
}

fn charge(server: &Scripted, key: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(server.url("/v1/charges"))
        .header("idempotency-key", key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn text<B: http_body::Body>(body: B) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// A duplicate POST with the same key and body gets the stored response; the server sees one.
pub async fn tower_duplicate_is_sent_once(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![Answer::status(201).header("x-charge", "ch_1")]).await;
    let mut svc = layered(store);
    let key = fresh_key("charge");
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=1250"))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(text(first.into_body()).await, "answer 1");
    for _ in 0..3 {
        let again = svc
            .ready()
            .await
            .unwrap()
            .call(charge(&server, &key, "amount=1250"))
            .await
            .unwrap();
        assert_eq!(again.status(), 201, "the stored status");
        assert_eq!(again.headers()["x-charge"], "ch_1", "the stored headers");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(text(again.into_body()).await, "answer 1", "the stored body");
    }
    assert_eq!(server.requests(), 1, "duplicates never reached the server");
}

/// The same key with another body (or URI) is an error that names the key; nothing is sent.
pub async fn tower_other_payload_is_refused(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![]).await;
    let mut svc = layered(store);
    let key = fresh_key("charge");
    svc.ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=1250"))
        .await
        .unwrap();
    let other = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=9999"))
        .await;
    match other {
        Err(CallError::Idempotency(IdempotencyRefusal::KeyReused { key: named })) => {
            assert_eq!(named, key)
        }
        other => panic!("expected KeyReused, got {other:?}"),
    }
    let message = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=9999"))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains(&key), "{message}");
    let elsewhere = Request::post(server.url("/v1/refunds"))
        .header("idempotency-key", key.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"amount=1250")))
        .unwrap();
    let result = svc.ready().await.unwrap().call(elsewhere).await;
    assert!(
        matches!(
            result,
            Err(CallError::Idempotency(IdempotencyRefusal::KeyReused { .. }))
        ),
        "another URI: {result:?}"
    );
    assert_eq!(server.requests(), 1);
}

/// Duplicates that arrive while the first is running wait for it and get its response; with
/// no wait allowed they are refused as in progress.
pub async fn tower_concurrent_duplicates_wait(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![Answer::status(200).after(Duration::from_millis(300))]).await;
    let svc = layered(store.clone());
    let key = fresh_key("charge");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (mut svc, request) = (svc.clone(), charge(&server, &key, "amount=5"));
            tokio::spawn(async move {
                let response = svc.ready().await.unwrap().call(request).await.unwrap();
                text(response.into_body()).await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "answer 1");
    }
    assert_eq!(server.requests(), 1, "eight callers, one request");

    // No waiting: a duplicate of a running request is refused.
    let slow = Scripted::start(vec![Answer::status(200).after(Duration::from_millis(500))]).await;
    let client: Hyper = Client::builder(TokioExecutor::new()).build_http();
    let impatient = RetryLayer::new(policy(), "payments")
        .clone_bodies()
        .idempotency_store(store)
        .idempotency_options(IdempotencyOptions {
            wait: Duration::ZERO,
            ..IdempotencyOptions::default()
        })
        .layer(client);
    let key = fresh_key("charge");
    let mut first = impatient.clone();
    let request = charge(&slow, &key, "amount=5");
    let running = tokio::spawn(async move { first.ready().await.unwrap().call(request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = impatient.clone();
    let refused = second
        .ready()
        .await
        .unwrap()
        .call(charge(&slow, &key, "amount=5"))
        .await;
    match refused {
        Err(CallError::Idempotency(IdempotencyRefusal::InProgress { key: named })) => {
            assert_eq!(named, key)
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    assert_eq!(slow.requests(), 1);
}

/// A request dropped while it holds the key (its caller's timeout) releases it: a duplicate
/// right after is sent, not refused as in progress for the whole 30 s lease.
pub async fn tower_a_cancelled_request_releases_the_key(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![
        Answer::status(200).after(Duration::from_secs(3)),
        Answer::status(200),
    ])
    .await;
    let client: Hyper = Client::builder(TokioExecutor::new()).build_http();
    let impatient = RetryLayer::new(policy(), "payments")
        .clone_bodies()
        .idempotency_store(store)
        .idempotency_options(IdempotencyOptions {
            wait: Duration::ZERO,
            ..IdempotencyOptions::default()
        })
        .layer(client);
    let key = fresh_key("charge");
    let mut first = impatient.clone();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        first
            .ready()
            .await
            .unwrap()
            .call(charge(&server, &key, "amount=5")),
    )
    .await;
    assert!(cancelled.is_err(), "the first request was still running");
    // The release goes out from a task of its own.
    let mut answer = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut second = impatient.clone();
        match second
            .ready()
            .await
            .unwrap()
            .call(charge(&server, &key, "amount=5"))
            .await
        {
            Err(CallError::Idempotency(IdempotencyRefusal::InProgress { .. })) => continue,
            other => {
                answer = Some(other);
                break;
            }
        }
    }
    let answer = answer.expect("the key was still in progress 1 s after its request was dropped");
    assert_eq!(answer.unwrap().status(), 200);
    assert_eq!(server.requests(), 2);
}

/// A failure releases the key: the next request with it is sent. A retried success is stored.
pub async fn tower_failures_release_the_key(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![
        Answer::status(400),
        Answer::status(503),
        Answer::status(200),
    ])
    .await;
    let mut svc = layered(store);
    let key = fresh_key("charge");
    let rejected = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=1"))
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400, "not retried, not stored");
    let retried = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=1"))
        .await
        .unwrap();
    assert_eq!(
        retried.status(),
        200,
        "503 retried (the key makes a POST retryable)"
    );
    assert_eq!(server.requests(), 3);
    let replayed = svc
        .ready()
        .await
        .unwrap()
        .call(charge(&server, &key, "amount=1"))
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(text(replayed.into_body()).await, "answer 3");
    assert_eq!(server.requests(), 3);
}

/// A response larger than the stored-response cap is returned whole but not stored.
pub async fn tower_a_response_over_the_cap_is_not_stored(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![]).await;
    let client: Hyper = Client::builder(TokioExecutor::new()).build_http();
    let mut svc = RetryLayer::new(policy(), "payments")
        .clone_bodies()
        .idempotency_store(store)
        .max_stored_response(16)
        .layer(client);
    let key = fresh_key("charge");
    for n in 1..=2 {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(charge(&server, &key, "amount=1"))
            .await
            .unwrap();
        assert!(response.headers().get("idempotent-replayed").is_none());
        assert_eq!(text(response.into_body()).await, format!("answer {n}"));
    }
    assert_eq!(server.requests(), 2, "nothing stored: the second was sent");
}

/// The middleware's store options are kept whichever comes first, the options or the store: a
/// cap given before the store still keeps a larger response out of it (it was dropped before).
pub async fn reqwest_options_before_the_store_are_kept(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![]).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            RetryMiddleware::new(policy(), "payments")
                .max_stored_response(16)
                .idempotency_store(store),
        )
        .build();
    let key = fresh_key("charge");
    let url = server.url("/v1/charges");
    for n in 1..=2 {
        let response = client
            .post(&url)
            .header("idempotency-key", key.as_str())
            .body("amount=1")
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("idempotent-replayed").is_none());
        assert_eq!(response.text().await.unwrap(), format!("answer {n}"));
    }
    assert_eq!(server.requests(), 2, "nothing stored: the second was sent");
}

fn reqwest_client(store: Arc<dyn IdempotencyStore>) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryMiddleware::new(policy(), "payments").idempotency_store(store))
        .build()
}

/// Through reqwest-middleware: duplicates get the stored response, another payload is refused
/// with the key named.
pub async fn reqwest_duplicates_and_other_payloads(store: Arc<dyn IdempotencyStore>) {
    let server = Scripted::start(vec![Answer::status(503), Answer::status(201)]).await;
    let client = reqwest_client(store);
    let key = fresh_key("charge");
    let url = server.url("/v1/charges");
    let send = |body: &'static str| {
        client
            .post(&url)
            .header("idempotency-key", key.as_str())
            .body(body)
            .send()
    };
    let first = send("amount=1250").await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(first.url().as_str(), url);
    assert_eq!(first.text().await.unwrap(), "answer 2");
    for _ in 0..3 {
        let again = send("amount=1250").await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.url().as_str(), url, "the URL is kept");
        assert_eq!(again.text().await.unwrap(), "answer 2");
    }
    assert_eq!(
        server.requests(),
        2,
        "the 503 and the 201; no duplicate sent"
    );
    let error = send("amount=9999").await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&key), "{message}");
    let refusal = match &error {
        reqwest_middleware::Error::Middleware(e) => e
            .downcast_ref::<CallError<std::convert::Infallible>>()
            .cloned_refusal(),
        _ => None,
    };
    assert!(
        matches!(refusal, Some(IdempotencyRefusal::KeyReused { .. })),
        "{error:?}"
    );
    assert_eq!(server.requests(), 2);
}

trait RefusalOf {
    fn cloned_refusal(self) -> Option<IdempotencyRefusal>;
}

impl RefusalOf for Option<&CallError<std::convert::Infallible>> {
    fn cloned_refusal(self) -> Option<IdempotencyRefusal> {
        match self {
            Some(CallError::Idempotency(refusal)) => Some(refusal.clone()),
            _ => None,
        }
    }
}
