//! Logs: one JSON object per line with exactly the seed's fields.
//!
//! ```json
//! {"timestamp":"2026-11-28T23:05:08.123456Z","level":"WARNING","service":"lake","operation":"fetch","attempt":1,"delay":0.0,"error":"HTTP 503","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
//! ```
//!
//! A library emits, the application installs: the executor emits `tracing` spans and events
//! with target [`TARGET`] and never installs a subscriber. [`SeedJsonLayer`] is a
//! `tracing-subscriber` layer the application adds to its own subscriber to render the events as
//! the seed's lines (tracing-subscriber's own JSON format nests fields and spells the level
//! `WARN`, so the seed's flat shape and `WARNING` need this small layer). The `ricochet` CLI
//! installs it; a service does so in `main`:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry().with(ricochet::logging::SeedJsonLayer::new(std::io::stderr));
//! tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
//! ```
//!
//! # What is emitted
//!
//! - a `DEBUG` span `retry` per logical call (fields `service`, `operation`, `trace_id` once
//!   known) and a `DEBUG` span `attempt` per call made (field `attempt`) around the operation's
//!   future, so the operation's own events nest under them;
//! - events with the seed's fields (`service`, `operation`, `attempt`, `delay`, `error`,
//!   `trace_id`): WARNING when an attempt fails, INFO when a retry is scheduled, ERROR when the
//!   operation gives up.
//!
//! # `trace_id`
//!
//! With the `opentelemetry` feature, the trace id of the current OpenTelemetry context when it
//! holds a valid span; else the trace id of the caller's W3C `traceparent` when one is in scope
//! ([`with_traceparent`]); else a fresh W3C trace id (32 hex digits) per logical operation.

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The `tracing` target of ricochet's retry events.
pub const TARGET: &str = "ricochet";

tokio::task_local! {
    static TRACEPARENT: String;
}

/// Runs `fut` with a W3C `traceparent` in scope: its trace id becomes the `trace_id` of every
/// retry log line inside.
pub async fn with_traceparent<F: Future>(traceparent: &str, fut: F) -> F::Output {
    TRACEPARENT.scope(traceparent.to_string(), fut).await
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is valid.
pub fn trace_id_from_traceparent(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(span_id, 16)
        && span_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then(|| trace_id.to_string())
}

/// The trace id for a new logical operation: the current OpenTelemetry span's (feature
/// `opentelemetry`), the caller's `traceparent`, or a fresh W3C trace id.
pub fn current_trace_id() -> String {
    #[cfg(feature = "opentelemetry")]
    if let Some(id) = opentelemetry_trace_id() {
        return id;
    }
    TRACEPARENT
        .try_with(|tp| trace_id_from_traceparent(tp))
        .ok()
        .flatten()
        .unwrap_or_else(crate::entropy::new_trace_id)
}

/// The trace id of the current OpenTelemetry context, if it holds a valid span context.
#[cfg(feature = "opentelemetry")]
fn opentelemetry_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Where [`SeedJsonLayer`] writes each line: any `Fn() -> impl Write` (e.g. `std::io::stderr`),
/// or a [`CapturedLines`].
pub trait MakeLineWriter: Send + Sync + 'static {
    /// The writer for one line.
    type Writer: Write;
    /// A writer for the next line.
    fn make_writer(&self) -> Self::Writer;
}

impl<F, W> MakeLineWriter for F
where
    F: Fn() -> W + Send + Sync + 'static,
    W: Write,
{
    type Writer = W;
    fn make_writer(&self) -> W {
        self()
    }
}

/// Renders ricochet's events as the seed's JSON lines into `W`.
pub struct SeedJsonLayer<W> {
    make_writer: W,
}

impl<W: MakeLineWriter> SeedJsonLayer<W> {
    /// A layer writing lines to `make_writer` (e.g. `std::io::stderr`).
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

#[derive(Default)]
struct Fields {
    service: Option<String>,
    operation: Option<String>,
    attempt: Option<u64>,
    delay: Option<f64>,
    error: Option<String>,
    trace_id: Option<String>,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "delay" {
            self.delay = Some(value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "attempt" {
            self.attempt = Some(value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "attempt" {
            self.attempt = u64::try_from(value).ok();
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "service" => &mut self.service,
            "operation" => &mut self.operation,
            "error" => &mut self.error,
            "trace_id" => &mut self.trace_id,
            _ => return,
        };
        *slot = Some(value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

impl<S: Subscriber, W: MakeLineWriter> Layer<S> for SeedJsonLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        let line = serde_json::json!({
            "timestamp": rfc3339_now(),
            "level": level,
            "service": f.service,
            "operation": f.operation,
            "attempt": f.attempt,
            "delay": f.delay,
            "error": f.error,
            "trace_id": f.trace_id,
        });
        let mut w = self.make_writer.make_writer();
        let _ = writeln!(w, "{line}");
    }
}

/// An in-memory sink for log lines (tests, the demo's summary).
#[derive(Clone, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<u8>>>);

impl CapturedLines {
    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeLineWriter for CapturedLines {
    type Writer = CapturedLines;
    fn make_writer(&self) -> Self::Writer {
        self.clone()
    }
}

/// The current UTC time in RFC 3339 with microseconds, e.g. `2026-11-28T23:05:08.123456Z`.
pub fn rfc3339_now() -> String {
    rfc3339(crate::coordination::wall_clock_us())
}

/// A Unix time in µs as RFC 3339 UTC with microseconds.
pub fn rfc3339(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        us % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(784_111_777_000_001), "1994-11-06T08:49:37.000001Z");
        assert_eq!(
            rfc3339(1_709_164_800_000_000),
            "2024-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn traceparent_trace_ids() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_from_traceparent(bad), None, "{bad}");
        }
    }
}
