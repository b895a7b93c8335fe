//! A service's circuit breaker and retry budget: the core's state machines, held by Python
//! (one per service, shared by every call of a policy) and passed to `RetryState` decisions.

use pyo3::prelude::*;
use ricochet_core::breaker::{Admission, BreakerState, CircuitBreaker};
use ricochet_core::budget::RetryBudget;

use crate::config::PyRetryConfig;

/// The core's circuit breaker for one service.
#[pyclass(module = "ricochet._core", name = "CircuitBreaker")]
pub struct PyCircuitBreaker {
    pub(crate) breaker: CircuitBreaker,
}

#[pymethods]
impl PyCircuitBreaker {
    /// The breaker `config.circuit_breaker` describes, or `None` when it has none.
    #[staticmethod]
    fn for_config(config: &PyRetryConfig) -> Option<Self> {
        config.policy.breaker().map(|p| Self {
            breaker: CircuitBreaker::new(p),
        })
    }

    /// `("allowed", 0)`, `("probe", 0)` or `("rejected", retry_after_us)`.
    fn admit(&mut self, now_us: u64) -> (&'static str, u64) {
        match self.breaker.admit(now_us) {
            Admission::Allowed => ("allowed", 0),
            Admission::Probe => ("probe", 0),
            Admission::Rejected { retry_after_us } => ("rejected", retry_after_us),
        }
    }

    /// Records an admitted call's outcome.
    fn record(&mut self, success: bool, now_us: u64) {
        self.breaker.record(success, now_us);
    }

    /// Hands back an admission whose call ended without an outcome that counts.
    fn release(&mut self) {
        self.breaker.release();
    }

    /// `("closed", None)`, `("open", until_us)` or `("half_open", None)`.
    fn state(&self, now_us: u64) -> (&'static str, Option<u64>) {
        match self.breaker.state(now_us) {
            BreakerState::Closed => ("closed", None),
            BreakerState::Open { until_us } => ("open", Some(until_us)),
            BreakerState::HalfOpen => ("half_open", None),
        }
    }
}

/// The core's A6 retry budget for one service.
#[pyclass(module = "ricochet._core", name = "RetryBudget")]
pub struct PyRetryBudget {
    pub(crate) budget: RetryBudget,
}

#[pymethods]
impl PyRetryBudget {
    /// The budget `config.retry_budget` describes, or `None` when it has none.
    #[staticmethod]
    fn for_config(config: &PyRetryConfig) -> Option<Self> {
        config
            .policy
            .budget()
            .and_then(|b| RetryBudget::new(b).ok())
            .map(|budget| Self { budget })
    }

    fn on_success(&mut self) {
        self.budget.on_success();
    }

    fn on_failure(&mut self) {
        self.budget.on_failure();
    }

    fn can_retry(&self) -> bool {
        self.budget.can_retry()
    }

    /// Tokens left, in thousandths.
    #[getter]
    fn tokens_milli(&self) -> u32 {
        self.budget.tokens_milli()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCircuitBreaker>()?;
    m.add_class::<PyRetryBudget>()?;
    Ok(())
}
