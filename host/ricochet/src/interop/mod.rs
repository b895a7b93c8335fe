//! Policies as data.
