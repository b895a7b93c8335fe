//! # ricochet-envoy-filter
//!
//! A ricochet retry policy inside Envoy, as a proxy-wasm HTTP filter. Envoy's router does the
//! retrying; this filter makes it retry by *our* policy and protects the upstream with the same
//! circuit breaker and retry budget as the services behind it:
//!
//! - **request headers**: while the service's circuit is open, answer 503 locally with a
//!   `Retry-After` of the cool-down left; otherwise set `x-envoy-max-retries`,
//!   `x-envoy-retry-on`, `x-envoy-retriable-status-codes` and
//!   `x-envoy-upstream-rq-per-try-timeout-ms` from the policy (see [`retry_headers`]), with
//!   `x-envoy-max-retries: 0` for a half-open probe and while the retry budget is spent.
//! - **response headers**: feed the outcome into the breaker and the budget (shared by every
//!   worker, see [`shared_guards`]); on a 429 or 503 keep or add a `Retry-After` (see
//!   [`retry_after`]).
//!
//! Upstreams and clients are not trusted: every header the filter reads is read as bytes and
//! used only if it is UTF-8 (the SDK's `String` getters panic on anything else, and a panic
//! traps the VM for every later request); `x-envoy-attempt-count` is read only when the
//! configuration says Envoy sets it; and every per-request header through which a client could
//! change Envoy's retrying ([`CLIENT_RETRY_HEADERS`]) is replaced or removed.
//!
//! It is a thin adapter, like the component guest: every number — delays, breaker transitions,
//! budget tokens, what counts as retryable, Retry-After parsing — comes from `ricochet-core`.
//!
//! Time is the proxy's wall clock (`proxy_get_current_time_nanoseconds`), which every worker
//! shares; the breaker tolerates it stepping backwards.

pub mod retry_after;
pub mod retry_headers;
pub mod settings;
pub mod shared_guards;

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use ricochet_core::breaker::Admission;
use ricochet_core::retry_after::retry_after_seconds;
use ricochet_core::{Failure, Guards, RetryState};

use crate::retry_after::{Edit, PUSHBACK_STATUSES};
use crate::settings::Settings;
use crate::shared_guards::SharedGuards;

/// The module's start function (`_initialize`), which registers the root context.
#[allow(missing_docs)] // the SDK's macro generates an undocumented `pub fn`
mod entry {
    use super::{LogLevel, RicochetRoot, RootContext};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RicochetRoot::default()) });
    }}
}

/// Request headers through which a client could change how Envoy retries: the filter sets the
/// first four from the policy (or removes them) and removes the rest, whatever a client sent.
/// `x-envoy-retry-grpc-on` would add retry conditions, `x-envoy-retriable-header-names`
/// conditions on response headers, `x-envoy-hedge-on-per-try-timeout` a second request while
/// the first is still out.
pub const CLIENT_RETRY_HEADERS: [&str; 7] = [
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
];

/// A configured plugin: what every HTTP context of the root shares.
#[derive(Debug)]
struct Plugin {
    settings: Settings,
    guards: Option<SharedGuards>,
}

/// The root context: reads the plugin configuration and hands it to each request.
#[derive(Default)]
struct RicochetRoot {
    plugin: Option<Rc<Plugin>>,
}

impl Context for RicochetRoot {}

impl RootContext for RicochetRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            log::error!(
                "ricochet: invalid plugin configuration: it is empty; expected a JSON object with \
                 `service`, `operation` and a `policy` or a `config`"
            );
            return false;
        }
        let settings = match Settings::from_json(&bytes) {
            Ok(settings) => settings,
            Err(e) => {
                log::error!("ricochet: invalid plugin configuration: {e}");
                return false;
            }
        };
        let guards = SharedGuards::new(&settings.service, settings.breaker(), settings.budget());
        if let Some(g) = &guards {
            g.ensure();
        }
        let h = &settings.headers;
        log::info!(
            "ricochet: {}/{}: x-envoy-max-retries {}, x-envoy-retry-on `{}`, retriable statuses `{}`, circuit breaker {}, retry budget {}{}, x-envoy-attempt-count {}",
            settings.service,
            settings.operation,
            h.max_retries,
            h.retry_on,
            h.retriable_status_codes,
            if settings.breaker().is_some() { "on" } else { "off" },
            if settings.budget().is_some() { "on" } else { "off" },
            guards
                .as_ref()
                .map(|g| format!(", shared guards `{}`", g.key()))
                .unwrap_or_default(),
            if settings.attempt_count_in_response {
                "read (Envoy sets it)"
            } else {
                "ignored"
            },
        );
        self.plugin = Some(Rc::new(Plugin { settings, guards }));
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RetryFilter {
            plugin: self.plugin.clone(),
            context_id,
            started_us: 0,
            seed: 0,
            answered_locally: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request through the filter.
struct RetryFilter {
    /// `None` only if the root was never configured, when the filter passes everything through.
    plugin: Option<Rc<Plugin>>,
    context_id: u32,
    /// When the request headers arrived, in Unix µs.
    started_us: u64,
    /// The jitter seed of this request: its arrival in Unix ns, XOR its context id.
    seed: u64,
    /// The filter answered this request itself (circuit open): its response is not an outcome.
    answered_locally: bool,
}

impl Context for RetryFilter {}

impl HttpContext for RetryFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        let now_ns = now_unix_ns();
        let now_us = now_ns / 1_000;
        self.started_us = now_us;
        self.seed = now_ns ^ u64::from(self.context_id);

        let settings = &plugin.settings;
        let headers = &settings.headers;
        let mut max_retries = headers.max_retries;
        if let Some(guards) = &plugin.guards {
            let (admission, budget_allows) = guards.update(|g| {
                let admission = g.breaker.as_mut().map(|b| b.admit(now_us));
                (admission, g.budget.is_none_or(|b| b.can_retry()))
            });
            match admission {
                Some(Admission::Rejected { retry_after_us }) => {
                    self.answer_circuit_open(settings, retry_after_us);
                    return Action::Pause;
                }
                // A probe is one call: its outcome alone decides whether the circuit closes.
                Some(Admission::Probe) => max_retries = 0,
                Some(Admission::Allowed) | None => {}
            }
            if !budget_allows {
                max_retries = 0;
            }
        }
        // The filter owns these headers: whatever a client sent is replaced or removed.
        let max_retries = max_retries.to_string();
        let values: [Option<&str>; CLIENT_RETRY_HEADERS.len()] = [
            Some(max_retries.as_str()),
            non_empty(&headers.retry_on),
            non_empty(&headers.retriable_status_codes),
            headers.per_try_timeout_ms.as_deref(),
            None,
            None,
            None,
        ];
        for (name, value) in CLIENT_RETRY_HEADERS.into_iter().zip(values) {
            self.set_http_request_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        if self.answered_locally {
            return Action::Continue;
        }
        let settings = &plugin.settings;
        let policy = &settings.policy;
        let now_us = now_unix_ns() / 1_000;
        let status = self
            .response_header(":status")
            .and_then(|s| s.trim().parse::<u16>().ok());
        let category = status.and_then(|s| settings.category_of(s));
        // With `include_attempt_count_in_response`, Envoy says how many calls it made (and
        // overwrites what the upstream sent); every call before the last was retried, so it
        // ended in one of our retry-on conditions. Without it the header is the upstream's own
        // claim, and not believed.
        let attempts = if settings.attempt_count_in_response {
            self.response_header("x-envoy-attempt-count")
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(1)
                .clamp(1, policy.max_attempts())
        } else {
            1
        };

        let (seed, started_us) = (self.seed, self.started_us);
        let breaker_state = plugin.guards.as_ref().and_then(|guards| {
            guards.update(|g| {
                for _ in 1..attempts {
                    if let Some(b) = g.breaker.as_mut() {
                        b.record(false, now_us);
                    }
                    if let Some(b) = g.budget.as_mut() {
                        b.on_failure();
                    }
                }
                // The core decides what the final outcome counts as.
                let mut call = RetryState::new(seed, started_us);
                let core_guards = Guards {
                    breaker: g.breaker.as_mut(),
                    budget: g.budget.as_mut(),
                };
                match category {
                    Some(c) => {
                        let _ = call.on_failure(policy, Failure::new(c), now_us, core_guards);
                    }
                    None => call.on_success(now_us, core_guards),
                }
                g.breaker.map(|b| b.state(now_us))
            })
        });

        if status.is_some_and(|s| PUSHBACK_STATUSES.contains(&s)) {
            let existing = self.response_header("retry-after");
            let own_us = retry_after::policy_delay_us(policy, seed, breaker_state, now_us);
            if let Edit::Set(secs) = retry_after::edit(existing.as_deref(), now_us, own_us) {
                self.set_http_response_header("retry-after", Some(&secs.to_string()));
            }
        }
        Action::Continue
    }
}

impl RetryFilter {
    /// Response header `name`, if present and UTF-8. Read as bytes: the SDK's `String` getter
    /// panics on anything else, which an upstream controls.
    fn response_header(&self, name: &str) -> Option<String> {
        let bytes = self.get_http_response_header_bytes(name)?;
        std::str::from_utf8(&bytes).ok().map(str::to_string)
    }

    /// Answers 503 with the cool-down left, rounded up to whole seconds.
    fn answer_circuit_open(&mut self, settings: &Settings, retry_after_us: u64) {
        self.answered_locally = true;
        let secs = retry_after_seconds(retry_after_us).to_string();
        let body = format!(
            "circuit open for service `{}`: retry after {secs} s\n",
            settings.service
        );
        self.send_http_response(
            503,
            vec![
                ("retry-after", secs.as_str()),
                ("content-type", "text/plain"),
            ],
            Some(body.as_bytes()),
        );
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The proxy's wall clock in Unix nanoseconds (0 if it cannot be read).
fn now_unix_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}
