//! Shared fixtures for the integration tests live in `tests/`; this library is empty on purpose.
