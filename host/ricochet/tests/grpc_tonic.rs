//! gRPC through `RetryLayer::grpc` on a real tonic channel, against a real tonic server on
//! loopback (the `grpc.health.v1.Health` service, code generated in `tonic-health`: no protoc).
#![allow(clippy::unwrap_used)]

#[path = "tower_server/mod.rs"]
mod tower_server;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::tower::RetryLayer;
use ricochet::{Classify, ErrorCategory, RetryConfig, RetryError, RetryPolicy};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A health service that answers `Check` from a script (then `SERVING`) and records the
/// `service` field of every request it got.
#[derive(Default, Clone)]
struct ScriptedHealth {
    script: Arc<Mutex<VecDeque<Status>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for ScriptedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.seen.lock().unwrap().push(request.into_inner().service);
        match self.script.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            })),
        }
    }

    type WatchStream = Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>>
                + Send,
        >,
    >;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

struct GrpcServer {
    health: ScriptedHealth,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    async fn start(script: Vec<Status>) -> Self {
        let health = ScriptedHealth::default();
        health.script.lock().unwrap().extend(script);
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let service = HealthServer::new(health.clone());
        let task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self { health, addr, task }
    }

    fn calls(&self) -> usize {
        self.health.seen.lock().unwrap().len()
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
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
    .with_seed(3)
    .without_metrics()
}

fn with_pushback(code: Code, value: &str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-retry-pushback-ms", value.parse().unwrap());
    Status::with_metadata(code, "pushed back", metadata)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn unavailable_twice_then_ok_is_retried_with_the_same_message() {
    let server = GrpcServer::start(vec![
        Status::unavailable("down"),
        Status::unavailable("still down"),
    ])
    .await;
    let channel = tower::ServiceBuilder::new()
        .layer(RetryLayer::grpc(policy(), "health"))
        .service(server.channel().await);
    let mut client = HealthClient::new(channel);
    let answer = client.check(check("orders")).await.unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(
        *server.health.seen.lock().unwrap(),
        ["orders", "orders", "orders"],
        "every attempt carried the whole request message"
    );
}

#[tokio::test]
async fn resource_exhausted_with_pushback_waits_the_pushback() {
    let server = GrpcServer::start(vec![with_pushback(Code::ResourceExhausted, "1000")]).await;
    let channel = tower::ServiceBuilder::new()
        .layer(RetryLayer::grpc(policy(), "health"))
        .service(server.channel().await);
    let mut client = HealthClient::new(channel);
    let started = Instant::now();
    client.check(check("orders")).await.unwrap();
    assert_eq!(server.calls(), 2);
    // The policy's own delay is at most 10 ms: only the pushback explains a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_negative_or_malformed_pushback_stops_retries() {
    for value in ["-1", "soon", "1.5", "99999999999"] {
        let server = GrpcServer::start(vec![with_pushback(Code::Unavailable, value)]).await;
        let channel = tower::ServiceBuilder::new()
            .layer(RetryLayer::grpc(policy(), "health"))
            .service(server.channel().await);
        let mut client = HealthClient::new(channel);
        let status = client.check(check("orders")).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{value}: the server's own status"
        );
        assert_eq!(server.calls(), 1, "{value}: not retried");
    }
}

#[tokio::test]
async fn non_transient_codes_are_not_retried() {
    for status in [
        Status::invalid_argument("bad"),
        Status::not_found("gone"),
        Status::unauthenticated("who"),
        Status::permission_denied("no"),
        Status::internal("bug"),
        Status::aborted("conflict"),
    ] {
        let code = status.code();
        let server = GrpcServer::start(vec![status]).await;
        let channel = tower::ServiceBuilder::new()
            .layer(RetryLayer::grpc(policy(), "health"))
            .service(server.channel().await);
        let mut client = HealthClient::new(channel);
        let answer = client.check(check("orders")).await.unwrap_err();
        assert_eq!(answer.code(), code);
        assert_eq!(server.calls(), 1, "{code:?}");
    }
}

#[tokio::test]
async fn deadline_exceeded_is_retried() {
    let server = GrpcServer::start(vec![Status::deadline_exceeded("slow")]).await;
    let channel = tower::ServiceBuilder::new()
        .layer(RetryLayer::grpc(policy(), "health"))
        .service(server.channel().await);
    HealthClient::new(channel).check(check("x")).await.unwrap();
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn a_channel_that_cannot_connect_is_retried_as_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let retries = Arc::new(AtomicU32::new(0));
    let counted = retries.clone();
    let policy = policy().with_notify(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let channel = tower::ServiceBuilder::new()
        .layer(RetryLayer::grpc(policy, "health"))
        .service(channel);
    let status = HealthClient::new(channel)
        .check(check("x"))
        .await
        .unwrap_err();
    assert_eq!(retries.load(Ordering::Relaxed), 3, "{status}");
}

#[tokio::test]
async fn tonic_status_classifies_for_the_executor() {
    assert_eq!(
        Status::unavailable("x").classify().category,
        ErrorCategory::ServiceUnavailable
    );
    assert_eq!(
        Status::resource_exhausted("x").classify().category,
        ErrorCategory::RateLimitExceeded
    );
    let pushed = with_pushback(Code::ResourceExhausted, "250").classify();
    assert_eq!(pushed.server_delay, Some(Duration::from_millis(250)));
    assert!(!pushed.do_not_retry);
    let stop = with_pushback(Code::Unavailable, "-1").classify();
    assert_eq!(
        (stop.category, stop.server_delay, stop.do_not_retry),
        (ErrorCategory::ServiceUnavailable, None, true),
        "a negative pushback is a final failure of its own category, not a server delay"
    );
    // Every pushback entry counts: a "do not retry" among them holds, else the longest delay.
    let repeated = |values: [&str; 2]| {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("grpc-retry-pushback-ms", value.parse().unwrap());
        }
        Status::with_metadata(Code::Unavailable, "pushed back", metadata).classify()
    };
    assert!(repeated(["250", "-1"]).do_not_retry);
    let longest = repeated(["1000", "250"]);
    assert_eq!(longest.server_delay, Some(Duration::from_secs(1)));
    assert!(!longest.do_not_retry);
    assert_eq!(
        repeated(["250", "1000"]).server_delay,
        Some(Duration::from_secs(1))
    );

    // The executor around a plain generated client.
    let server = GrpcServer::start(vec![Status::unavailable("a"), Status::unavailable("b")]).await;
    let client = HealthClient::new(server.channel().await);
    let answer = policy()
        .execute_with_retry(
            || {
                let mut client = client.clone();
                async move { client.check(check("orders")).await }
            },
            "health",
            "check",
        )
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(server.calls(), 3);

    let server = GrpcServer::start(vec![with_pushback(Code::Unavailable, "-1")]).await;
    let client = HealthClient::new(server.channel().await);
    let answer = policy()
        .execute_with_retry(
            || {
                let mut client = client.clone();
                async move { client.check(check("orders")).await }
            },
            "health",
            "check",
        )
        .await;
    assert!(
        matches!(answer, Err(RetryError::NonRetryable(_))),
        "{answer:?}"
    );
    assert_eq!(server.calls(), 1, "pushback -1: not retried");
}

/// A pushback that says "do not retry" gives up as a failure of the status's own category:
/// `retry_failure_total{error_type="ServiceUnavailableError"}`, not a made-up server delay.
#[cfg(feature = "prometheus")]
#[tokio::test]
async fn a_do_not_retry_pushback_is_counted_under_its_category() {
    let registry = prometheus::Registry::new();
    let metrics = ricochet::metrics::RetryMetrics::register(&registry).unwrap();
    let server = GrpcServer::start(vec![with_pushback(Code::Unavailable, "-1")]).await;
    let channel = tower::ServiceBuilder::new()
        .layer(RetryLayer::grpc(policy().with_metrics(metrics), "health"))
        .service(server.channel().await);
    let status = HealthClient::new(channel)
        .check(check("orders"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.calls(), 1);
    let error_types: Vec<String> = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "retry_failure_total")
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == "error_type")
        .map(|l| l.value().to_string())
        .collect();
    assert_eq!(error_types, ["ServiceUnavailableError"]);
}

/// Hostile gRPC answers from a raw HTTP server: a status that is not a number, a pushback that
/// is not UTF-8 or is absurdly long. None may panic; each is classified as A6 says.
mod hostile {
    use super::tower_server::{Answer, Scripted};
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use ricochet::http::ReplayBody;
    use ricochet::tower::RetryLayer;
    use tower::{Layer, Service, ServiceExt};

    fn grpc(status: &[u8], pushback: Option<&[u8]>) -> Answer {
        let answer = Answer::status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", status);
        match pushback {
            Some(p) => answer.header("grpc-retry-pushback-ms", p),
            None => answer,
        }
    }

    async fn calls_made(answer: Answer) -> usize {
        let server = Scripted::start(vec![answer]).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
        let mut svc = RetryLayer::new(super::policy(), "grpc").layer(client);
        let request = http::Request::get(server.url("/pkg.Svc/Call"))
            .body(Full::default())
            .unwrap();
        svc.ready().await.unwrap().call(request).await.unwrap();
        server.requests()
    }

    #[tokio::test]
    async fn hostile_status_and_pushback_values() {
        assert_eq!(
            calls_made(grpc(b"14", None)).await,
            2,
            "UNAVAILABLE: retried"
        );
        assert_eq!(calls_made(grpc(b"0", None)).await, 1, "OK");
        assert_eq!(
            calls_made(grpc(b"abc", None)).await,
            1,
            "not a number: UNKNOWN"
        );
        assert_eq!(
            calls_made(grpc(b"99999999999", None)).await,
            1,
            "out of range: UNKNOWN"
        );
        assert_eq!(
            calls_made(grpc(b"14", Some(b"\xff\xfe"))).await,
            1,
            "not UTF-8: do not retry"
        );
        let long = "1".repeat(300);
        assert_eq!(
            calls_made(grpc(b"14", Some(long.as_bytes()))).await,
            1,
            "absurd: do not retry"
        );
        assert_eq!(
            calls_made(grpc(b"14", Some(b"5"))).await,
            2,
            "5 ms: retried"
        );
        // Two statuses are no status: UNKNOWN, not retried (the call may have succeeded).
        assert_eq!(
            calls_made(grpc(b"14", None).header("grpc-status", "0")).await,
            1,
            "UNAVAILABLE and OK: UNKNOWN"
        );
        // Two pushback lines that disagree: the server asked not to retry in one of them.
        assert_eq!(
            calls_made(grpc(b"14", Some(b"5")).header("grpc-retry-pushback-ms", "-1")).await,
            1,
            "5 ms, then -1: do not retry"
        );
        for value in ["+5", "5ms", "0x5", "4294967301"] {
            assert_eq!(
                calls_made(grpc(b"14", Some(value.as_bytes()))).await,
                1,
                "{value}: malformed, do not retry"
            );
        }
    }
}
