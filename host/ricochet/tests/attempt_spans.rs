//! A first attempt's future runs in its `attempt` span, a child of the call's `retry` span: while
//! it is polled and while it is dropped (finished or cancelled), through the executor and the
//! layer alike.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use ricochet::tower::RetryLayer;
use ricochet::{RetryConfig, RetryPolicy};
use tower::{service_fn, Layer, Service, ServiceExt};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer as _;

/// An event's message, with the names of the spans it happened in (innermost first).
struct Event {
    message: String,
    scope: Vec<String>,
}

/// The events seen.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Event>>>);

impl Seen {
    fn scope_of(&self, message: &str) -> Vec<String> {
        let seen = self.0.lock().unwrap();
        let found = seen.iter().find(|e| e.message == message);
        found.map(|e| e.scope.clone()).unwrap_or_default()
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let scope = ctx
            .event_scope(event)
            .map(|scope| scope.map(|span| span.name().to_string()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push(Event {
            message: message.0,
            scope,
        });
    }
}

/// Logs when it is polled and when it is dropped; ready at its first poll when `ready`.
struct Probe {
    ready: bool,
}

impl Future for Probe {
    type Output = Result<Response<Full<Bytes>>, std::io::Error>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        tracing::info!("polled");
        if self.ready {
            Poll::Ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        tracing::info!("dropped");
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig::default())
        .unwrap()
        .without_metrics()
}

fn watched() -> (Seen, impl tracing::Subscriber) {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(
        seen.clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    (seen, subscriber)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://orders.internal/v1/orders/7")
        .body(Full::default())
        .unwrap()
}

const IN_ATTEMPT: [&str; 2] = ["attempt", "retry"];

#[tokio::test]
async fn the_layers_first_attempt_is_polled_and_dropped_in_its_span() {
    let (seen, subscriber) = watched();
    let _default = tracing::subscriber::set_default(subscriber);
    let inner = service_fn(|_: Request<Full<Bytes>>| Probe { ready: true });
    let mut svc = RetryLayer::new(policy(), "orders")
        .clone_bodies()
        .layer(inner);
    let response = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(seen.scope_of("polled"), IN_ATTEMPT);
    assert_eq!(seen.scope_of("dropped"), IN_ATTEMPT);
}

#[tokio::test]
async fn a_cancelled_first_attempt_of_the_layer_is_dropped_in_its_span() {
    let (seen, subscriber) = watched();
    let _default = tracing::subscriber::set_default(subscriber);
    let inner = service_fn(|_: Request<Full<Bytes>>| Probe { ready: false });
    let mut svc = RetryLayer::new(policy(), "orders")
        .clone_bodies()
        .layer(inner);
    let mut call = Box::pin(svc.ready().await.unwrap().call(get()));
    let waker = std::task::Waker::noop();
    assert!(call
        .as_mut()
        .poll(&mut Context::from_waker(waker))
        .is_pending());
    drop(call);
    assert_eq!(seen.scope_of("polled"), IN_ATTEMPT);
    assert_eq!(seen.scope_of("dropped"), IN_ATTEMPT);
}

#[tokio::test]
async fn the_executors_first_attempt_is_polled_and_dropped_in_its_span() {
    let (seen, subscriber) = watched();
    let _default = tracing::subscriber::set_default(subscriber);
    let policy = policy();
    let response = policy
        .execute_with_retry(|| Probe { ready: true }, "orders", "get")
        .await;
    assert!(response.is_ok());
    assert_eq!(seen.scope_of("polled"), IN_ATTEMPT);
    assert_eq!(seen.scope_of("dropped"), IN_ATTEMPT);
}

#[tokio::test]
async fn a_cancelled_first_attempt_of_the_executor_is_dropped_in_its_span() {
    let (seen, subscriber) = watched();
    let _default = tracing::subscriber::set_default(subscriber);
    let policy = policy();
    let mut call = Box::pin(policy.execute_with_retry(|| Probe { ready: false }, "orders", "get"));
    let waker = std::task::Waker::noop();
    assert!(call
        .as_mut()
        .poll(&mut Context::from_waker(waker))
        .is_pending());
    drop(call);
    assert_eq!(seen.scope_of("polled"), IN_ATTEMPT);
    assert_eq!(seen.scope_of("dropped"), IN_ATTEMPT);
}

/// Answers `status` at once, logging its attempt's number when polled and dropped.
struct Numbered {
    attempt: u32,
    status: u16,
}

impl Future for Numbered {
    type Output = Result<Response<Full<Bytes>>, std::io::Error>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        tracing::info!("polled {}", self.attempt);
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        *response.status_mut() = http::StatusCode::from_u16(self.status).unwrap();
        Poll::Ready(Ok(response))
    }
}

impl Drop for Numbered {
    fn drop(&mut self) {
        tracing::info!("dropped {}", self.attempt);
    }
}

/// A layer whose first attempt answers 503 and the second 200, with an attempt timeout or not.
async fn fail_once_through_the_layer(attempt_timeout: Option<std::time::Duration>) -> Seen {
    let (seen, subscriber) = watched();
    let _default = tracing::subscriber::set_default(subscriber);
    let calls = Arc::new(Mutex::new(0_u32));
    let inner = service_fn(move |_: Request<Full<Bytes>>| {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        let status = if *calls == 1 { 503 } else { 200 };
        Numbered {
            attempt: *calls,
            status,
        }
    });
    let quick = RetryConfig {
        initial_delay: 0.001,
        coordination_enabled: false,
        ..RetryConfig::default()
    };
    let policy = RetryPolicy::new(quick).unwrap().without_metrics();
    let layer = RetryLayer::new(policy, "orders").clone_bodies();
    let layer = match attempt_timeout {
        Some(limit) => layer.attempt_timeout(limit),
        None => layer,
    };
    let mut svc = layer.layer(inner);
    let response = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    seen
}

#[tokio::test]
async fn a_failed_first_attempt_ends_in_its_span_and_the_retry_runs_in_the_calls_span() {
    for attempt_timeout in [None, Some(std::time::Duration::from_secs(5))] {
        let seen = fail_once_through_the_layer(attempt_timeout).await;
        for event in ["polled 1", "dropped 1", "polled 2", "dropped 2"] {
            assert_eq!(
                seen.scope_of(event),
                IN_ATTEMPT,
                "{event} with attempt timeout {attempt_timeout:?}"
            );
        }
    }
}
