//! `RetryMiddleware` on a real reqwest client against a real hyper server on loopback.
#![allow(clippy::unwrap_used)]

#[path = "tower_server/mod.rs"]
mod tower_server;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use ricochet::http::CallError;
use ricochet::reqwest::RetryMiddleware;
use ricochet::{RetryConfig, RetryPolicy};
use tower_server::{closed_port, http_date, Answer, ChannelBody, Scripted};

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

fn client(middleware: RetryMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

#[tokio::test]
async fn a_503_then_200_is_retried() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let client = client(RetryMiddleware::new(policy(), "orders"));
    let response = client.get(server.url("/a")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "answer 2");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn retry_after_in_seconds_and_as_a_date_is_honoured() {
    let in_two_seconds = || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Two whole seconds ahead: at least one second from now, whatever the phase.
        http_date(now + 2)
    };
    let seconds: fn() -> String = || "1".to_string();
    for make in [seconds, in_two_seconds] {
        // Made just before the call: the date is relative to now.
        let value = make();
        let server = Scripted::start(vec![Answer::status(429).header("retry-after", &value)]).await;
        let client = client(RetryMiddleware::new(policy(), "orders"));
        let started = Instant::now();
        let response = client.get(server.url("/a")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{value}");
        assert_eq!(server.requests(), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{value}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_400_is_not_retried_and_comes_back_as_a_response() {
    let server = Scripted::start(vec![Answer::status(400)]).await;
    let client = client(RetryMiddleware::new(policy(), "orders"));
    let response = client.get(server.url("/a")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let server = Scripted::start(vec![Answer::status(503), Answer::status(503)]).await;
    let client = client(RetryMiddleware::new(policy(), "payments"));
    let response = client
        .post(server.url("/charge"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.requests(), 1);
    let response = client
        .post(server.url("/charge"))
        .header("idempotency-key", "k-1")
        .body("{\"amount\":5}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[1..]
        .iter()
        .all(|s| s.body.as_deref() == Some(&b"{\"amount\":5}"[..])));
}

#[tokio::test]
async fn a_streaming_body_over_the_limit_is_sent_once_and_whole() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let client = client(RetryMiddleware::new(policy(), "uploads").body_limit(1024));
    let (tx, body) = ChannelBody::new();
    tokio::spawn(async move {
        for _ in 0..4 {
            tx.send(Ok(Bytes::from(vec![b'q'; 1000]))).await.unwrap();
        }
    });
    let response = client
        .put(server.url("/blob"))
        .body(reqwest::Body::wrap(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref().map(Vec::len),
        Some(4000),
        "never truncated"
    );
}

#[tokio::test]
async fn a_streaming_body_within_the_limit_is_sent_again_whole() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let client = client(RetryMiddleware::new(policy(), "uploads"));
    let (tx, body) = ChannelBody::new();
    tokio::spawn(async move {
        for chunk in ["a", "b", "c"] {
            tx.send(Ok(Bytes::from(chunk))).await.unwrap();
        }
    });
    let response = client
        .put(server.url("/blob"))
        .body(reqwest::Body::wrap(body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body.as_deref() == Some(&b"abc"[..])));
}

#[tokio::test]
async fn a_bytes_body_over_the_limit_is_cloned_and_retried() {
    // reqwest can clone an in-memory body: no recording, no limit.
    let big = vec![b'r'; 100 * 1024];
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let client = client(RetryMiddleware::new(policy(), "uploads"));
    let response = client
        .put(server.url("/blob"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(server
        .seen()
        .iter()
        .all(|s| s.body.as_deref() == Some(&big[..])));
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_the_retry_answers() {
    let server = Scripted::start(vec![Answer::status(200).after(Duration::from_secs(20))]).await;
    let client = client(
        RetryMiddleware::new(policy(), "orders").attempt_timeout(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let response = client.get(server.url("/a")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "answer 2");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn when_every_attempt_times_out_the_error_is_a_timeout() {
    let hang = Answer::status(200).after(Duration::from_secs(20));
    let server = Scripted::start(vec![hang; 4]).await;
    let client = client(
        RetryMiddleware::new(policy(), "orders").attempt_timeout(Duration::from_millis(100)),
    );
    let error = client.get(server.url("/a")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &error else {
        panic!("expected a middleware error, got {error}");
    };
    assert!(
        matches!(
            inner.downcast_ref::<CallError<std::convert::Infallible>>(),
            Some(CallError::TimedOut(_))
        ),
        "{inner}"
    );
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_reqwests_error_returned() {
    let addr = closed_port().await;
    let retries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = retries.clone();
    let policy = policy().with_notify(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let client = client(RetryMiddleware::new(policy, "orders"));
    let error = client
        .get(format!("http://{addr}/a"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error}");
    assert_eq!(
        retries.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "a ConnectionError"
    );
}
