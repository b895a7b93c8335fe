//! `RetryLayer` on a real hyper client against a real hyper server on loopback.
#![allow(clippy::unwrap_used)]

mod tower_server;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ricochet::http::{CallError, ReplayBody};
use ricochet::metrics::RetryMetrics;
use ricochet::tower::RetryLayer;
use ricochet::{RetryConfig, RetryPolicy};
use tower::{Layer, Service, ServiceExt};
use tower_server::{closed_port, http_date, Answer, ChannelBody, Scripted};

/// Quick retries, no coordination (no slot waits), 4 attempts.
fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        initial_delay: 0.001,
        max_delay: 0.01,
        coordination_enabled: false,
        ..RetryConfig::default()
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::new(config())
        .unwrap()
        .with_seed(7)
        .without_metrics()
}

fn client<B>() -> Client<HttpConnector, ReplayBody<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

async fn body_text(response: http::Response<hyper::body::Incoming>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_503_then_200_is_retried_and_the_200_returned() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_text(response).await, "answer 2");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn when_retries_run_out_the_last_response_is_returned() {
    let server = Scripted::start(vec![Answer::status(503); 4]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        body_text(response).await,
        "answer 4",
        "the last attempt's response"
    );
    assert_eq!(server.requests(), 4, "max_attempts calls");
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_waits_what_the_server_asked() {
    let server = Scripted::start(vec![Answer::status(429).header("retry-after", "1")]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let started = Instant::now();
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.requests(), 2);
    // The policy's own delay is at most 10 ms: only the server's second explains this.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_429_with_an_http_date_waits_until_that_date() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Two whole seconds ahead: at least one second from now, whatever the sub-second phase.
    let date = http_date(now + 2);
    let server = Scripted::start(vec![Answer::status(429).header("Retry-After", &date)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let started = Instant::now();
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_gives_up_at_once_with_the_429() {
    // 300 digits are delay-seconds too, however long: the server asked for forever.
    let long = "1".repeat(300);
    for huge in ["3600", "99999999999999999999999999", long.as_str()] {
        let server = Scripted::start(vec![Answer::status(429).header("retry-after", huge)]).await;
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let started = Instant::now();
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/a")))
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{huge}");
        assert_eq!(server.requests(), 1, "{huge}: max_retry_after is 60 s");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it did not sleep"
        );
    }
}

#[tokio::test]
async fn http_dates_in_the_past_the_far_future_or_malformed() {
    // A date gone by asks for no wait; one in year 9999 is past any cap (give up with the 429);
    // an hour of 25 is no date (the policy's backoff). None may sleep.
    for (date, status, requests) in [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 200, 2),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 429, 1),
        ("Sun, 06 Nov 1994 25:49:37 GMT", 200, 2),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 200, 2),
    ] {
        let server = Scripted::start(vec![Answer::status(429).header("retry-after", date)]).await;
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let started = Instant::now();
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/a")))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{date}");
        assert_eq!(server.requests(), requests, "{date}");
        assert!(started.elapsed() < Duration::from_secs(5), "{date}");
    }
}

#[tokio::test]
async fn hostile_delay_headers_count_as_absent() {
    // Not UTF-8, negative, a fraction, 300 bytes of a date: the policy's own backoff applies.
    let long = format!("{} {}", "Sun,".repeat(74), "GMT");
    let hostile: [&[u8]; 4] = [b"\xff\xfe1", b"-5", b"1.5", long.as_bytes()];
    for value in hostile {
        let server = Scripted::start(vec![
            Answer::status(429).header("retry-after", value),
            Answer::status(503)
                .header("ratelimit", value)
                .header("x-ratelimit-reset", value),
        ])
        .await;
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let started = Instant::now();
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/a")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value:?}");
        assert_eq!(server.requests(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no server delay was taken"
        );
    }
}

#[tokio::test]
async fn repeated_delay_header_lines_are_all_read() {
    // Two `Retry-After` lines that disagree: the longer one holds (a retry never comes sooner
    // than the server asked). `RateLimit` lines are one list (RFC 9110 §5.3): the second
    // line's exhausted quota, whose window resets in a second, holds too.
    let answers = [
        Answer::status(429)
            .header("retry-after", "0")
            .header("retry-after", "1"),
        Answer::status(429)
            .header("ratelimit", "\"burst\";r=5;t=0")
            .header("ratelimit", "\"day\";r=0;t=1"),
    ];
    for answer in answers {
        let server = Scripted::start(vec![answer.clone()]).await;
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let started = Instant::now();
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/a")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(server.requests(), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}: retried after {:?}",
            answer.headers,
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn the_other_names_of_the_reset_headers_are_read() {
    // The earlier drafts' `RateLimit-Reset` and Twitter's `X-Rate-Limit-Reset`: the core reads
    // both, and an Envoy import counts on `RateLimit-Reset` being honoured.
    for name in ["ratelimit-reset", "x-rate-limit-reset"] {
        let server = Scripted::start(vec![Answer::status(429).header(name, "1")]).await;
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let started = Instant::now();
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/a")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(server.requests(), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{name}: retried after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let server = Scripted::start(vec![Answer::status(400)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let server = Scripted::start(vec![Answer::status(503), Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let post = Request::post(server.url("/charge"))
        .body(Full::new(Bytes::from_static(b"{\"amount\":5}")))
        .unwrap();
    let response = svc.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(response.status(), 503, "no key: sent once");
    assert_eq!(server.requests(), 1);

    let keyed = Request::post(server.url("/charge"))
        .header("Idempotency-Key", "order-7")
        .body(Full::new(Bytes::from_static(b"{\"amount\":5}")))
        .unwrap();
    let response = svc.ready().await.unwrap().call(keyed).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "with a key: 503, then 200");
    for s in &seen[1..] {
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.body.as_deref(),
            Some(&b"{\"amount\":5}"[..]),
            "the whole body each time"
        );
        assert_eq!(s.headers["idempotency-key"], "order-7");
    }
}

#[tokio::test]
async fn a_key_that_is_not_one_visible_ascii_value_or_a_lowercase_method_is_not_retried() {
    // An Idempotency-Key of obs-text bytes is no key (the store ignores it, and a server that
    // reads it as a Structured Field string refuses it): the POST goes once. Methods are
    // case-sensitive: `get` is an extension method, not GET.
    let hostile_key = Request::post("/")
        .header(
            "idempotency-key",
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(Full::new(Bytes::from_static(b"amount=5")))
        .unwrap();
    // Two keys are no key: a server that reads the field as a Structured Field item ignores
    // it, so it would not deduplicate a retry either.
    let two_keys = Request::post("/")
        .header("idempotency-key", "order-7")
        .header("idempotency-key", "order-8")
        .body(Full::new(Bytes::from_static(b"amount=5")))
        .unwrap();
    let lowercase = Request::builder()
        .method(http::Method::from_bytes(b"get").unwrap())
        .uri("/")
        .body(Full::default())
        .unwrap();
    for request in [hostile_key, two_keys, lowercase] {
        let server = Scripted::start(vec![Answer::status(503)]).await;
        let (mut parts, body) = request.into_parts();
        parts.uri = server.url("/charge").parse().unwrap();
        let method = parts.method.clone();
        let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(Request::from_parts(parts, body))
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{method}");
        assert_eq!(server.requests(), 1, "{method}: sent once");
    }
}

#[tokio::test]
async fn an_opt_in_retries_posts_without_a_key_and_patch_follows_post() {
    let server = Scripted::start(vec![Answer::status(503), Answer::status(503)]).await;
    let mut plain = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let patch = Request::patch(server.url("/x"))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        plain
            .ready()
            .await
            .unwrap()
            .call(patch)
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(server.requests(), 1, "PATCH without a key: once");
    let mut opted = RetryLayer::new(policy(), "orders")
        .retry_non_idempotent()
        .layer(client::<Full<Bytes>>());
    let post = Request::post(server.url("/x"))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        opted
            .ready()
            .await
            .unwrap()
            .call(post)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_body_over_the_limit_is_sent_once_and_whole() {
    let big = vec![b'x'; 100 * 1024];
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "uploads").layer(client::<Full<Bytes>>());
    let put = Request::put(server.url("/blob"))
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(
        response.status(),
        503,
        "not retried: the body is over 64 KiB"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref().map(Vec::len),
        Some(big.len()),
        "never truncated"
    );

    // The same body within a raised limit is retried whole.
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "uploads")
        .body_limit(200 * 1024)
        .layer(client::<Full<Bytes>>());
    let put = Request::put(server.url("/blob"))
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    assert_eq!(
        svc.ready().await.unwrap().call(put).await.unwrap().status(),
        200
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body.as_deref() == Some(&big[..])));
}

#[tokio::test]
async fn clone_bodies_keeps_the_request_type_and_retries_any_size() {
    let big = Bytes::from(vec![b'y'; 100 * 1024]);
    let server = Scripted::start(vec![Answer::status(502)]).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut svc = RetryLayer::new(policy(), "uploads")
        .clone_bodies()
        .layer(client);
    let put = Request::put(server.url("/blob"))
        .body(Full::new(big.clone()))
        .unwrap();
    assert_eq!(
        svc.ready().await.unwrap().call(put).await.unwrap().status(),
        200
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body.as_deref() == Some(&big[..])));
}

#[tokio::test]
async fn a_streaming_body_that_ended_within_the_limit_is_sent_again_whole() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "events").layer(client::<ChannelBody>());
    let (tx, body) = ChannelBody::new();
    tokio::spawn(async move {
        for chunk in ["one ", "two ", "three"] {
            tx.send(Ok(Bytes::from(chunk))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let put = Request::put(server.url("/events")).body(body).unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.body.as_deref() == Some(&b"one two three"[..])));
}

/// A body of one data frame, then trailers.
struct WithTrailers(Option<Frame<Bytes>>, Option<Frame<Bytes>>);

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let next = self.0.take().or_else(|| self.1.take());
        std::task::Poll::Ready(next.map(Ok))
    }
}

#[tokio::test]
async fn bodies_at_the_limit_are_kept_and_one_byte_more_is_sent_once() {
    const LIMIT: usize = 16;
    for (len, streamed, sent) in [
        (LIMIT, false, 2),
        (LIMIT + 1, false, 1),
        (LIMIT, true, 2),
        (LIMIT + 1, true, 1),
        (0, true, 2),
    ] {
        let server = Scripted::start(vec![Answer::status(503)]).await;
        let mut svc = RetryLayer::new(policy(), "uploads")
            .body_limit(LIMIT)
            .layer(client::<http_body_util::Either<Full<Bytes>, ChannelBody>>());
        let bytes = vec![b'b'; len];
        let body = if streamed {
            let (tx, body) = ChannelBody::new();
            for chunk in bytes.chunks(5) {
                tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
            }
            http_body_util::Either::Right(body)
        } else {
            http_body_util::Either::Left(Full::new(Bytes::from(bytes.clone())))
        };
        let put = Request::put(server.url("/blob")).body(body).unwrap();
        svc.ready().await.unwrap().call(put).await.unwrap();
        let seen = server.seen();
        assert_eq!(seen.len(), sent, "{len} bytes, streamed: {streamed}");
        assert!(
            seen.iter().all(|s| s.body.as_deref() == Some(&bytes[..])),
            "{len} bytes: whole every time"
        );
    }

    // Trailers end a body as well: it is kept, and sent again whole.
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "uploads").layer(client::<WithTrailers>());
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let body = WithTrailers(
        Some(Frame::data(Bytes::from_static(b"payload"))),
        Some(Frame::trailers(trailers)),
    );
    let put = Request::put(server.url("/blob"))
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.body.as_deref() == Some(&b"payload"[..])));
}

#[tokio::test]
async fn a_streaming_body_over_the_limit_is_sent_once_and_whole() {
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "events")
        .body_limit(1024)
        .layer(client::<ChannelBody>());
    let (tx, body) = ChannelBody::new();
    tokio::spawn(async move {
        for _ in 0..8 {
            tx.send(Ok(Bytes::from(vec![b'z'; 512]))).await.unwrap();
        }
    });
    let put = Request::put(server.url("/events")).body(body).unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(response.status(), 503);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref().map(Vec::len),
        Some(4096),
        "all 8 chunks arrived"
    );
}

#[tokio::test]
async fn a_streaming_body_still_being_sent_when_the_answer_came_is_not_replayed() {
    // The server answers 503 at once without reading; the client still holds the stream open.
    let server = Scripted::start(vec![Answer::status(503).without_reading_body()]).await;
    let mut svc = RetryLayer::new(policy(), "events").layer(client::<ChannelBody>());
    let (tx, body) = ChannelBody::new();
    tx.send(Ok(Bytes::from_static(b"first part")))
        .await
        .unwrap();
    let put = Request::put(server.url("/events")).body(body).unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(response.status(), 503, "a partial body is never replayed");
    assert_eq!(server.requests(), 1);
    drop(tx);
}

#[tokio::test]
async fn a_streaming_body_that_fails_is_not_replayed() {
    let server = Scripted::start(vec![]).await;
    let mut svc = RetryLayer::new(policy(), "events").layer(client::<ChannelBody>());
    let (tx, body) = ChannelBody::new();
    tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
    tx.send(Err(std::io::Error::other("disk gone")))
        .await
        .unwrap();
    let put = Request::put(server.url("/events")).body(body).unwrap();
    let result = svc.ready().await.unwrap().call(put).await;
    assert!(matches!(result, Err(CallError::Inner(_))), "{result:?}");
    assert!(server.requests() <= 1, "sent at most once");
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_the_retry_answers() {
    let server = Scripted::start(vec![Answer::status(200).after(Duration::from_secs(20))]).await;
    let mut svc = RetryLayer::new(policy(), "orders")
        .attempt_timeout(Duration::from_millis(300))
        .layer(client::<Full<Bytes>>());
    let started = Instant::now();
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_text(response).await, "answer 2");
    assert_eq!(server.requests(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the hanging attempt was cut"
    );
}

#[tokio::test]
async fn when_every_attempt_times_out_the_error_says_so() {
    let hang = Answer::status(200).after(Duration::from_secs(20));
    let server = Scripted::start(vec![hang.clone(), hang.clone(), hang.clone(), hang]).await;
    let mut svc = RetryLayer::new(policy(), "orders")
        .attempt_timeout(Duration::from_millis(100))
        .layer(client::<Full<Bytes>>());
    let result = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await;
    match result {
        Err(CallError::TimedOut(d)) => assert_eq!(d, Duration::from_millis(100)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn max_elapsed_cuts_a_hanging_attempt_without_an_attempt_timeout() {
    let server = Scripted::start(vec![Answer::status(200).after(Duration::from_secs(20))]).await;
    let policy = RetryPolicy::new(RetryConfig {
        max_elapsed: Some(0.5),
        ..config()
    })
    .unwrap()
    .without_metrics();
    let mut svc = RetryLayer::new(policy, "orders").layer(client::<Full<Bytes>>());
    let started = Instant::now();
    let result = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await;
    assert!(matches!(result, Err(CallError::TimedOut(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the deadline held"
    );
}

#[tokio::test]
async fn connection_failures_are_retried_and_the_last_error_returned() {
    let addr = closed_port().await;
    let retries = Arc::new(AtomicU32::new(0));
    let counted = retries.clone();
    let policy = policy().with_notify(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let mut svc = RetryLayer::new(policy, "orders").layer(client::<Full<Bytes>>());
    let result = svc
        .ready()
        .await
        .unwrap()
        .call(get(&format!("http://{addr}/a")))
        .await;
    let error = result.expect_err("nothing listens there");
    assert!(matches!(error, CallError::Inner(_)), "{error}");
    assert_eq!(
        retries.load(Ordering::Relaxed),
        3,
        "classified as ConnectionError"
    );
}

#[tokio::test]
async fn the_executors_metrics_count_the_calls() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let policy = RetryPolicy::new(config()).unwrap().with_metrics(metrics);
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy, "orders").layer(client::<Full<Bytes>>());
    svc.ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    assert!(
        text.contains(r#"retry_attempts_total{attempt="2",operation="GET",service="orders"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"retry_success_total{attempts_needed="2",operation="GET",service="orders"} 1"#
        ),
        "{text}"
    );
}

/// The first-try series a layer keeps per method are its own: a layer made from it with
/// another operation name counts under that name, and each method under its own.
#[tokio::test]
async fn first_try_metrics_name_each_layers_operations() {
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let policy = RetryPolicy::new(config()).unwrap().with_metrics(metrics);
    let server = Scripted::start(vec![]).await;
    let by_method = RetryLayer::new(policy, "orders");
    let mut svc = by_method.clone().layer(client::<Full<Bytes>>());
    for request in [get(&server.url("/a")), get(&server.url("/b"))] {
        svc.ready().await.unwrap().call(request).await.unwrap();
    }
    let head = Request::head(server.url("/c"))
        .body(Full::default())
        .unwrap();
    svc.ready().await.unwrap().call(head).await.unwrap();
    let fixed = by_method.operation(ricochet::http::OperationName::Fixed("orders.read".into()));
    let mut svc = fixed.layer(client::<Full<Bytes>>());
    svc.ready()
        .await
        .unwrap()
        .call(get(&server.url("/d")))
        .await
        .unwrap();
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    for (operation, calls) in [("GET", 2), ("HEAD", 1), ("orders.read", 1)] {
        let attempts = format!(
            r#"retry_attempts_total{{attempt="1",operation="{operation}",service="orders"}} {calls}"#
        );
        let successes = format!(
            r#"retry_success_total{{attempts_needed="1",operation="{operation}",service="orders"}} {calls}"#
        );
        assert!(text.contains(&attempts), "{attempts} in {text}");
        assert!(text.contains(&successes), "{successes} in {text}");
    }
}

#[tokio::test]
async fn an_open_circuit_sends_nothing() {
    use ricochet_core::breaker::BreakerConfig;
    let config = RetryConfig {
        max_attempts: 1,
        circuit_breaker: Some(BreakerConfig {
            failure_threshold: 1,
            failure_rate: 0.0,
            minimum_calls: 0,
            window: 10.0,
            cool_down: 60.0,
            half_open_probes: 1,
        }),
        ..config()
    };
    let policy = RetryPolicy::new(config).unwrap().without_metrics();
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy, "orders").layer(client::<Full<Bytes>>());
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await;
    assert!(
        matches!(second, Err(CallError::CircuitOpen { .. })),
        "{second:?}"
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_that_no_attempt_read_is_retried_whole() {
    // Refused connections never read the body: it goes back whole, whatever its size.
    let addr = closed_port().await;
    let big = Bytes::from(vec![b'w'; 100 * 1024]);
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                    body.len().to_string(),
                ))))
            });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await
            .unwrap();
    });
    // Up to 40 attempts, 50–200 ms apart: seconds of retries for a listener due in 0.1 s.
    let policy = RetryPolicy::new(RetryConfig {
        max_attempts: 40,
        initial_delay: 0.05,
        max_delay: 0.2,
        ..config()
    })
    .unwrap()
    .without_metrics();
    let mut svc = RetryLayer::new(policy, "uploads").layer(client::<Full<Bytes>>());
    let put = Request::put(format!("http://{addr}/blob"))
        .body(Full::new(big.clone()))
        .unwrap();
    let response = svc.ready().await.unwrap().call(put).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_text(response).await, big.len().to_string());
    late.abort();
}

/// The seed's JSON log lines of this thread, captured until the guards are dropped.
///
/// A second dispatcher lives as long as the capture: tracing caches each callsite's interest
/// once, for the whole process, and while just one dispatcher is registered it asks only the
/// registering thread's default (tokio-rs/tracing#3611) — so a sibling test without a
/// subscriber that reaches a log line first (a give-up, say) would silence it here. With two,
/// every registered dispatcher is asked.
fn capture_lines() -> (
    ricochet::logging::CapturedLines,
    (tracing::Dispatch, tracing::subscriber::DefaultGuard),
) {
    use tracing_subscriber::layer::SubscriberExt;
    let anchor = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let lines = ricochet::logging::CapturedLines::default();
    let subscriber =
        tracing_subscriber::registry().with(ricochet::logging::SeedJsonLayer::new(lines.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    (lines, (anchor, guard))
}

#[tokio::test]
async fn the_executors_json_log_lines_name_the_http_failure() {
    let (lines, _capturing) = capture_lines();
    let server = Scripted::start(vec![Answer::status(503)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = lines.lines();
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let levels: Vec<&str> = parsed
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["WARNING", "INFO"], "{lines:?}");
    for line in &parsed {
        assert_eq!(line["service"], "orders");
        assert_eq!(line["operation"], "GET");
        assert_eq!(line["error"], "HTTP 503");
        assert_eq!(line["attempt"], 1);
    }
}

fn failure_types(registry: &prometheus::Registry) -> Vec<String> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "retry_failure_total")
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == "error_type")
        .map(|l| l.value().to_string())
        .collect()
}

/// Per-attempt timeouts are the seed's `TimeoutError`: in the log lines' `error` and in
/// `retry_failure_total{error_type}`, whether the retries ran out or the body could not be sent
/// again after a timed-out attempt (which once gave up as `retry_after_too_long`).
#[tokio::test]
async fn timed_out_attempts_are_timeout_errors_in_logs_and_metrics() {
    let (lines, _capturing) = capture_lines();

    // Every attempt times out: retries run out.
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let hang = Answer::status(200).after(Duration::from_secs(20));
    let server = Scripted::start(vec![hang.clone(), hang.clone(), hang.clone(), hang]).await;
    let policy = RetryPolicy::new(config()).unwrap().with_metrics(metrics);
    let mut svc = RetryLayer::new(policy, "orders")
        .attempt_timeout(Duration::from_millis(100))
        .layer(client::<Full<Bytes>>());
    let result = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await;
    assert!(matches!(result, Err(CallError::TimedOut(_))), "{result:?}");
    assert_eq!(failure_types(&registry), ["TimeoutError"]);
    let logged: Vec<serde_json::Value> = lines
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 8, "4 WARNING, 3 INFO, 1 ERROR: {logged:?}");
    for line in &logged {
        let error = line["error"].as_str().unwrap();
        assert!(error.starts_with("TimeoutError: "), "{line}");
    }

    // A streaming body still being sent when its attempt timed out cannot be sent again: the
    // call gives up at once, still as a `TimeoutError`.
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).unwrap();
    let server = Scripted::start(vec![Answer::status(200)
        .without_reading_body()
        .after(Duration::from_secs(20))])
    .await;
    let policy = RetryPolicy::new(config()).unwrap().with_metrics(metrics);
    let mut svc = RetryLayer::new(policy, "events")
        .attempt_timeout(Duration::from_millis(100))
        .layer(client::<ChannelBody>());
    let (tx, body) = ChannelBody::new();
    tx.send(Ok(Bytes::from_static(b"first part")))
        .await
        .unwrap();
    let put = Request::put(server.url("/events")).body(body).unwrap();
    let result = svc.ready().await.unwrap().call(put).await;
    assert!(matches!(result, Err(CallError::TimedOut(_))), "{result:?}");
    assert_eq!(server.requests(), 1);
    assert_eq!(failure_types(&registry), ["TimeoutError"]);
    drop(tx);
}

#[tokio::test]
async fn every_retry_sends_the_first_attempts_head_each_header_value_in_its_order() {
    let server = Scripted::start(vec![Answer::status(503), Answer::status(502)]).await;
    let mut svc = RetryLayer::new(policy(), "orders").layer(client::<Full<Bytes>>());
    let mut request = get(&server.url("/v1/orders/7?expand=lines&expand=notes"));
    let headers = request.headers_mut();
    for value in ["a", "b", "c"] {
        headers.append("x-trace", http::HeaderValue::from_static(value));
    }
    headers.insert("accept", http::HeaderValue::from_static("application/json"));
    // Not UTF-8: opaque bytes go as they are.
    headers.insert(
        "x-opaque",
        http::HeaderValue::from_bytes(b"\xff\xfe!").unwrap(),
    );
    headers.append("x-trace", http::HeaderValue::from_static("d"));
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(attempt.method, "GET");
        assert_eq!(attempt.path, "/v1/orders/7?expand=lines&expand=notes");
        let traces: Vec<_> = attempt.headers.get_all("x-trace").iter().collect();
        assert_eq!(traces, ["a", "b", "c", "d"]);
        assert_eq!(attempt.headers["x-opaque"].as_bytes(), b"\xff\xfe!");
        // Everything else the client sent (host, accept, …) the same each time, in order.
        assert_eq!(attempt.headers, seen[0].headers);
    }
}

/// What an in-process inner service saw of each attempt's head (extensions and a header
/// value's `sensitive` flag do not cross the wire).
#[derive(Debug, Clone, PartialEq)]
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    tenant: Option<Tenant>,
    authorization_sensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Tenant(&'static str);

#[tokio::test]
async fn a_retry_keeps_the_requests_extensions_version_and_sensitive_values() {
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = heads.clone();
    let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let mut heads = recorded.lock().unwrap();
        heads.push(Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            tenant: request.extensions().get::<Tenant>().cloned(),
            authorization_sensitive: request.headers()["authorization"].is_sensitive(),
        });
        let status = if heads.len() < 3 { 503 } else { 200 };
        async move {
            let mut response = http::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::io::Error>(response)
        }
    });
    let mut svc = RetryLayer::new(policy(), "orders")
        .clone_bodies()
        .layer(inner);
    let mut secret = http::HeaderValue::from_static("Bearer s3cr3t");
    secret.set_sensitive(true);
    let request = Request::put("http://orders.internal/v1/orders/7")
        .version(http::Version::HTTP_2)
        .header("authorization", secret)
        .header("x-trace", "a")
        .header("x-trace", "b")
        .extension(Tenant("acme"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 3);
    assert_eq!(heads[0].method, http::Method::PUT);
    assert_eq!(heads[0].version, http::Version::HTTP_2);
    assert_eq!(heads[0].tenant, Some(Tenant("acme")));
    assert!(heads[0].authorization_sensitive);
    assert_eq!(heads[1], heads[0]);
    assert_eq!(heads[2], heads[0]);
}

#[test]
fn a_call_made_outside_the_runtime_within_an_attempt_timeout_runs_when_polled_in_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Scripted::start(vec![Answer::status(503)]));
    let mut svc = RetryLayer::new(policy(), "orders")
        .attempt_timeout(Duration::from_secs(5))
        .layer(rt.block_on(async { client::<Full<Bytes>>() }));
    rt.block_on(svc.ready()).unwrap();
    // `call` on this thread, outside the runtime: the attempt's timer cannot be made here.
    let call = svc.call(get(&server.url("/a")));
    let response = rt.block_on(call).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn max_elapsed_counts_from_the_calls_start_not_from_its_first_failure() {
    // The first attempt takes 1.5 s to fail, the second hangs: a deadline counted from the
    // call's start cuts the call at 2 s, one counted from the first failure would at 3.5 s.
    let server = Scripted::start(vec![
        Answer::status(503).after(Duration::from_millis(1500)),
        Answer::status(200).after(Duration::from_secs(20)),
    ])
    .await;
    let policy = RetryPolicy::new(RetryConfig {
        max_elapsed: Some(2.0),
        ..config()
    })
    .unwrap()
    .without_metrics();
    let mut svc = RetryLayer::new(policy, "orders").layer(client::<Full<Bytes>>());
    let started = Instant::now();
    let result = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/a")))
        .await;
    let took = started.elapsed();
    assert!(matches!(result, Err(CallError::TimedOut(_))), "{result:?}");
    assert_eq!(server.requests(), 2);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3000),
        "cut at {took:?}"
    );
}
