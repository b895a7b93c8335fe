//! Envoy route `retry_policy` ↔ ricochet policy.
//!
//! # Import
//!
//! The document may be a whole bootstrap, a `RouteConfiguration`, a virtual host, a route, or a
//! bare `retry_policy`. Every `retry_policy` found becomes a policy, named after its virtual host
//! and route (`<vhost>/<route name>`, or the route's match, or its index); a route's `timeout`
//! (the whole request, retries included) becomes `max_elapsed`.
//!
//! | Envoy | ricochet |
//! |---|---|
//! | `num_retries` (default 1) | `max_attempts` = `num_retries` + 1 |
//! | `retry_back_off.base_interval` / `max_interval` (default 25 ms / 10 × base) | `initial_delay` / `max_delay`, `exponential_base: 2`, `strategy: full` (note: Envoy's bound for retry *n* is `(2^n − 1)·base`, ricochet's `base·2^(n−1)`) |
//! | `rate_limited_retry_back_off.max_interval` (default 300 s) | `max_retry_after` (note: Envoy then falls back to its backoff, ricochet gives up); without a `rate_limited_retry_back_off`, ricochet's 60 s stays (a note: Envoy ignores `Retry-After` then) |
//! | `rate_limited_retry_back_off.reset_headers` | `Retry-After` (`SECONDS`), `X-RateLimit-Reset` (`UNIX_TIMESTAMP`) and `RateLimit-Reset` (`SECONDS`) are what ricochet reads anyway; any other header is an error |
//! | `retry_on`, `retriable_status_codes` | `retry_on` categories (below) |
//! | `per_try_timeout` | [`ImportedPolicy::attempt_timeout`] (a note: a policy file has no field for it) |
//! | route `timeout` | `max_elapsed` (`0s`: none) |
//! | `retry_host_predicate`, `retry_priority`, `host_selection_retry_max_attempts`, `retriable_headers`, `retriable_request_headers`, `retry_options_predicates`, `per_try_idle_timeout`, a route's or virtual host's `hedge_policy`, `retry_policy_typed_config` | errors: ricochet has no such thing |
//!
//! `retry_on` conditions: `5xx` → `ServiceUnavailableError`, `ConnectionError`,
//! `TimeoutError` (the 5xx ricochet does not retry — 501, 505, 507, 511, 599, … — are a note); `gateway-error` → `ServiceUnavailableError`, `TimeoutError`; `reset` →
//! `ConnectionError`, `TimeoutError`; `connect-failure`, `refused-stream`,
//! `reset-before-request`, `http3-post-connect-failure` → `ConnectionError`;
//! `retriable-4xx` (409) and `retriable-status-codes` → the category of each status
//! ([`http_status_category`]); `envoy-ratelimited` → `RateLimited`; the gRPC conditions
//! (`cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`) → the
//! category of the code ([`crate::grpc`]). `retriable-headers` is an error. The statuses and
//! codes ricochet then retries are compared with the ones Envoy would: fewer, or more transient
//! ones, are notes; more non-transient ones an error.
//!
//! # Export
//!
//! [`export_envoy`] writes the `retry_policy` for a route that runs the ricochet Envoy filter
//! (`guests/envoy-filter`): the filter sets `x-envoy-max-retries` and `x-envoy-retry-on` per
//! request, from the same policy, and keeps the breaker and the budget; the route carries what
//! Envoy cannot take per request — its backoff and its rate-limited backoff — and the same
//! conditions as the filter's headers, so the route retries by the policy even without them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ricochet_core::{
    CategorySet, Decision, ErrorCategory, Failure, GiveUpReason, Guards, JitterStrategy,
    PartialRetryConfig, Policy, RetryConfig, RetryState,
};

use super::{
    duration, each_entry, policy_name, whole_number, Document, ImportErrors, Imported,
    ImportedPolicy, Node, Note, Path, Reader,
};
use crate::classify::http_status_category;
use crate::grpc::CODES;

/// Envoy's defaults (`config.route.v3.RetryPolicy`).
const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);
const DEFAULT_RATE_LIMITED_MAX: Duration = Duration::from_secs(300);

/// Fields that name something ricochet does not have.
const UNSUPPORTED: [(&str, &str); 8] = [
    ("retry_host_predicate", "ricochet does not choose hosts"),
    ("retry_priority", "ricochet does not choose priorities"),
    (
        "host_selection_retry_max_attempts",
        "ricochet does not choose hosts",
    ),
    (
        "retriable_headers",
        "ricochet does not retry on response header matches",
    ),
    (
        "retriable_request_headers",
        "ricochet does not select requests by header",
    ),
    (
        "retry_options_predicates",
        "ricochet has no retry option predicates",
    ),
    (
        "per_try_idle_timeout",
        "ricochet has no per-attempt idle timeout (only `per_try_timeout`)",
    ),
    (
        "retry_policy_typed_config",
        "ricochet reads only the typed `retry_policy`",
    ),
];

/// The gRPC conditions Envoy knows, and their codes.
const GRPC_CONDITIONS: [(&str, &str); 5] = [
    ("cancelled", "CANCELLED"),
    ("deadline-exceeded", "DEADLINE_EXCEEDED"),
    ("internal", "INTERNAL"),
    ("resource-exhausted", "RESOURCE_EXHAUSTED"),
    ("unavailable", "UNAVAILABLE"),
];

/// Imports every `retry_policy` of an Envoy document (see the [module docs](self)).
pub fn import_envoy(doc: &Document) -> Result<Imported, ImportErrors> {
    let mut reader = Reader::new(doc);
    let mut policies = BTreeMap::new();
    let root = reader.root();
    let looks_bare = matches!(root.node, Node::Map(entries) if entries.iter().any(|(k, _)| {
        matches!(k.as_str(), "retry_on" | "num_retries" | "retry_back_off" | "per_try_timeout" | "retriable_status_codes")
    }));
    if looks_bare {
        if let Some(p) = read_retry_policy(&mut reader, root.node, root.path(), None) {
            policies.insert("envoy".to_string(), p);
        }
    } else {
        let mut found = Vec::new();
        walk(
            root.node,
            root.path(),
            &Scope::default(),
            &mut reader,
            &mut found,
        );
        // The next suffix of each name, so that a thousand routes of one name do not each
        // try every suffix before theirs.
        let mut next: BTreeMap<String, usize> = BTreeMap::new();
        for (name, policy) in found {
            let n = next.entry(name.clone()).or_insert(1);
            let mut unique = name.clone();
            while policies.contains_key(&unique) {
                *n += 1;
                unique = format!("{name}#{n}");
            }
            policies.insert(unique, policy);
        }
        if policies.is_empty() && reader.error_count() == 0 {
            reader.error(root.path(), "no `retry_policy` found in this document");
        }
    }
    reader.finish(policies)
}

/// Where in the route tree the walk is.
#[derive(Default, Clone)]
struct Scope {
    vhost: Option<String>,
    route: Option<String>,
}

fn is_vhost(node: &Node) -> bool {
    node.get("domains").is_some() || node.get("routes").is_some()
}

/// A route's label: its name, else its match, else its index.
fn route_label(route: &Node, path: &Path<'_>) -> String {
    if let Some(Node::String(name)) = route.get("name") {
        return name.clone();
    }
    if let Some(m) = route.get("match") {
        for key in ["prefix", "path", "path_separated_prefix"] {
            if let Some(Node::String(p)) = m.get(key) {
                return p.clone();
            }
        }
    }
    match path {
        Path::Index(_, i) => format!("route{i}"),
        _ => "route".into(),
    }
}

fn walk(
    node: &Node,
    path: &Path<'_>,
    scope: &Scope,
    reader: &mut Reader<'_>,
    found: &mut Vec<(String, ImportedPolicy)>,
) {
    match node {
        Node::List(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &Path::Index(path, i), scope, reader, found);
            }
        }
        Node::Map(entries) => {
            let mut inner = scope.clone();
            if is_vhost(node) {
                if let Some(Node::String(name)) = node.get("name") {
                    inner.vhost = Some(name.clone());
                }
                inner.route = None;
            } else if node.get("match").is_some() {
                inner.route = Some(route_label(node, path));
            }
            for (k, v) in entries {
                let here = Path::Key(path, k, v);
                match k.as_str() {
                    "hedge_policy" => reader.error(&here, "ricochet does not hedge requests"),
                    "retry_policy_typed_config" => {
                        reader.error(&here, "ricochet reads only the typed `retry_policy`")
                    }
                    "retry_policy" => {
                        let vhost = inner.vhost.clone().unwrap_or_else(|| "routes".into());
                        // A virtual host's policy is named after it; a route action's after
                        // its virtual host and route, and its `timeout` bounds the whole call.
                        let (name, timeout) = match (&inner.route, is_vhost(node)) {
                            (Some(route), false) => {
                                (format!("{vhost}/{route}"), node.get("timeout"))
                            }
                            _ => (vhost, None),
                        };
                        if let Some(p) = read_retry_policy(reader, v, &here, timeout) {
                            match policy_name(&name) {
                                Ok(name) => found.push((name, p)),
                                Err(e) => reader.error(&here, e),
                            }
                        }
                    }
                    _ => walk(v, &here, &inner, reader, found),
                }
            }
        }
        _ => {}
    }
}

/// Reads one `retry_policy` map.
fn read_retry_policy(
    reader: &mut Reader<'_>,
    node: &Node,
    at: &Path<'_>,
    route_timeout: Option<&Node>,
) -> Option<ImportedPolicy> {
    let errors_before = reader.error_count();
    let mut config = PartialRetryConfig {
        max_attempts: Some(2),
        initial_delay: Some(DEFAULT_BASE_INTERVAL.as_secs_f64()),
        max_delay: Some((DEFAULT_BASE_INTERVAL * 10).as_secs_f64()),
        exponential_base: Some(2.0),
        jitter: Some(true),
        strategy: Some(JitterStrategy::Full),
        ..PartialRetryConfig::default()
    };
    let mut attempt_timeout = None;
    let mut conditions: Option<(String, &Node)> = None;
    let mut codes: Option<&Node> = None;
    let mut notes = Vec::new();
    let mut saw_backoff = false;
    let mut saw_rate_limited = false;
    let walked = each_entry(node, at, |key, value, path| {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
            reader.error(path, format!("cannot be imported: {why}"));
            return;
        }
        match key {
            "retry_on" => match value {
                Node::String(s) => conditions = Some((s.clone(), value)),
                other => reader.error(
                    path,
                    format!("expected a comma-separated string, got {}", other.kind()),
                ),
            },
            "num_retries" => match whole_number(value) {
                Ok(n) if n < u64::from(u32::MAX) => config.max_attempts = Some(n as u32 + 1),
                Ok(n) => reader.error(path, format!("{n} retries is out of range")),
                Err(e) => reader.error(path, e),
            },
            "per_try_timeout" => match duration(value) {
                Ok(d) if d.is_zero() => {}
                Ok(d) => attempt_timeout = Some(d),
                Err(e) => reader.error(path, e),
            },
            "retriable_status_codes" => codes = Some(value),
            "retry_back_off" => {
                saw_backoff = true;
                let mut base = None;
                let mut max = None;
                let inner = each_entry(value, path, |k, v, p| match k {
                    "base_interval" => match duration(v) {
                        Ok(d) if !d.is_zero() => base = Some(d),
                        Ok(_) => reader.error(p, "must be greater than zero"),
                        Err(e) => reader.error(p, e),
                    },
                    "max_interval" => match duration(v) {
                        Ok(d) => max = Some(d),
                        Err(e) => reader.error(p, e),
                    },
                    other => reader.error(p, format!("unknown field `{other}`")),
                });
                if let Err(kind) = inner {
                    reader.error(path, format!("expected a map, got {kind}"));
                }
                match base {
                    Some(base) => {
                        let max = max.unwrap_or(base * 10);
                        if max < base {
                            reader.error(
                                path,
                                format!(
                                    "max_interval {}s is below base_interval {}s",
                                    max.as_secs_f64(),
                                    base.as_secs_f64()
                                ),
                            );
                        }
                        config.initial_delay = Some(base.as_secs_f64());
                        config.max_delay = Some(max.as_secs_f64());
                    }
                    None if inner.is_ok() => reader.error(path, "base_interval is required"),
                    None => {}
                }
            }
            "rate_limited_retry_back_off" => {
                saw_rate_limited = true;
                let mut max = DEFAULT_RATE_LIMITED_MAX;
                let inner = each_entry(value, path, |k, v, p| match k {
                    "max_interval" => match duration(v) {
                        Ok(d) => max = d,
                        Err(e) => reader.error(p, e),
                    },
                    "reset_headers" => read_reset_headers(reader, v, p),
                    other => reader.error(p, format!("unknown field `{other}`")),
                });
                if let Err(kind) = inner {
                    reader.error(path, format!("expected a map, got {kind}"));
                }
                config.max_retry_after = Some(max.as_secs_f64());
                notes.push((path_string(path), format!(
                    "a reset header longer than {}s: Envoy discards it and backs off as usual; ricochet gives up (max_retry_after)",
                    max.as_secs_f64()
                )));
            }
            other => reader.error(path, format!("unknown retry_policy field `{other}`")),
        }
    });
    if let Err(kind) = walked {
        reader.error(at, format!("expected a retry_policy map, got {kind}"));
        return None;
    }
    if let Some(timeout) = route_timeout {
        match duration(timeout) {
            Ok(d) if d.is_zero() => {}
            Ok(d) => config.max_elapsed = Some(d.as_secs_f64()),
            Err(e) => reader.error(at, format!("the route's timeout: {e}")),
        }
    }
    if !saw_backoff {
        notes.push((
            path_string(at),
            "no retry_back_off: Envoy's defaults, 25 ms and 250 ms".into(),
        ));
    }
    if !saw_rate_limited {
        notes.push((path_string(at), "no rate_limited_retry_back_off: Envoy ignores Retry-After here; ricochet honours Retry-After and X-RateLimit-Reset on 429 and 503, up to max_retry_after (60 s by default)".into()));
    }
    notes.push((path_string(at), "Envoy's full-jitter bound before retry n is (2^n − 1)·base_interval; ricochet's is base_interval·2^(n−1)".into()));
    if let Some(t) = attempt_timeout {
        notes.push((path_string(at), format!("per_try_timeout {}s: a policy file has no per-attempt timeout; give it to the RetryLayer or RetryMiddleware (attempt_timeout) or to `ricochet run --attempt-timeout`", t.as_secs_f64())));
    }
    let retry_on = read_conditions(reader, at, conditions, codes, &config);
    config.retry_on = Some(retry_on);
    if reader.error_count() == errors_before {
        if let Err(e) = config.apply(RetryConfig::default()).validate() {
            reader.error(at, format!("the imported policy is invalid: {e}"));
        }
    }
    for (path, message) in notes {
        reader.notes.push(Note { path, message });
    }
    (reader.error_count() == errors_before).then(|| ImportedPolicy {
        config,
        attempt_timeout,
        source: path_string(at),
    })
}

fn path_string(path: &Path<'_>) -> String {
    path.to_string()
}

fn read_reset_headers(reader: &mut Reader<'_>, node: &Node, at: &Path<'_>) {
    let Node::List(items) = node else {
        reader.error(at, format!("expected a list, got {}", node.kind()));
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let here = Path::Index(at, i);
        let name = match item.get("name") {
            Some(Node::String(n)) => n.to_ascii_lowercase(),
            _ => {
                reader.error(&here, "a reset header needs a `name`");
                continue;
            }
        };
        let format = match item.get("format") {
            Some(Node::String(f)) => f.clone(),
            None => "SECONDS".into(),
            Some(other) => {
                reader.error(&here, format!("format is {}", other.kind()));
                continue;
            }
        };
        let known = matches!(
            (name.as_str(), format.as_str()),
            ("retry-after", "SECONDS")
                | ("x-ratelimit-reset", "UNIX_TIMESTAMP")
                | ("ratelimit-reset", "SECONDS")
        );
        if !known {
            reader.error(&here, format!(
                "reset header `{name}` ({format}): ricochet reads Retry-After (SECONDS), X-RateLimit-Reset (UNIX_TIMESTAMP) and RateLimit-Reset (SECONDS) only"
            ));
        }
    }
}

/// What an Envoy route would retry: statuses, gRPC codes, transport failures.
struct EnvoyRetries {
    statuses: BTreeSet<u16>,
    codes: BTreeSet<i32>,
    grpc: bool,
    categories: CategorySet,
}

fn read_conditions(
    reader: &mut Reader<'_>,
    at: &Path<'_>,
    conditions: Option<(String, &Node)>,
    codes: Option<&Node>,
    config: &PartialRetryConfig,
) -> CategorySet {
    let mut wants = EnvoyRetries {
        statuses: BTreeSet::new(),
        codes: BTreeSet::new(),
        grpc: false,
        categories: CategorySet::EMPTY,
    };
    let mut status_list = false;
    let conditions_node = conditions.as_ref().map(|(_, n)| *n);
    let list = conditions.as_ref().map(|(s, _)| s.as_str()).unwrap_or("");
    // `at.retry_on` for errors about a condition.
    let cond_path_storage;
    let cond_path: &Path<'_> = match conditions_node {
        Some(n) => {
            cond_path_storage = Path::Key(at, "retry_on", n);
            &cond_path_storage
        }
        None => at,
    };
    use ErrorCategory as C;
    // Statuses named one by one (`retriable_status_codes`), and whether `5xx` was given.
    let (mut listed, mut any_5xx) = (BTreeSet::new(), false);
    for condition in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match condition {
            "5xx" => {
                // Compared with what ricochet retries, but not every one adds its category:
                // a 501 or a 599 is an answer no retry changes (`classify`), and adding
                // Validation or BusinessLogic for it would retry 4xx too. Those are a note.
                wants.statuses.extend(500..=599);
                any_5xx = true;
                add(
                    &mut wants.categories,
                    &[C::ServiceUnavailable, C::Connection, C::Timeout],
                );
            }
            "gateway-error" => {
                wants.statuses.extend([502, 503, 504]);
                add(&mut wants.categories, &[C::ServiceUnavailable, C::Timeout]);
            }
            "reset" => add(&mut wants.categories, &[C::Connection, C::Timeout]),
            "connect-failure"
            | "refused-stream"
            | "reset-before-request"
            | "http3-post-connect-failure" => add(&mut wants.categories, &[C::Connection]),
            "retriable-4xx" => {
                wants.statuses.insert(409);
            }
            "retriable-status-codes" => status_list = true,
            "envoy-ratelimited" => {
                wants.statuses.insert(429);
            }
            "retriable-headers" => reader.error(
                cond_path,
                "`retriable-headers`: ricochet does not retry on response header matches",
            ),
            other => match GRPC_CONDITIONS.iter().find(|(c, _)| *c == other) {
                Some((_, code)) => {
                    wants.grpc = true;
                    if let Some(n) = crate::grpc::code_from_name(code) {
                        wants.codes.insert(n);
                    }
                }
                None => reader.error(cond_path, format!("unknown retry_on condition `{other}`")),
            },
        }
    }
    if let Some(node) = codes {
        let codes_path = Path::Key(at, "retriable_status_codes", node);
        if !status_list {
            reader.note(&codes_path, "listed, but retry_on lacks `retriable-status-codes`: Envoy ignores them, and so does this import");
        }
        match node {
            Node::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    match whole_number(item) {
                        Ok(s) if (100..=599).contains(&s) => {
                            if status_list {
                                wants.statuses.insert(s as u16);
                                listed.insert(s as u16);
                            }
                        }
                        Ok(s) => reader.error(
                            &Path::Index(&codes_path, i),
                            format!("{s} is not an HTTP status"),
                        ),
                        Err(e) => reader.error(&Path::Index(&codes_path, i), e),
                    }
                }
            }
            other => reader.error(
                &codes_path,
                format!("expected a list, got {}", other.kind()),
            ),
        }
    }
    for &s in &wants.statuses {
        let c = http_status_category(s);
        let only_by_5xx = any_5xx
            && (500..=599).contains(&s)
            && !(c.retryable_by_default() || c == C::RateLimited)
            && !listed.contains(&s);
        if s >= 400 && !only_by_5xx {
            wants.categories = wants.categories.with(c);
        }
    }
    for &code in &wants.codes {
        if let Some(c) = crate::grpc::code_category(code) {
            wants.categories = wants.categories.with(c);
            // A gRPC channel reports a failed connection as UNAVAILABLE.
            if code == 14 {
                wants.categories = wants.categories.with(C::Connection);
            }
        }
    }
    if list.trim().is_empty() {
        reader.note(
            at,
            "no retry_on: Envoy retries nothing here; ricochet still retries 429 (RateLimited)",
        );
    }
    compare(reader, cond_path, &wants, config);
    wants.categories
}

fn add(set: &mut CategorySet, categories: &[ErrorCategory]) {
    for &c in categories {
        *set = set.with(c);
    }
}

/// Whether the core would retry a first failure of `category` under `policy` (an expired
/// token counts as retried: the executor may refresh it).
pub(crate) fn core_retries(policy: &Policy, category: ErrorCategory) -> bool {
    let failure = Failure {
        category,
        server_delay_us: None,
        token_refreshed: false,
    };
    RetryState::new(0, 0).on_failure(policy, failure, 0, Guards::none())
        != Decision::GiveUp {
            reason: GiveUpReason::NonRetryable,
        }
}

/// Notes (and errors) for what ricochet retries that Envoy would not, and the reverse.
fn compare(
    reader: &mut Reader<'_>,
    at: &Path<'_>,
    wants: &EnvoyRetries,
    config: &PartialRetryConfig,
) {
    let full = PartialRetryConfig {
        retry_on: Some(wants.categories),
        ..config.clone()
    }
    .apply(RetryConfig::default());
    let Ok(policy) = full.validate() else {
        return; // the field errors are reported where they were read
    };
    let retried = |c: ErrorCategory| core_retries(&policy, c);
    let mut more_transient = Vec::new();
    let mut more_final: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    if wants.statuses.contains(&401) || wants.codes.contains(&16) {
        reader.note(at, super::grpc_config::AUTH_NOTE);
    }
    // Envoy retries any status it is given; below 400 ricochet sees a success.
    let mut fewer: Vec<String> = wants
        .statuses
        .range(..400)
        .map(|s| format!("{s} (a success to ricochet)"))
        .collect();
    for s in 400u16..=599 {
        let c = http_status_category(s);
        match (retried(c), wants.statuses.contains(&s)) {
            (true, false) if c.retryable_by_default() || c == ErrorCategory::RateLimited => {
                more_transient.push(s.to_string())
            }
            (true, false) => more_final.entry(c.name()).or_default().push(s.to_string()),
            (false, true) => fewer.push(format!("{s} ({})", c.name())),
            _ => {}
        }
    }
    if wants.grpc {
        for (name, code, category) in CODES {
            let Some(c) = category else { continue };
            match (retried(c), wants.codes.contains(&code)) {
                (true, false) if c.retryable_by_default() => more_transient.push(name.to_string()),
                (true, false) => more_final
                    .entry(c.name())
                    .or_default()
                    .push(name.to_string()),
                (false, true) => fewer.push(format!("{name} ({})", c.name())),
                _ => {}
            }
        }
    }
    for (category, extra) in more_final {
        reader.error(at, format!(
            "ricochet retries whole categories, and retrying these {category}s would also retry {}: list them all, or leave the category out",
            super::some_of(&extra, 8)
        ));
    }
    if !more_transient.is_empty() {
        reader.note(at, format!(
            "ricochet also retries these transient failures, which Envoy's conditions here do not: {}",
            super::some_of(&more_transient, 12)
        ));
    }
    if !fewer.is_empty() {
        reader.note(
            at,
            format!(
                "Envoy retries these, ricochet does not (their categories are not retried): {}",
                super::some_of(&fewer, 12)
            ),
        );
    }
}

/// An Envoy `retry_policy` made from a ricochet policy, and where it is not exact.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyExport {
    /// The `retry_policy` object (protobuf JSON mapping; serialize as YAML or JSON).
    pub retry_policy: serde_json::Value,
    /// Where Envoy's retry policy says less than the ricochet policy.
    pub notes: Vec<Note>,
}

impl EnvoyExport {
    /// The same, or the notes as errors.
    pub fn strict(self) -> Result<Self, ImportErrors> {
        Imported {
            policies: BTreeMap::new(),
            notes: self.notes.clone(),
        }
        .strict()
        .map(|_| self)
    }
}

fn seconds(d: f64) -> String {
    // Protobuf JSON durations: decimal seconds with an `s`, no exponent, to the nanosecond.
    // A positive value is never written as `0s`, which Envoy reads as "none" (a per-try
    // timeout) or refuses (a base interval).
    let d = if d > 0.0 { d.max(1e-9) } else { d };
    let mut s = format!("{d:.9}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    format!("{s}s")
}

/// The Envoy `retry_policy` for `config` on a route that runs the ricochet filter (see the
/// [module docs](self)); `attempt_timeout` becomes `per_try_timeout`.
pub fn export_envoy(
    config: &RetryConfig,
    attempt_timeout: Option<Duration>,
) -> Result<EnvoyExport, ImportErrors> {
    let fail = |path: &str, message: String| {
        ImportErrors(vec![super::ImportError {
            file: None,
            line: None,
            path: path.into(),
            message,
        }])
    };
    let policy = config
        .validate()
        .map_err(|e| fail(e.field(), e.to_string()))?;
    if config.initial_delay <= 0.0 {
        return Err(fail(
            "initial_delay",
            "0: Envoy's retry_back_off.base_interval must be greater than zero".into(),
        ));
    }
    let retried = |c: ErrorCategory| core_retries(&policy, c);
    let mut conditions: Vec<&str> = Vec::new();
    let mut push = |c: &'static str| {
        if !conditions.contains(&c) {
            conditions.push(c);
        }
    };
    // The filter's mapping (guests/envoy-filter, retry_headers.rs): a connection failure is
    // connect-failure, refused-stream and reset; a timeout is Envoy's "no response", reset.
    if retried(ErrorCategory::Connection) {
        push("connect-failure");
        push("refused-stream");
        push("reset");
    }
    if retried(ErrorCategory::Timeout) {
        push("reset");
    }
    let statuses: Vec<u16> = (400u16..=599)
        .filter(|&s| retried(http_status_category(s)))
        .collect();
    if !statuses.is_empty() {
        push("retriable-status-codes");
    }
    let mut notes = Vec::new();
    let mut unexpressed = Vec::new();
    for (name, code, category) in CODES {
        let Some(c) = category else { continue };
        if !retried(c) {
            continue;
        }
        match GRPC_CONDITIONS.iter().find(|(_, n)| *n == name) {
            Some((condition, _)) => push(condition),
            None => unexpressed.push(name),
        }
        let _ = code;
    }
    if !unexpressed.is_empty() {
        notes.push(note(
            "retry_on",
            format!(
                "Envoy has no retry condition for gRPC {}: a gRPC route does not retry them",
                unexpressed.join(", ")
            ),
        ));
    }
    if retried(ErrorCategory::AuthExpired) || config.retry_on.contains(ErrorCategory::AuthExpired) {
        notes.push(note(
            "retry_on",
            "AuthExpired: Envoy cannot refresh a token, so 401 is not retried".into(),
        ));
    }
    let max_retries = if conditions.is_empty() {
        0
    } else {
        policy.max_attempts() - 1
    };
    let mut retry_policy = serde_json::json!({
        "retry_on": conditions.join(","),
        "num_retries": max_retries,
        "retry_back_off": {
            "base_interval": seconds(config.initial_delay),
            "max_interval": seconds(config.max_delay),
        },
        "rate_limited_retry_back_off": {
            "reset_headers": [
                {"name": "retry-after", "format": "SECONDS"},
                {"name": "x-ratelimit-reset", "format": "UNIX_TIMESTAMP"},
            ],
            "max_interval": seconds(config.max_retry_after),
        },
    });
    if !statuses.is_empty() {
        retry_policy["retriable_status_codes"] = serde_json::json!(statuses);
    }
    if let Some(t) = attempt_timeout {
        retry_policy["per_try_timeout"] = serde_json::json!(seconds(t.as_secs_f64()));
    }
    if config.exponential_base != 2.0 {
        notes.push(note(
            "exponential_base",
            format!(
                "{}: Envoy's back-off always doubles",
                config.exponential_base
            ),
        ));
    }
    if policy.strategy() != JitterStrategy::Full {
        notes.push(note(
            "strategy",
            format!(
                "{}: Envoy always uses full jitter, bounded by (2^n − 1)·base_interval",
                policy.strategy().name()
            ),
        ));
    }
    if config.coordination_enabled {
        notes.push(note(
            "coordination_enabled",
            "Envoy has no retry slots: its retries are not coordinated".into(),
        ));
    }
    if let Some(m) = config.max_elapsed {
        notes.push(note(
            "max_elapsed",
            format!(
                "{m}s: not part of retry_policy; set the route's `timeout: {}`",
                seconds(m)
            ),
        ));
    }
    notes.push(note(
        "max_retry_after",
        format!(
            "{}s: a longer reset header makes Envoy back off as usual, where ricochet gives up",
            config.max_retry_after
        ),
    ));
    if config.circuit_breaker.is_some() || config.retry_budget.is_some() {
        notes.push(note("circuit_breaker / retry_budget", "not part of Envoy's retry_policy: the ricochet filter keeps them (give it the same policy)".into()));
    }
    Ok(EnvoyExport {
        retry_policy,
        notes,
    })
}

fn note(path: &str, message: String) -> Note {
    Note {
        path: path.into(),
        message,
    }
}
