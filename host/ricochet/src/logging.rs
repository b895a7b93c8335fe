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
//!
//! # `error`: secrets are scrubbed
//!
//! The `error` field is the failed attempt's `Display` text, and error text often holds the
//! request: a URL with `user:password@` in it, `?api_key=…` or `&token=…`, an
//! `Authorization: Bearer …` header. Before an error reaches a log line (or the
//! [`RetryPolicy::with_notify`] hook), [`scrub_secrets`] replaces with `***`:
//!
//! - the user information of a URL (`https://***@host/…`);
//! - the value of every `name=value` pair (in a query string, a form body, or free text) whose
//!   name is a well-known secret: [`SECRET_PARAMS`], any name ending in `_token`, `_key`,
//!   `_secret` or `_password` (case-insensitive, `-` read as `_`);
//! - the credentials after `Bearer ` or `Basic `.
//!
//! Anything else an error may carry — a secret in a path segment, in a JSON body, in a header of
//! your own — is yours to remove: [`RetryPolicy::with_redactor`] runs your function on the text
//! after the default scrubbing.
//!
//! # Operational lines
//!
//! The rest of what ricochet logs — a policy reload rejected, a policy component that failed and
//! was replaced by the native core, an idempotent result that may have run twice, a metric the
//! default registry already had — is not about one attempt and has none of the seed's fields.
//! [`SeedJsonLayer`] renders those events from `ricochet::*` targets at WARN and ERROR as JSON
//! lines of their own: `timestamp`, `level`, `target`, `message` and the event's fields
//! (`{"timestamp":"…","level":"ERROR","target":"ricochet::reload","message":"policy reload
//! rejected; keeping the previous policy","file":"/etc/ricochet/policies.yaml","error":"…"}`).
//! A consumer tells them apart by `target`, which seed lines do not have.
//! [`SeedJsonLayer::operational`] changes the level, or turns them off.
//!
//! [`RetryPolicy::with_notify`]: crate::RetryPolicy::with_notify
//! [`RetryPolicy::with_redactor`]: crate::RetryPolicy::with_redactor

use std::borrow::Cow;
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

/// Renders ricochet's events as the seed's JSON lines into `W`, and its operational warnings
/// and errors as lines of their own (see the [module docs](self)).
pub struct SeedJsonLayer<W> {
    make_writer: W,
    operational: Option<Level>,
}

impl<W: MakeLineWriter> SeedJsonLayer<W> {
    /// A layer writing lines to `make_writer` (e.g. `std::io::stderr`), operational lines at
    /// WARN and ERROR included.
    pub fn new(make_writer: W) -> Self {
        Self {
            make_writer,
            operational: Some(Level::WARN),
        }
    }

    /// Renders operational events (targets `ricochet::*`) at `level` and more severe; `None`
    /// renders none, only the seed's lines. WARN by default.
    #[must_use]
    pub fn operational(mut self, level: Option<Level>) -> Self {
        self.operational = level;
        self
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

/// Every field of an operational event, as JSON values.
#[derive(Default)]
struct AnyFields(serde_json::Map<String, serde_json::Value>);

impl AnyFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let key = field.name();
        // The line's own keys are not overwritten by a field of the same name.
        if !matches!(key, "timestamp" | "level" | "target") {
            self.0.insert(key.to_string(), value);
        }
    }
}

impl Visit for AnyFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, scrub_secrets(value).into_owned().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

/// The seed's spelling of a level.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<W: MakeLineWriter> SeedJsonLayer<W> {
    /// Writes `line` and its newline with one `write_all`: a formatted write is several
    /// writes, which concurrent calls interleave in a writer without a lock of its own.
    fn write_line(&self, line: &serde_json::Value) {
        let mut text = line.to_string();
        text.push('\n');
        let mut w = self.make_writer.make_writer();
        let _ = w.write_all(text.as_bytes());
    }

    /// An operational event (a `ricochet::*` target) as a line of its own, if its level is shown.
    fn operational_line(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let shown = self.operational.is_some_and(|least| *meta.level() <= least);
        if !shown || !meta.target().starts_with("ricochet::") {
            return;
        }
        let mut fields = AnyFields::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), rfc3339_now().into());
        line.insert("level".into(), level_name(*meta.level()).into());
        line.insert("target".into(), meta.target().into());
        line.extend(fields.0);
        self.write_line(&serde_json::Value::Object(line));
    }
}

impl<S: Subscriber, W: MakeLineWriter> Layer<S> for SeedJsonLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            self.operational_line(event);
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let level = level_name(*event.metadata().level());
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
        self.write_line(&line);
    }
}

/// Parameter names whose values [`scrub_secrets`] hides (compared case-insensitively, with `-`
/// read as `_`); so is any name ending in `_token`, `_key`, `_secret` or `_password`.
pub const SECRET_PARAMS: [&str; 26] = [
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "authorization",
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x_amz_signature",
    "x_amz_credential",
    "x_amz_security_token",
    "session",
    "sessionid",
    "session_id",
    "jwt",
    "credential",
    "credentials",
];

const MASK: &str = "***";

/// Whether `name` (a `name=value` pair's name) names a secret.
fn secret_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 64 {
        return false;
    }
    let norm: String = name
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    SECRET_PARAMS.contains(&norm.as_str())
        || ["_token", "_key", "_secret", "_password"]
            .iter()
            .any(|suffix| norm.ends_with(suffix))
}

/// Where a value (or user information) ends: the first delimiter at or after `from`.
fn value_end(text: &[u8], from: usize, also: &[u8]) -> usize {
    text[from..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || b"\"'<>`,)]}".contains(b) || also.contains(b))
        .map_or(text.len(), |i| from + i)
}

/// `text` with the secrets a URL, a query string or an `Authorization` header carries replaced
/// by `***` (see the [module docs](self) for what is found). Borrowed when there is none.
///
/// ```
/// use ricochet::logging::scrub_secrets;
/// assert_eq!(
///     scrub_secrets("GET https://bob:hunter2@api.example/v1?q=1&api_key=SECRET123 failed"),
///     "GET https://***@api.example/v1?q=1&api_key=*** failed"
/// );
/// assert_eq!(scrub_secrets("connection refused"), "connection refused");
/// ```
pub fn scrub_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Ranges to mask, in order; every boundary is at an ASCII byte, so slicing stays on
    // character boundaries.
    let mut masks: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // User information: `scheme://userinfo@host`.
        if bytes[i..].starts_with(b"://") {
            let start = i + 3;
            let end = value_end(bytes, start, b"/?#");
            if let Some(at) = bytes[start..end].iter().rposition(|&b| b == b'@') {
                if at > 0 {
                    masks.push((start, start + at));
                }
            }
            i = end;
            continue;
        }
        // `Bearer <credentials>` and `Basic <credentials>`.
        let scheme = [&b"bearer "[..], &b"basic "[..]].into_iter().find(|s| {
            bytes.len() >= i + s.len()
                && bytes[i..i + s.len()].eq_ignore_ascii_case(s)
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
        });
        if let Some(scheme) = scheme {
            let start = i + scheme.len();
            let end = value_end(bytes, start, b"&;");
            if end > start {
                masks.push((start, end));
            }
            i = end.max(start);
            continue;
        }
        // `name=value`, where a name starts the text or follows a separator.
        let starts_name = i == 0 || b"?&; \t\n\r(\"'".contains(&bytes[i - 1]);
        if starts_name && bytes[i].is_ascii_alphanumeric() {
            let name_end = bytes[i..]
                .iter()
                .position(|b| {
                    !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-' || *b == b'.')
                })
                .map_or(bytes.len(), |n| i + n);
            if bytes.get(name_end) == Some(&b'=') && secret_name(&text[i..name_end]) {
                let start = name_end + 1;
                let end = value_end(bytes, start, b"&;#");
                if end > start && &text[start..end] != MASK {
                    masks.push((start, end));
                }
                i = end.max(start);
                continue;
            }
            i = name_end.max(i + 1);
            continue;
        }
        i += 1;
    }
    if masks.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in masks {
        out.push_str(&text[at..start]);
        out.push_str(MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
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
    fn secrets_are_scrubbed_and_nothing_else() {
        let cases = [
            // User information, with and without a password, several URLs, odd schemes.
            (
                "GET https://bob:hunter2@api.example/v1 failed",
                "GET https://***@api.example/v1 failed",
            ),
            (
                "redis://:p%40ss@10.0.0.1:6379/0 refused",
                "redis://***@10.0.0.1:6379/0 refused",
            ),
            (
                "a https://KEY123@x.io b http://u:p@y.io/z?q=1",
                "a https://***@x.io b http://***@y.io/z?q=1",
            ),
            ("amqp://user:p@ss@host/vhost", "amqp://***@host/vhost"),
            ("https://host/path@v2", "https://host/path@v2"),
            ("mailto-like bob@example.com", "mailto-like bob@example.com"),
            // Query parameters and form bodies.
            (
                "https://h/x?api_key=SECRET123&q=1",
                "https://h/x?api_key=***&q=1",
            ),
            (
                "https://h/x?q=1&Access_Token=abc.def-ghi#frag",
                "https://h/x?q=1&Access_Token=***#frag",
            ),
            (
                "POST password=hunter2&user=bob",
                "POST password=***&user=bob",
            ),
            (
                "?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F",
                "?X-Amz-Signature=***&X-Amz-Credential=***",
            ),
            ("?client-secret=s1;sig=s2", "?client-secret=***;sig=***"),
            (
                "?stripe_api_key=sk_live_1&my_refresh_token=t",
                "?stripe_api_key=***&my_refresh_token=***",
            ),
            ("token= empty", "token= empty"),
            (
                "?monkey=1&keyboard=2&tokenizer=3&passage=4",
                "?monkey=1&keyboard=2&tokenizer=3&passage=4",
            ),
            (
                "error sending request for url (https://h/?key=AIza99)",
                "error sending request for url (https://h/?key=***)",
            ),
            ("already ?token=*** scrubbed", "already ?token=*** scrubbed"),
            // Authorization headers.
            (
                "Authorization: Bearer eyJhbGciOi.J9.x failed",
                "Authorization: Bearer *** failed",
            ),
            (
                "authorization: basic dXNlcjpwYXNz",
                "authorization: basic ***",
            ),
            ("a BearerOfNews arrived", "a BearerOfNews arrived"),
            // Nothing to scrub, non-ASCII around secrets, the edges of the text.
            ("connection refused", "connection refused"),
            ("", ""),
            ("token=", "token="),
            ("ключ ?token=секрет&x=ü", "ключ ?token=***&x=ü"),
            ("https://ü:ß@hôte/", "https://***@hôte/"),
            ("https://", "https://"),
            ("://@", "://@"),
        ];
        for (input, expected) in cases {
            assert_eq!(scrub_secrets(input), expected, "{input}");
        }
        assert!(matches!(scrub_secrets("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn scrubbing_never_panics_on_hostile_text() {
        let pieces = [
            "://", "@", "?", "&", "=", "token", "Bearer ", "basic ", "é", "\u{0}", " ", ";", "#",
            "api_key", "\"", "ß", "a",
        ];
        // Every sequence of up to four pieces: slicing must stay on character boundaries.
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for t in &texts {
                for p in pieces {
                    next.push(format!("{t}{p}"));
                }
            }
            texts.extend(next);
        }
        for t in &texts {
            let out = scrub_secrets(t);
            assert!(out.len() <= t.len() + 3 * t.len(), "{t:?}");
        }
        let long = "?token=".repeat(100_000);
        assert!(scrub_secrets(&long).len() <= long.len() + 3 * 100_000);
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
