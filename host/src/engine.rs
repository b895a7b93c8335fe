//! One interface over the two engines that can run a policy: the native core, linked in, and a
//! policy component loaded into wasmtime. Every CLI command and the executor go through
//! [`PolicyEngine`], so `--engine wasm` is a flag, not a second code path.

use std::fmt;

use ricochet_core as rc;

use crate::component::{ComponentError, PolicyComponent};

/// One planned retry, as either engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRetry {
    /// 1 for the first retry.
    pub retry: u32,
    /// Base delay before jitter.
    pub base_delay_us: u64,
    /// Delay after jitter.
    pub delay_us: u64,
}

/// Why an engine could not answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The config was rejected: the field, and a message naming the value.
    Config {
        /// The offending field.
        field: String,
        /// What was wrong, with the value.
        message: String,
    },
    /// The component failed (trap, fuel, memory).
    Component(ComponentError),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { message, .. } => f.write_str(message),
            Self::Component(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<rc::ConfigError> for EngineError {
    fn from(e: rc::ConfigError) -> Self {
        Self::Config {
            field: e.field().to_string(),
            message: e.to_string(),
        }
    }
}

impl From<ComponentError> for EngineError {
    fn from(e: ComponentError) -> Self {
        Self::Component(e)
    }
}

/// A policy engine.
pub trait PolicyEngine {
    /// `native` or `wasm`.
    fn name(&self) -> &'static str;
    /// Validates `config`.
    fn validate(&mut self, config: &rc::RetryConfig) -> Result<(), EngineError>;
    /// The whole schedule for `seed`.
    fn plan(
        &mut self,
        config: &rc::RetryConfig,
        seed: u64,
    ) -> Result<Vec<PlannedRetry>, EngineError>;
}

/// The core, linked in.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeEngine;

impl PolicyEngine for NativeEngine {
    fn name(&self) -> &'static str {
        "native"
    }

    fn validate(&mut self, config: &rc::RetryConfig) -> Result<(), EngineError> {
        config.validate()?;
        Ok(())
    }

    fn plan(
        &mut self,
        config: &rc::RetryConfig,
        seed: u64,
    ) -> Result<Vec<PlannedRetry>, EngineError> {
        Ok(config
            .validate()?
            .plan(seed)
            .map(|r| PlannedRetry {
                retry: r.retry,
                base_delay_us: r.base_delay_us,
                delay_us: r.delay_us,
            })
            .collect())
    }
}

impl PolicyEngine for PolicyComponent {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn validate(&mut self, config: &rc::RetryConfig) -> Result<(), EngineError> {
        PolicyComponent::validate(self, config)?.map_err(config_error)
    }

    fn plan(
        &mut self,
        config: &rc::RetryConfig,
        seed: u64,
    ) -> Result<Vec<PlannedRetry>, EngineError> {
        let plan = PolicyComponent::plan(self, config, seed)?.map_err(config_error)?;
        Ok(plan
            .into_iter()
            .map(|r| PlannedRetry {
                retry: r.retry,
                base_delay_us: r.base_delay_us,
                delay_us: r.delay_us,
            })
            .collect())
    }
}

fn config_error(e: crate::component::wit::ConfigError) -> EngineError {
    EngineError::Config {
        field: e.field,
        message: e.message,
    }
}
