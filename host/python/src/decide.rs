//! `RetryState`: one logical call's decisions, made by the core.
//!
//! The executor (Python) reports each failed attempt with its category (an index into
//! `CATEGORIES`), the server's delay if any, and the time; the core answers with a delay and a
//! slot request, or a reason to give up. The circuit breaker and retry budget of the service, when
//! configured, are passed in and updated by the same core call, as in the Rust executor.

use pyo3::prelude::*;
use ricochet_core::{Decision, ErrorCategory, Failure, Guards, RetryState};

use crate::config::{config_error, PyRetryConfig};
use crate::guards::{PyCircuitBreaker, PyRetryBudget};

/// The per-call state of the core's decisions.
#[pyclass(module = "ricochet._core", name = "RetryState")]
pub struct PyRetryState {
    state: RetryState,
    policy: ricochet_core::Policy,
}

fn category(py: Python<'_>, index: usize) -> PyResult<ErrorCategory> {
    ErrorCategory::ALL.get(index).copied().ok_or_else(|| {
        config_error(
            py,
            "category",
            None,
            format!(
                "category must be an index below {}, got {index}",
                ErrorCategory::ALL.len()
            ),
        )
    })
}

/// A decision as Python gets it: `(delay_us, None, slot_request)` to retry — `slot_request`
/// being `(earliest_us, window, retry, latest_us)` or `None` without coordination — or
/// `(0, reason, None)` to give up.
type PyDecision = (
    u64,
    Option<&'static str>,
    Option<(u64, u64, u32, Option<u64>)>,
);

#[pymethods]
impl PyRetryState {
    /// A fresh call: jitter `seed`, started at `started_us` (the executor's monotonic clock).
    #[new]
    fn new(config: &PyRetryConfig, seed: u64, started_us: u64) -> Self {
        Self {
            state: RetryState::new(seed, started_us),
            policy: config.policy,
        }
    }

    /// The core's decision after a failed attempt.
    #[pyo3(signature = (category_index, now_us, server_delay_us=None, token_refreshed=false, breaker=None, budget=None))]
    #[allow(clippy::too_many_arguments)] // a Failure's fields and the guards, flat: one call from Python
    fn on_failure(
        &mut self,
        py: Python<'_>,
        category_index: usize,
        now_us: u64,
        server_delay_us: Option<u64>,
        token_refreshed: bool,
        mut breaker: Option<PyRefMut<'_, PyCircuitBreaker>>,
        mut budget: Option<PyRefMut<'_, PyRetryBudget>>,
    ) -> PyResult<PyDecision> {
        let mut failure = Failure::new(category(py, category_index)?);
        if let Some(d) = server_delay_us {
            failure = failure.with_server_delay_us(d);
        }
        if token_refreshed {
            failure = failure.with_token_refreshed();
        }
        let guards = Guards {
            breaker: breaker.as_deref_mut().map(|b| &mut b.breaker),
            budget: budget.as_deref_mut().map(|b| &mut b.budget),
        };
        Ok(
            match self.state.on_failure(&self.policy, failure, now_us, guards) {
                Decision::Retry {
                    delay_us,
                    slot_request,
                } => (
                    delay_us,
                    None,
                    slot_request.map(|r| (r.earliest_us, r.window, r.retry, r.latest_us)),
                ),
                Decision::GiveUp { reason } => (0, Some(reason.name()), None),
            },
        )
    }

    /// Records a success with the service's guards.
    #[pyo3(signature = (now_us, breaker=None, budget=None))]
    fn on_success(
        &mut self,
        now_us: u64,
        mut breaker: Option<PyRefMut<'_, PyCircuitBreaker>>,
        mut budget: Option<PyRefMut<'_, PyRetryBudget>>,
    ) {
        let guards = Guards {
            breaker: breaker.as_deref_mut().map(|b| &mut b.breaker),
            budget: budget.as_deref_mut().map(|b| &mut b.budget),
        };
        self.state.on_success(now_us, guards);
    }

    /// Time left until `max_elapsed`, if the config has one.
    fn time_left_us(&self, now_us: u64) -> Option<u64> {
        self.state.time_left_us(&self.policy, now_us)
    }

    /// Whether an expired token may be refreshed and the call retried (once per call).
    fn may_retry_auth(&self) -> bool {
        self.state.may_retry_auth(&self.policy)
    }

    /// Calls made so far.
    #[getter]
    fn calls(&self) -> u32 {
        self.state.calls()
    }

    /// The jitter seed.
    #[getter]
    fn seed(&self) -> u64 {
        self.state.seed()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRetryState>()?;
    Ok(())
}
