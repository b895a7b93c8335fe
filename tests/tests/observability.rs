//! What the library emits, seen from an application that installs its own subscriber: a `retry`
//! span per call and an `attempt` span per call made (with the seed's fields), the seed's JSON
//! lines through `SeedJsonLayer`, and — with the `opentelemetry` feature — the trace id of the
//! current OpenTelemetry span context in those lines. The library itself installs nothing: without
//! a subscriber nothing is written anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::{RetryConfig, RetryPolicy};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

/// Records every span opened: its name and the fields it was created with.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: LayerContext<'_, S>) {
        let mut fields = String::new();
        attrs.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                fields.push_str(&format!("{}={:?} ", field.name(), value));
            },
        );
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields));
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig {
        max_attempts: 3,
        initial_delay: 0.001,
        max_delay: 0.002,
        coordination_enabled: false,
        ..RetryConfig::default()
    })
    .unwrap()
    .without_metrics()
    .with_seed(7)
}

/// Fails twice with a connection error, then succeeds.
async fn flaky(policy: &RetryPolicy) -> &'static str {
    let calls = std::sync::atomic::AtomicU32::new(0);
    policy
        .execute_with_retry(
            || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            "refused",
                        ))
                    } else {
                        Ok("done")
                    }
                }
            },
            "lake",
            "fetch",
        )
        .await
        .unwrap()
}

#[test]
fn spans_per_call_and_per_attempt_and_the_seeds_lines() {
    let spans = Spans::default();
    let lines = CapturedLines::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(SeedJsonLayer::new(lines.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(runtime.block_on(flaky(&policy())), "done");
    });

    let spans = spans.0.lock().unwrap().clone();
    let retry: Vec<_> = spans.iter().filter(|(n, _)| n == "retry").collect();
    let attempts: Vec<_> = spans.iter().filter(|(n, _)| n == "attempt").collect();
    assert_eq!(retry.len(), 1, "one span per logical call: {spans:?}");
    assert!(
        retry[0].1.contains("service=\"lake\"") && retry[0].1.contains("operation=\"fetch\""),
        "{retry:?}"
    );
    assert_eq!(attempts.len(), 3, "one span per call made: {spans:?}");
    for (i, (_, fields)) in attempts.iter().enumerate() {
        assert!(fields.contains(&format!("attempt={}", i + 1)), "{fields}");
    }

    // Two failed attempts: WARNING each, INFO for each scheduled retry; every line the seed's 8 fields.
    let lines = lines.lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut trace_ids = std::collections::HashSet::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: std::collections::BTreeSet<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            [
                "attempt",
                "delay",
                "error",
                "level",
                "operation",
                "service",
                "timestamp",
                "trace_id"
            ]
        );
        let trace_id = v["trace_id"].as_str().unwrap().to_string();
        assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
        assert!(trace_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        trace_ids.insert(trace_id);
    }
    assert_eq!(trace_ids.len(), 1, "one trace id per logical call");
}

#[test]
fn the_current_opentelemetry_span_names_the_trace() {
    let lines = CapturedLines::default();
    let subscriber = tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let span = SpanContext::new(
        trace_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let cx = Context::current().with_remote_span_context(span);
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    tracing::subscriber::with_default(subscriber, || {
        let _attached = cx.attach();
        assert_eq!(runtime.block_on(flaky(&policy())), "done");
    });
    let lines = lines.lines();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    }
}

#[test]
fn without_a_subscriber_nothing_is_installed() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(flaky(&policy())), "done");
    // The library never set a global default: this process can still install its own.
    let lines = CapturedLines::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(SeedJsonLayer::new(lines.clone())),
    )
    .expect("no global subscriber was installed by ricochet");
}
