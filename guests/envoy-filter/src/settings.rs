//! The plugin configuration: a ricochet policy in JSON, validated once by `ricochet-core`.
//!
//! ```json
//! {
//!   "service": "payments",
//!   "operation": "charge",
//!   "policy": "aggressive",
//!   "config": { "max_attempts": 4, "retry_on": ["ConnectionError", "RateLimited"] },
//!   "statuses": { "429": "RateLimited", "503": "ServiceUnavailableError" },
//!   "attempt_timeout_ms": 250,
//!   "include_attempt_count_in_response": true,
//!   "circuit_breaker": { "failure_threshold": 5, "failure_rate": 0.5, "minimum_calls": 20,
//!                        "window": 10, "cool_down": 30, "half_open_probes": 1 },
//!   "retry_budget": { "max_tokens": 10, "token_ratio": 0.1 }
//! }
//! ```
//!
//! `config` is the schema of one entry of a ricochet policy file (core's [`PartialRetryConfig`]):
//! it starts from the preset named by `policy` (or by its own `extends`; `default` when neither is
//! given) and replaces the fields it sets. `circuit_breaker` and `retry_budget` may be given at the
//! top level or inside `config`, not both. `statuses` maps upstream status codes to core's error
//! categories; without it, 429 is `RateLimited` and 502, 503 and 504 are
//! `ServiceUnavailableError`. Every other status is a success. `include_attempt_count_in_response`
//! says that the route (or virtual host) has Envoy's setting of that name on, so that the
//! `x-envoy-attempt-count` of a response is Envoy's count; without it (the default) the header
//! could be the upstream's own and is ignored.
//!
//! Nothing is half-configured: a JSON type error, an unknown field, an unknown preset or a value
//! `RetryConfig::validate` rejects fails the whole configuration, with a message that names the
//! field (`config.jitter_factor`, `statuses.5O3`, …).

use std::collections::BTreeMap;
use std::fmt;
use std::string::String;
use std::vec::Vec;

use ricochet_core::breaker::{BreakerConfig, BreakerPolicy};
use ricochet_core::budget::BudgetConfig;
use ricochet_core::{ErrorCategory, PartialRetryConfig, Policy, RetryConfig};
use serde::Deserialize;

use crate::retry_headers::RetryHeaders;

/// The plugin configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    service: String,
    operation: String,
    policy: Option<String>,
    config: Option<PartialRetryConfig>,
    statuses: Option<BTreeMap<String, ErrorCategory>>,
    attempt_timeout_ms: Option<u64>,
    include_attempt_count_in_response: Option<bool>,
    circuit_breaker: Option<BreakerConfig>,
    retry_budget: Option<BudgetConfig>,
}

/// A validated plugin configuration, with the request headers it implies worked out once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The upstream service: names the shared breaker and budget.
    pub service: String,
    /// The operation, for logs.
    pub operation: String,
    /// The validated policy.
    pub policy: Policy,
    /// Upstream status → category, sorted by status.
    pub statuses: Vec<(u16, ErrorCategory)>,
    /// The values of the `x-envoy-*` request headers.
    pub headers: RetryHeaders,
    /// Whether Envoy sets `x-envoy-attempt-count` on responses (its
    /// `include_attempt_count_in_response`), so the filter may believe it.
    pub attempt_count_in_response: bool,
}

/// The statuses used when the configuration gives none.
const DEFAULT_STATUSES: [(u16, ErrorCategory); 4] = [
    (429, ErrorCategory::RateLimited),
    (502, ErrorCategory::ServiceUnavailable),
    (503, ErrorCategory::ServiceUnavailable),
    (504, ErrorCategory::ServiceUnavailable),
];

impl Settings {
    /// Reads and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SettingsError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw: RawSettings = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            SettingsError {
                field: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })?;
        de.end()
            .map_err(|e| SettingsError::new("", e.to_string()))?;
        raw.resolve()
    }

    /// The category an upstream status counts as, if it is mapped.
    pub fn category_of(&self, status: u16) -> Option<ErrorCategory> {
        self.statuses
            .binary_search_by_key(&status, |&(s, _)| s)
            .ok()
            .map(|i| self.statuses[i].1)
    }

    /// The circuit breaker settings, if one is configured.
    pub fn breaker(&self) -> Option<BreakerPolicy> {
        self.policy.breaker()
    }

    /// The retry budget settings, if one is configured.
    pub fn budget(&self) -> Option<BudgetConfig> {
        self.policy.budget()
    }
}

impl RawSettings {
    fn resolve(self) -> Result<Settings, SettingsError> {
        if self.service.is_empty() {
            return Err(SettingsError::new("service", "service must not be empty"));
        }
        let partial = self.config.unwrap_or_default();
        let base_name = match (self.policy.as_deref(), partial.extends.as_deref()) {
            (Some(p), Some(e)) if p != e => {
                return Err(SettingsError::new(
                    "config.extends",
                    format!("config.extends names `{e}` but policy names `{p}`: give one"),
                ))
            }
            (Some(name), _) => (name, "policy"),
            (None, Some(name)) => (name, "config.extends"),
            (None, None) => ("default", "policy"),
        };
        let base = RetryConfig::preset(base_name.0).ok_or_else(|| {
            SettingsError::new(
                base_name.1,
                format!(
                    "unknown preset `{}`, expected one of {}",
                    base_name.0,
                    RetryConfig::PRESET_NAMES.join(", ")
                ),
            )
        })?;
        let mut config = partial.apply(base);
        if let Some(b) = self.circuit_breaker {
            if partial.circuit_breaker.is_some() {
                return Err(both_places("circuit_breaker"));
            }
            config.circuit_breaker = Some(b);
        }
        if let Some(b) = self.retry_budget {
            if partial.retry_budget.is_some() {
                return Err(both_places("retry_budget"));
            }
            config.retry_budget = Some(b);
        }
        let policy = config.validate().map_err(|e| {
            let field = e.field();
            // Breaker and budget errors already carry their section in the field name.
            let field = if field.contains('.') {
                field.to_string()
            } else {
                format!("config.{field}")
            };
            SettingsError::new(&field, e.to_string())
        })?;

        let statuses = match self.statuses {
            None => DEFAULT_STATUSES.to_vec(),
            Some(map) => {
                let mut statuses = Vec::with_capacity(map.len());
                for (key, category) in map {
                    let status = key
                        .parse::<u16>()
                        .ok()
                        .filter(|s| (100..=599).contains(s) && key.len() == 3)
                        .ok_or_else(|| {
                            SettingsError::new(
                                &format!("statuses.{key}"),
                                format!("`{key}` is not an HTTP status code (100 to 599)"),
                            )
                        })?;
                    statuses.push((status, category));
                }
                statuses.sort_unstable_by_key(|&(s, _)| s);
                statuses
            }
        };
        if self.attempt_timeout_ms == Some(0) {
            return Err(SettingsError::new(
                "attempt_timeout_ms",
                "attempt_timeout_ms must be at least 1, got 0",
            ));
        }
        let headers = RetryHeaders::new(&policy, &statuses, self.attempt_timeout_ms);
        Ok(Settings {
            service: self.service,
            operation: self.operation,
            policy,
            statuses,
            headers,
            attempt_count_in_response: self.include_attempt_count_in_response.unwrap_or(false),
        })
    }
}

fn both_places(field: &str) -> SettingsError {
    SettingsError::new(
        field,
        format!("{field} is given both at the top level and in config: give one"),
    )
}

/// A rejected plugin configuration: the field (a JSON path such as `config.max_attempts`, empty
/// for the document as a whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The offending field.
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl SettingsError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field `{}`: {}", self.field, self.message)
        }
    }
}
