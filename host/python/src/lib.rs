//! `ricochet._core`: ricochet-core behind a thin PyO3 adapter.
//!
//! Every decision the Python package makes comes from here — config validation with the core's
//! messages, the schedule, a failure's decision, slot tickets and the local fallback slot, the
//! circuit breaker and the retry budget, `Retry-After`/`RateLimit` parsing, the HTTP status
//! table — and so do the policy files (`ricochet check`'s parser) and the Redis keys and Lua
//! scripts the Rust services use. The Python side does the I/O: awaiting, sleeping, Redis round
//! trips, metrics and logs. Nothing here computes a delay itself.
//!
//! Values cross as plain ints, floats, strings and tuples: a decision from Python costs one call.

use pyo3::prelude::*;

mod config;
mod decide;
mod fleet;
mod guards;

pyo3::create_exception!(
    ricochet._core,
    RetryConfigError,
    pyo3::exceptions::PyValueError,
    "A retry configuration that was rejected: `field` names the field, `value` is the rejected value."
);
pyo3::create_exception!(
    ricochet._core,
    PolicyFileError,
    RetryConfigError,
    "A policy file with errors: `errors` lists each as (location, policy, field, message)."
);

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RetryConfigError", py.get_type::<RetryConfigError>())?;
    m.add("PolicyFileError", py.get_type::<PolicyFileError>())?;
    config::register(m)?;
    decide::register(m)?;
    guards::register(m)?;
    fleet::register(m)?;
    Ok(())
}
