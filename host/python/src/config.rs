//! `RetryConfig`: the seed's fields (plus ricochet's) as a frozen Python object, validated by the
//! core when it is made; policy files and `RETRY_*` overrides through `ricochet::config_file`,
//! the parser `ricochet check` runs.
//!
//! Python values are checked before they reach the core, so a wrong type, a negative or huge
//! int, or a float that does not fit is a `RetryConfigError` (a `ValueError`) naming the field and
//! the value, never an `OverflowError` or a crash.

use std::collections::HashMap;
use std::path::Path;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use ricochet::config_file::{self, FileErrors, LoadError, PolicyFile, ENV_VARS};
use ricochet_core::{
    breaker::BreakerConfig, budget::BudgetConfig, CategorySet, ConfigError, ErrorCategory,
    JitterStrategy, Policy, RetryConfig, SlotRequest, SlotResolution,
};

use crate::{PolicyFileError, RetryConfigError};

/// A config error naming `field`, carrying `value` (the Python value as given, or `None`).
pub(crate) fn config_error(
    py: Python<'_>,
    field: &str,
    value: Option<&Bound<'_, PyAny>>,
    message: String,
) -> PyErr {
    let err = RetryConfigError::new_err(message);
    let instance = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion.
    let _ = instance.setattr("field", field);
    let _ = instance.setattr(
        "value",
        value.map_or_else(|| py.None(), |v| v.clone().unbind()),
    );
    err
}

/// `repr(value)`, shortened so a 10**4000 does not fill the message.
fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let r = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    if r.chars().count() > 48 {
        let head: String = r.chars().take(40).collect();
        format!("{head}… ({} characters)", r.chars().count())
    } else {
        r
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A whole number within `[0, u32::MAX]`.
pub(crate) fn u32_arg(field: &str, value: &Bound<'_, PyAny>) -> PyResult<u32> {
    let py = value.py();
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(config_error(
            py,
            field,
            Some(value),
            format!(
                "{field} must be a whole number, got {} ({})",
                short_repr(value),
                type_name(value)
            ),
        ));
    }
    value.extract::<u32>().map_err(|_| {
        config_error(
            py,
            field,
            Some(value),
            format!(
                "{field} must be a whole number within [0, {}], got {}",
                u32::MAX,
                short_repr(value)
            ),
        )
    })
}

/// A non-negative whole number that fits in 64 bits (microseconds, seeds, tickets).
pub(crate) fn u64_arg(field: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let py = value.py();
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(config_error(
            py,
            field,
            Some(value),
            format!(
                "{field} must be a whole number, got {} ({})",
                short_repr(value),
                type_name(value)
            ),
        ));
    }
    value.extract::<u64>().map_err(|_| {
        config_error(
            py,
            field,
            Some(value),
            format!(
                "{field} must be a whole number within [0, {}], got {}",
                u64::MAX,
                short_repr(value)
            ),
        )
    })
}

/// A number of seconds (int or float; range checks are the core's).
fn f64_arg(field: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = value.py();
    let numeric = !value.is_instance_of::<PyBool>()
        && (value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>());
    if !numeric {
        return Err(config_error(
            py,
            field,
            Some(value),
            format!(
                "{field} must be a number, got {} ({})",
                short_repr(value),
                type_name(value)
            ),
        ));
    }
    value.extract::<f64>().map_err(|_| {
        config_error(
            py,
            field,
            Some(value),
            format!("{field} must be a finite number, got {}", short_repr(value)),
        )
    })
}

fn bool_arg(field: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    if value.is_instance_of::<PyBool>() {
        return value.extract();
    }
    Err(config_error(
        value.py(),
        field,
        Some(value),
        format!(
            "{field} must be True or False, got {} ({})",
            short_repr(value),
            type_name(value)
        ),
    ))
}

fn strategy_arg(value: &Bound<'_, PyAny>) -> PyResult<JitterStrategy> {
    let bad = || {
        config_error(
            value.py(),
            "strategy",
            Some(value),
            format!(
                "strategy must be one of none, proportional, full, equal, decorrelated, got {}",
                short_repr(value)
            ),
        )
    };
    let name: String = if value.is_instance_of::<PyString>() {
        value.extract()?
    } else {
        return Err(bad());
    };
    JitterStrategy::from_name(&name).ok_or_else(bad)
}

/// `retry_on`: category names (`"ConnectionError"` or `"connection_error"`).
fn categories_arg(value: &Bound<'_, PyAny>) -> PyResult<CategorySet> {
    let py = value.py();
    if value.is_instance_of::<PyString>() {
        return Err(config_error(
            py,
            "retry_on",
            Some(value),
            format!(
                "retry_on must be a list of category names, got the string {}",
                short_repr(value)
            ),
        ));
    }
    let mut set = CategorySet::EMPTY;
    let iter = value.try_iter().map_err(|_| {
        config_error(
            py,
            "retry_on",
            Some(value),
            format!(
                "retry_on must be a list of category names, got {}",
                short_repr(value)
            ),
        )
    })?;
    for item in iter {
        let item = item?;
        let name: String = item.extract().map_err(|_| {
            config_error(
                py,
                "retry_on",
                Some(value),
                format!(
                    "retry_on must hold category names, got {}",
                    short_repr(&item)
                ),
            )
        })?;
        let category = ErrorCategory::from_name(&name)
            .map_err(|e| config_error(py, "retry_on", Some(value), format!("retry_on: {e}")))?;
        set = set.with(category);
    }
    Ok(set)
}

/// A `circuit_breaker` or `retry_budget` mapping, read by the core's own serde derive (so a
/// missing or unknown key is reported as the policy files report it).
fn json_section<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &Bound<'_, PyAny>,
) -> PyResult<T> {
    let py = value.py();
    let bad = |why: String| config_error(py, field, Some(value), format!("{field}: {why}"));
    if !value.is_instance_of::<PyDict>() {
        return Err(bad(format!(
            "expected a mapping of its settings, got {}",
            short_repr(value)
        )));
    }
    let text: String = py
        .import("json")?
        .call_method1("dumps", (value,))
        .map_err(|e| bad(e.to_string()))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| {
        // serde_json appends " at line 1 column N" of the JSON it was handed: not the caller's text.
        let message = e.to_string();
        bad(match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        })
    })
}

/// The core's error for `config`, with the Python-facing value of the field it names.
pub(crate) fn core_error(py: Python<'_>, config: &RetryConfig, e: &ConfigError) -> PyErr {
    let field = e.field();
    let value = field_value(py, config, field).ok().flatten();
    config_error(py, field, value.as_ref(), e.to_string())
}

/// The value of a top-level field, as Python sees it (`None` for nested fields).
fn field_value<'py>(
    py: Python<'py>,
    c: &RetryConfig,
    field: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let v = match field {
        "max_attempts" => c.max_attempts.into_pyobject(py)?.into_any(),
        "initial_delay" => c.initial_delay.into_pyobject(py)?.into_any(),
        "max_delay" => c.max_delay.into_pyobject(py)?.into_any(),
        "exponential_base" => c.exponential_base.into_pyobject(py)?.into_any(),
        "jitter_factor" => c.jitter_factor.into_pyobject(py)?.into_any(),
        "slot_count" => c.slot_count.into_pyobject(py)?.into_any(),
        "slot_width" => c.slot_width.into_pyobject(py)?.into_any(),
        "idempotency_ttl" => c.idempotency_ttl.into_pyobject(py)?.into_any(),
        "max_retry_after" => c.max_retry_after.into_pyobject(py)?.into_any(),
        "max_elapsed" => c.max_elapsed.into_pyobject(py)?.into_any(),
        "slot_capacity" => c.slot_capacity.into_pyobject(py)?.into_any(),
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// A retry configuration: the seed's fields in seconds, validated by ricochet-core when made.
#[pyclass(frozen, module = "ricochet._core", name = "RetryConfig")]
pub struct PyRetryConfig {
    pub(crate) config: RetryConfig,
    pub(crate) policy: Policy,
}

impl PyRetryConfig {
    pub(crate) fn new_checked(py: Python<'_>, config: RetryConfig) -> PyResult<Self> {
        let policy = config.validate().map_err(|e| core_error(py, &config, &e))?;
        Ok(Self { config, policy })
    }
}

/// Lays every keyword argument that is not `None` over `base`.
#[allow(clippy::too_many_arguments)] // one per config field, as Python passes them
fn overlay(mut c: RetryConfig, fields: Option<&Bound<'_, PyDict>>) -> PyResult<RetryConfig> {
    let Some(fields) = fields else {
        return Ok(c);
    };
    for (name, v) in fields.iter() {
        let name: String = name.extract()?;
        if v.is_none() {
            continue;
        }
        match name.as_str() {
            "max_attempts" => c.max_attempts = u32_arg("max_attempts", &v)?,
            "initial_delay" => c.initial_delay = f64_arg("initial_delay", &v)?,
            "max_delay" => c.max_delay = f64_arg("max_delay", &v)?,
            "exponential_base" => c.exponential_base = f64_arg("exponential_base", &v)?,
            "jitter" => c.jitter = bool_arg("jitter", &v)?,
            "jitter_factor" => c.jitter_factor = f64_arg("jitter_factor", &v)?,
            "slot_count" => c.slot_count = u32_arg("slot_count", &v)?,
            "slot_width" => c.slot_width = f64_arg("slot_width", &v)?,
            "coordination_enabled" => {
                c.coordination_enabled = bool_arg("coordination_enabled", &v)?
            }
            "idempotency_ttl" => c.idempotency_ttl = f64_arg("idempotency_ttl", &v)?,
            "strategy" => c.strategy = strategy_arg(&v)?,
            "max_elapsed" => c.max_elapsed = Some(f64_arg("max_elapsed", &v)?),
            "max_retry_after" => c.max_retry_after = f64_arg("max_retry_after", &v)?,
            "slot_capacity" => c.slot_capacity = Some(u32_arg("slot_capacity", &v)?),
            "retry_on" => c.retry_on = categories_arg(&v)?,
            "circuit_breaker" => {
                c.circuit_breaker = Some(json_section::<BreakerConfig>("circuit_breaker", &v)?);
            }
            "retry_budget" => {
                c.retry_budget = Some(json_section::<BudgetConfig>("retry_budget", &v)?);
            }
            other => {
                return Err(PyTypeError::new_err(format!(
                    "RetryConfig got an unexpected keyword argument '{other}'"
                )))
            }
        }
    }
    Ok(c)
}

#[pymethods]
impl PyRetryConfig {
    /// The seed's `default` level with every given field replaced.
    #[new]
    #[pyo3(signature = (**fields))]
    fn py_new(py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let config = overlay(RetryConfig::DEFAULT, fields)?;
        Self::new_checked(py, config)
    }

    /// This config with every given field replaced (validated again).
    #[pyo3(signature = (**fields))]
    fn replace(&self, py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let config = overlay(self.config, fields)?;
        Self::new_checked(py, config)
    }

    /// A preset by name: `default`, `aggressive` or `conservative`.
    #[staticmethod]
    fn preset(py: Python<'_>, name: &str) -> PyResult<Self> {
        let config = RetryConfig::preset(name).ok_or_else(|| {
            config_error(
                py,
                "policy",
                Some(PyString::new(py, name).as_any()),
                format!(
                    "unknown preset `{name}`, expected one of {}",
                    RetryConfig::PRESET_NAMES.join(", ")
                ),
            )
        })?;
        Self::new_checked(py, config)
    }

    /// The presets' names, in the seed's order.
    #[classattr]
    #[allow(non_snake_case)] // a class constant
    fn PRESET_NAMES() -> Vec<&'static str> {
        RetryConfig::PRESET_NAMES.to_vec()
    }

    #[getter]
    fn max_attempts(&self) -> u32 {
        self.config.max_attempts
    }
    #[getter]
    fn initial_delay(&self) -> f64 {
        self.config.initial_delay
    }
    #[getter]
    fn max_delay(&self) -> f64 {
        self.config.max_delay
    }
    #[getter]
    fn exponential_base(&self) -> f64 {
        self.config.exponential_base
    }
    #[getter]
    fn jitter(&self) -> bool {
        self.config.jitter
    }
    #[getter]
    fn jitter_factor(&self) -> f64 {
        self.config.jitter_factor
    }
    #[getter]
    fn slot_count(&self) -> u32 {
        self.config.slot_count
    }
    #[getter]
    fn slot_width(&self) -> f64 {
        self.config.slot_width
    }
    #[getter]
    fn coordination_enabled(&self) -> bool {
        self.config.coordination_enabled
    }
    #[getter]
    fn idempotency_ttl(&self) -> f64 {
        self.config.idempotency_ttl
    }
    #[getter]
    fn strategy(&self) -> &'static str {
        self.config.strategy.name()
    }
    #[getter]
    fn max_elapsed(&self) -> Option<f64> {
        self.config.max_elapsed
    }
    #[getter]
    fn max_retry_after(&self) -> f64 {
        self.config.max_retry_after
    }
    #[getter]
    fn slot_capacity(&self) -> Option<u32> {
        self.config.slot_capacity
    }
    /// The retried categories' names.
    #[getter]
    fn retry_on(&self) -> Vec<&'static str> {
        self.config
            .retry_on
            .iter()
            .map(ErrorCategory::name)
            .collect()
    }
    /// The retried categories as indices of `CATEGORIES` (for the executor).
    #[getter]
    fn retry_on_indices(&self) -> Vec<usize> {
        ErrorCategory::ALL
            .iter()
            .enumerate()
            .filter(|(_, c)| self.config.retry_on.contains(**c))
            .map(|(i, _)| i)
            .collect()
    }
    #[getter]
    fn circuit_breaker<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.config
            .circuit_breaker
            .map(|b| to_python(py, &b))
            .transpose()
    }
    #[getter]
    fn retry_budget<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.config
            .retry_budget
            .map(|b| to_python(py, &b))
            .transpose()
    }

    /// Validated durations in microseconds, as the core uses them.
    #[getter]
    fn initial_delay_us(&self) -> u64 {
        self.policy.initial_delay_us()
    }
    #[getter]
    fn max_delay_us(&self) -> u64 {
        self.policy.max_delay_us()
    }
    #[getter]
    fn slot_width_us(&self) -> u64 {
        self.policy.slot_width_us()
    }
    #[getter]
    fn idempotency_ttl_us(&self) -> u64 {
        self.policy.idempotency_ttl_us()
    }
    #[getter]
    fn max_elapsed_us(&self) -> Option<u64> {
        self.policy.max_elapsed_us()
    }
    /// `slot_count × slot_width`, the coordination window (at least 1 µs).
    #[getter]
    fn window_us(&self) -> u64 {
        self.policy.window_us()
    }

    /// The schedule for `seed`: `(retry, base_delay_us, delay_us)` per retry.
    fn plan(&self, seed: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, u64, u64)>> {
        let seed = u64_arg("seed", seed)?;
        Ok(self
            .policy
            .plan(seed)
            .map(|r| (r.retry, r.base_delay_us, r.delay_us))
            .collect())
    }

    /// Where ticket `ticket` of a slot request fires: `("fire", fire_at_us, slot)`,
    /// `("next", earliest_us, window, moves)` when the window is full, or `("give_up", reason)`.
    #[pyo3(signature = (earliest_us, window, retry, moves, latest_us, ticket, seed))]
    #[allow(clippy::too_many_arguments)] // a SlotRequest's fields, flat
    fn resolve_ticket<'py>(
        &self,
        py: Python<'py>,
        earliest_us: u64,
        window: u64,
        retry: u32,
        moves: u8,
        latest_us: Option<u64>,
        ticket: u64,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = SlotRequest {
            earliest_us,
            window,
            retry,
            moves,
            latest_us,
        };
        Ok(match self.policy.resolve_ticket(&request, ticket, seed) {
            SlotResolution::FireAt { fire_at_us, slot } => {
                ("fire", fire_at_us, slot).into_pyobject(py)?.into_any()
            }
            SlotResolution::NextWindow(next) => ("next", next.earliest_us, next.window, next.moves)
                .into_pyobject(py)?
                .into_any(),
            SlotResolution::GiveUp(reason) => {
                ("give_up", reason.name()).into_pyobject(py)?.into_any()
            }
        })
    }

    /// The window index of time `t_us` (on the coordinator's clock).
    fn window_index(&self, t_us: u64) -> u64 {
        self.policy.window_index(t_us)
    }

    /// The core's local slot ticket for a retry whose coordinator did not answer.
    fn fallback_ticket(&self, seed: u64, retry: u32) -> u64 {
        self.policy.fallback_ticket(seed, retry)
    }

    /// Every field, as a policy file would hold it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.config)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyRetryConfig>()
            .is_ok_and(|o| o.get().config == self.config)
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "RetryConfig(max_attempts={}, initial_delay={:?}, max_delay={:?}, exponential_base={:?}, \
             jitter={}, jitter_factor={:?}, slot_count={}, slot_width={:?}, coordination_enabled={}, \
             idempotency_ttl={:?}, strategy='{}'",
            c.max_attempts,
            c.initial_delay,
            c.max_delay,
            c.exponential_base,
            if c.jitter { "True" } else { "False" },
            c.jitter_factor,
            c.slot_count,
            c.slot_width,
            if c.coordination_enabled { "True" } else { "False" },
            c.idempotency_ttl,
            c.strategy.name(),
        );
        if let Some(m) = c.max_elapsed {
            s.push_str(&format!(", max_elapsed={m:?}"));
        }
        if let Some(n) = c.slot_capacity {
            s.push_str(&format!(", slot_capacity={n}"));
        }
        s.push(')');
        s
    }
}

/// A serde value as Python objects (through JSON, which every field survives).
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

fn file_error(py: Python<'_>, e: &FileErrors) -> PyErr {
    let err = PolicyFileError::new_err(e.to_string());
    let instance = err.value(py);
    let errors: Vec<_> =
        e.0.iter()
            .map(|f| {
                (
                    f.location,
                    f.policy.clone(),
                    f.field.clone(),
                    f.message.clone(),
                )
            })
            .collect();
    let first_field = e.0.first().and_then(|f| f.field.clone());
    let _ = instance.setattr("errors", errors);
    let _ = instance.setattr("field", first_field);
    let _ = instance.setattr("value", py.None());
    err
}

/// Reads, resolves (`extends`) and validates a `retry_policies:` file, as `ricochet check` does.
#[pyfunction]
fn load_policy_file(py: Python<'_>, path: &str) -> PyResult<HashMap<String, PyRetryConfig>> {
    let file = PolicyFile::load(Path::new(path)).map_err(|e| file_error(py, &e))?;
    file_policies(py, &file)
}

/// [`load_policy_file`] for text in hand; `path` names it in messages (`.json` picks JSON).
#[pyfunction]
#[pyo3(signature = (text, path="<policies>.yaml"))]
fn parse_policy_text(
    py: Python<'_>,
    text: &str,
    path: &str,
) -> PyResult<HashMap<String, PyRetryConfig>> {
    let file = PolicyFile::parse(Path::new(path), text).map_err(|e| file_error(py, &e))?;
    file_policies(py, &file)
}

fn file_policies(py: Python<'_>, file: &PolicyFile) -> PyResult<HashMap<String, PyRetryConfig>> {
    file.policies()
        .iter()
        .map(|(name, config)| Ok((name.clone(), PyRetryConfig::new_checked(py, *config)?)))
        .collect()
}

/// The `RETRY_*` variables present in `environ` (a mapping).
fn env_lookup(environ: &Bound<'_, PyAny>) -> PyResult<HashMap<&'static str, String>> {
    let mut found = HashMap::new();
    for var in ENV_VARS {
        let value = environ.call_method1("get", (var,))?;
        if !value.is_none() {
            found.insert(var, value.extract::<String>()?);
        }
    }
    Ok(found)
}

fn load_error(py: Python<'_>, e: LoadError) -> PyErr {
    match e {
        LoadError::File(f) => file_error(py, &f),
        LoadError::Env(env) => config_error(
            py,
            &env.var,
            Some(PyString::new(py, &env.value).as_any()),
            env.to_string(),
        ),
        LoadError::UnknownPolicy(name) => {
            let value = PyString::new(py, &name);
            let message = LoadError::UnknownPolicy(name).to_string();
            config_error(py, "policy", Some(value.as_any()), message)
        }
        LoadError::Invalid(c) => {
            config_error(py, c.field(), None, LoadError::Invalid(c).to_string())
        }
        other => config_error(py, "policy", None, other.to_string()),
    }
}

/// Policy `name` with the seed's precedence — `RETRY_*` in `environ` > the file > the preset —
/// through the same function as the CLI's `--policy/--config`.
#[pyfunction]
#[pyo3(signature = (name, path, environ))]
fn load_policy(
    py: Python<'_>,
    name: &str,
    path: Option<&str>,
    environ: &Bound<'_, PyAny>,
) -> PyResult<PyRetryConfig> {
    let vars = env_lookup(environ)?;
    let config = config_file::load_policy(name, path.map(Path::new), |v| vars.get(v).cloned())
        .map_err(|e| load_error(py, e))?;
    PyRetryConfig::new_checked(py, config)
}

/// `config` with the `RETRY_*` variables of `environ` laid over it, validated.
#[pyfunction]
fn apply_env(
    py: Python<'_>,
    config: &PyRetryConfig,
    environ: &Bound<'_, PyAny>,
) -> PyResult<PyRetryConfig> {
    let vars = env_lookup(environ)?;
    let merged = config_file::apply_env(config.config, |v| vars.get(v).cloned())
        .map_err(|e| load_error(py, LoadError::Env(e)))?;
    let policy = merged
        .validate()
        .map_err(|e| load_error(py, LoadError::Invalid(e)))?;
    Ok(PyRetryConfig {
        config: merged,
        policy,
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRetryConfig>()?;
    m.add_function(wrap_pyfunction!(load_policy_file, m)?)?;
    m.add_function(wrap_pyfunction!(parse_policy_text, m)?)?;
    m.add_function(wrap_pyfunction!(load_policy, m)?)?;
    m.add_function(wrap_pyfunction!(apply_env, m)?)?;
    m.add("ENV_VARS", ENV_VARS.to_vec())?;
    Ok(())
}
