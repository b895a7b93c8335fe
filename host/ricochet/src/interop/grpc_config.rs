//! gRPC service config (gRPC A6 `retryPolicy` and `retryThrottling`) → ricochet policies.
//!
//! One policy per `methodConfig` name: `package.Service/Method`, `package.Service` for every
//! method of a service, `grpc-default` for the empty name (every method of the channel).
//!
//! | service config | ricochet |
//! |---|---|
//! | `retryPolicy.maxAttempts` (≥ 2) | `max_attempts` (note above 5: gRPC clients cap it at 5 unless told otherwise; ricochet does not) |
//! | `initialBackoff`, `maxBackoff`, `backoffMultiplier` | `initial_delay`, `max_delay`, `exponential_base`, `strategy: full` — A6's `random(0, min(initial·mult^(n−1), max))` is exactly ricochet's full jitter |
//! | `retryableStatusCodes` (names or numbers) | `retry_on`: each code's category ([`crate::grpc`]); `UNAVAILABLE` adds `ConnectionError` (a channel reports a failed connection as UNAVAILABLE) |
//! | `perAttemptRecvTimeout` | [`ImportedPolicy::attempt_timeout`] (a note: a policy file has no field for it) |
//! | `methodConfig.timeout` | `max_elapsed` (A6: the deadline covers every attempt) |
//! | `retryThrottling` (`maxTokens`, `tokenRatio`) | `retry_budget` on every policy (A6 throttles per server; ricochet's budget is per service); a `tokenRatio` of more than 3 decimal places is an error (A6 supports 3) |
//! | `hedgingPolicy` | an error: ricochet does not hedge |
//! | `waitForReady`, `maxRequestMessageBytes`, `maxResponseMessageBytes`, `loadBalancingConfig`, `loadBalancingPolicy`, `healthCheckConfig` | notes: not retry settings, not imported |
//!
//! As for Envoy, a code whose category holds other codes ricochet would then retry too is an
//! error when that category is not transient (`ABORTED` is a `BusinessLogicError`, like
//! `INTERNAL` and `ALREADY_EXISTS`), a note when it is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ricochet_core::budget::BudgetConfig;
use ricochet_core::{CategorySet, ErrorCategory, JitterStrategy, PartialRetryConfig, RetryConfig};

use super::envoy::core_retries;
use super::{
    duration, each_entry, policy_name, whole_number, Document, ImportErrors, Imported,
    ImportedPolicy, Node, Path, Reader,
};
use crate::grpc::{code_from_name, code_name, CODES};

/// An authentication failure the source retries like any other.
pub(crate) const AUTH_NOTE: &str = "UNAUTHENTICATED (401): ricochet retries it once, and only after a token refresh (RetryPolicy::with_token_refresh), where the source retries it like any listed failure";

/// A6's default client-side cap on `maxAttempts`.
const A6_MAX_ATTEMPTS: u64 = 5;

const NOT_RETRY: [&str; 6] = [
    "waitForReady",
    "maxRequestMessageBytes",
    "maxResponseMessageBytes",
    "loadBalancingConfig",
    "loadBalancingPolicy",
    "healthCheckConfig",
];

/// Imports the retry policies of a gRPC service config (see the [module docs](self)).
pub fn import_grpc_service_config(doc: &Document) -> Result<Imported, ImportErrors> {
    let mut reader = Reader::new(doc);
    let root = reader.root();
    let mut budget = None;
    // First the channel-wide settings; method configs need the throttling.
    let Node::Map(entries) = root.node else {
        reader.error(
            root.path(),
            format!("expected a service config map, got {}", root.node.kind()),
        );
        return reader.finish(BTreeMap::new());
    };
    for (k, v) in entries {
        let path = Path::Key(root.path(), k, v);
        match k.as_str() {
            "methodConfig" => {}
            "retryThrottling" => budget = read_throttling(&mut reader, v, &path),
            other if NOT_RETRY.contains(&other) => {
                reader.note(&path, "not a retry setting; not imported")
            }
            other => reader.error(&path, format!("unknown service config field `{other}`")),
        }
    }
    let mut policies = BTreeMap::new();
    let mut named = BTreeSet::new();
    for (k, v) in entries {
        if k != "methodConfig" {
            continue;
        }
        let path = Path::Key(root.path(), k, v);
        let Node::List(items) = v else {
            reader.error(&path, format!("expected a list, got {}", v.kind()));
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let here = Path::Index(&path, i);
            read_method_config(&mut reader, item, &here, budget, &mut named, &mut policies);
        }
    }
    if policies.is_empty() && reader.error_count() == 0 {
        reader.error(root.path(), "no methodConfig with a retryPolicy found");
    }
    reader.finish(policies)
}

fn read_throttling(reader: &mut Reader<'_>, node: &Node, at: &Path<'_>) -> Option<BudgetConfig> {
    let mut max_tokens = None;
    let mut token_ratio = None;
    let walked = each_entry(node, at, |k, v, p| match k {
        "maxTokens" => match whole_number(v) {
            Ok(n) => match u32::try_from(n) {
                Ok(tokens) => max_tokens = Some(tokens),
                Err(_) => reader.error(p, format!("{n}: A6 allows at most 1000 tokens")),
            },
            Err(e) => reader.error(p, e),
        },
        "tokenRatio" => match v {
            // A6: "Up to 3 decimal places are supported"; a client reads no more of them.
            // A number of three places is the f64 nearest to its thousandths.
            Node::Number(r) if r.is_finite() && (r * 1000.0).round() / 1000.0 != *r => reader
                .error(
                    p,
                    format!("{r}: A6 supports at most 3 decimal places in tokenRatio"),
                ),
            Node::Number(r) => token_ratio = Some(*r),
            other => reader.error(p, format!("expected a number, got {}", other.kind())),
        },
        other => reader.error(p, format!("unknown retryThrottling field `{other}`")),
    });
    if let Err(kind) = walked {
        reader.error(at, format!("expected a map, got {kind}"));
        return None;
    }
    let (Some(max_tokens), Some(token_ratio)) = (max_tokens, token_ratio) else {
        // A field that is there but wrong has its own error already.
        if node.get("maxTokens").is_none() || node.get("tokenRatio").is_none() {
            reader.error(at, "maxTokens and tokenRatio are both required");
        }
        return None;
    };
    let budget = BudgetConfig {
        max_tokens,
        token_ratio,
    };
    match budget.validate() {
        Ok(()) => Some(budget),
        Err(e) => {
            reader.error(at, e.to_string());
            None
        }
    }
}

/// The policy names of a `methodConfig.name` list.
fn names(reader: &mut Reader<'_>, node: &Node, at: &Path<'_>) -> Vec<String> {
    let Node::List(items) = node else {
        reader.error(
            at,
            format!(
                "expected a list of {{service, method}}, got {}",
                node.kind()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let here = Path::Index(at, i);
        let mut service = String::new();
        let mut method = String::new();
        let walked = each_entry(item, &here, |k, v, p| match (k, v) {
            ("service", Node::String(s)) => service = s.clone(),
            ("method", Node::String(m)) => method = m.clone(),
            ("service" | "method", other) => {
                reader.error(p, format!("expected a string, got {}", other.kind()))
            }
            (other, _) => reader.error(p, format!("unknown name field `{other}`")),
        });
        if let Err(kind) = walked {
            reader.error(&here, format!("expected a map, got {kind}"));
            continue;
        }
        let name = match (service.is_empty(), method.is_empty()) {
            (true, true) => "grpc-default".to_string(),
            (false, true) => service,
            (false, false) => format!("{service}/{method}"),
            (true, false) => {
                reader.error(
                    &here,
                    "a method without a service matches nothing (gRPC A6)",
                );
                continue;
            }
        };
        match policy_name(&name) {
            Ok(n) => out.push(n),
            Err(e) => reader.error(&here, e),
        }
    }
    out
}

/// Reads one `methodConfig`; `named` holds the names of every one before it, with a
/// `retryPolicy` or not (gRPC rejects a config that names a method twice).
fn read_method_config(
    reader: &mut Reader<'_>,
    node: &Node,
    at: &Path<'_>,
    budget: Option<BudgetConfig>,
    named: &mut BTreeSet<String>,
    policies: &mut BTreeMap<String, ImportedPolicy>,
) {
    let errors_before = reader.error_count();
    let mut method_names = Vec::new();
    let mut retry: Option<(&Node, String)> = None;
    let mut max_elapsed = None;
    let walked = each_entry(node, at, |k, v, p| match k {
        "name" => method_names = names(reader, v, p),
        "retryPolicy" => retry = Some((v, p.to_string())),
        "hedgingPolicy" => reader.error(p, "ricochet does not hedge requests"),
        "timeout" => match duration(v) {
            Ok(d) if d.is_zero() => {}
            Ok(d) => max_elapsed = Some(d.as_secs_f64()),
            Err(e) => reader.error(p, e),
        },
        other if NOT_RETRY.contains(&other) => reader.note(p, "not a retry setting; not imported"),
        other => reader.error(p, format!("unknown methodConfig field `{other}`")),
    });
    if let Err(kind) = walked {
        reader.error(at, format!("expected a map, got {kind}"));
        return;
    }
    method_names.retain(|name| {
        let first = named.insert(name.clone());
        if !first {
            reader.error(
                at,
                format!("`{name}` is named by two methodConfigs (gRPC rejects such a config)"),
            );
        }
        first
    });
    let Some((retry_node, _)) = retry else {
        reader.note(
            at,
            "no retryPolicy: these methods are not retried by gRPC; nothing imported",
        );
        return;
    };
    let retry_path = Path::Key(at, "retryPolicy", retry_node);
    let Some((config, attempt_timeout)) =
        read_retry_policy(reader, retry_node, &retry_path, max_elapsed, budget)
    else {
        return;
    };
    if reader.error_count() != errors_before {
        return;
    }
    if method_names.is_empty() {
        reader.error(at, "a methodConfig needs a `name`");
    }
    for name in method_names {
        policies.insert(
            name,
            ImportedPolicy {
                config: config.clone(),
                attempt_timeout,
                source: retry_path.to_string(),
            },
        );
    }
}

fn read_retry_policy(
    reader: &mut Reader<'_>,
    node: &Node,
    at: &Path<'_>,
    max_elapsed: Option<f64>,
    budget: Option<BudgetConfig>,
) -> Option<(PartialRetryConfig, Option<Duration>)> {
    let errors_before = reader.error_count();
    let mut config = PartialRetryConfig {
        jitter: Some(true),
        strategy: Some(JitterStrategy::Full),
        max_elapsed,
        retry_budget: budget,
        ..PartialRetryConfig::default()
    };
    let mut attempt_timeout = None;
    let mut listed = Vec::new();
    let walked = each_entry(node, at, |k, v, p| match k {
        "maxAttempts" => match whole_number(v) {
            Ok(n) if n < 2 => {
                reader.error(p, format!("{n}: A6 requires maxAttempts of at least 2"))
            }
            Ok(n) => match u32::try_from(n) {
                Ok(attempts) => {
                    if n > A6_MAX_ATTEMPTS {
                        reader.note(p, format!("{n}: gRPC clients cap maxAttempts at {A6_MAX_ATTEMPTS} unless configured otherwise; ricochet makes all {n}"));
                    }
                    config.max_attempts = Some(attempts);
                }
                Err(_) => reader.error(p, format!("{n} attempts is out of range")),
            },
            Err(e) => reader.error(p, e),
        },
        "initialBackoff" => match duration(v) {
            Ok(d) if !d.is_zero() => config.initial_delay = Some(d.as_secs_f64()),
            Ok(_) => reader.error(p, "must be greater than zero (A6)"),
            Err(e) => reader.error(p, e),
        },
        "maxBackoff" => match duration(v) {
            Ok(d) if !d.is_zero() => config.max_delay = Some(d.as_secs_f64()),
            Ok(_) => reader.error(p, "must be greater than zero (A6)"),
            Err(e) => reader.error(p, e),
        },
        "backoffMultiplier" => match v {
            Node::Number(m) if *m >= 1.0 && m.is_finite() => config.exponential_base = Some(*m),
            Node::Number(m) => reader.error(
                p,
                format!(
                    "{m}: ricochet's exponential_base must be at least 1 (a backoff that shrinks)"
                ),
            ),
            other => reader.error(p, format!("expected a number, got {}", other.kind())),
        },
        "retryableStatusCodes" => {
            let (set, codes) = read_codes(reader, v, p);
            config.retry_on = Some(set);
            listed = codes;
        }
        "perAttemptRecvTimeout" => match duration(v) {
            Ok(d) if d.is_zero() => {}
            Ok(d) => {
                attempt_timeout = Some(d);
                reader.note(p, format!("{}s: a policy file has no per-attempt timeout; give it to the RetryLayer (attempt_timeout)", d.as_secs_f64()));
            }
            Err(e) => reader.error(p, e),
        },
        other => reader.error(p, format!("unknown retryPolicy field `{other}`")),
    });
    if let Err(kind) = walked {
        reader.error(at, format!("expected a map, got {kind}"));
        return None;
    }
    // A field that is there but wrong has its own error already.
    for field in [
        "maxAttempts",
        "initialBackoff",
        "maxBackoff",
        "backoffMultiplier",
        "retryableStatusCodes",
    ] {
        if node.get(field).is_none() {
            reader.error(at, format!("{field} is required (A6)"));
        }
    }
    if reader.error_count() != errors_before {
        return None;
    }
    if listed.contains(&16) {
        reader.note(at, AUTH_NOTE);
    }
    let full = config.apply(RetryConfig::default());
    match full.validate() {
        Ok(policy) => compare(reader, at, &policy, &listed),
        Err(e) => reader.error(at, format!("the imported policy is invalid: {e}")),
    }
    (reader.error_count() == errors_before).then_some((config, attempt_timeout))
}

/// The categories of the listed codes, and the codes.
fn read_codes(reader: &mut Reader<'_>, node: &Node, at: &Path<'_>) -> (CategorySet, Vec<i32>) {
    let mut set = CategorySet::EMPTY;
    let Node::List(items) = node else {
        reader.error(at, format!("expected a list, got {}", node.kind()));
        return (set, Vec::new());
    };
    if items.is_empty() {
        reader.error(at, "must not be empty (A6)");
    }
    let mut listed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let here = Path::Index(at, i);
        let code = match item {
            Node::String(name) => code_from_name(name),
            Node::Number(n) if n.fract() == 0.0 => code_name(*n as i32).map(|_| *n as i32),
            _ => None,
        };
        match code {
            Some(0) => reader.error(&here, "OK is not a failure"),
            Some(code) => {
                listed.push(code);
                if let Some(c) = crate::grpc::code_category(code) {
                    set = set.with(c);
                }
                if code == 14 {
                    set = set.with(ErrorCategory::Connection);
                }
            }
            None => reader.error(&here, format!("{item:?} is not a gRPC status code (names as in google.rpc.Code, e.g. UNAVAILABLE)")),
        }
    }
    (set, listed)
}

/// Errors and notes for the codes ricochet would retry that the config did not list.
fn compare(reader: &mut Reader<'_>, at: &Path<'_>, policy: &ricochet_core::Policy, listed: &[i32]) {
    let mut more_final: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    let mut more_transient = Vec::new();
    for (name, code, category) in CODES {
        let Some(c) = category else { continue };
        if core_retries(policy, c) && !listed.contains(&code) {
            if c.retryable_by_default() {
                more_transient.push(name);
            } else {
                more_final.entry(c.name()).or_default().push(name);
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
        reader.note(
            at,
            format!(
                "ricochet also retries {} (not listed)",
                more_transient.join(", ")
            ),
        );
    }
}
