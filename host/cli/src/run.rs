//! `ricochet run -- CMD ARGS…`: retry a command by the policy.
//!
//! The command's stdout and stderr pass through; ricochet's JSON log lines go to stderr
//! (`--quiet` silences them). Exit status: the last attempt's; 124 when the last attempt timed
//! out (as `timeout(1)`); at once for an exit code not in `--retry-on-exit` (default: every
//! non-zero code is retried); 127 when the command cannot be started.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use ricochet::{AttemptError, Classification, Classify, RetryError};
use ricochet_core::ErrorCategory;

use crate::cli::{build_policy, Backends};

/// How one run of the command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It exited with this code; `retryable` per `--retry-on-exit`.
    Exit { code: i32, retryable: bool },
    /// It was killed by this signal (retried).
    Signal(i32),
    /// It could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exit { code, .. } => write!(f, "command exited with status {code}"),
            Self::Signal(s) => write!(f, "command killed by signal {s}"),
            Self::Spawn(e) => write!(f, "command could not be started: {e}"),
        }
    }
}

impl Classify for CommandFailure {
    fn classify(&self) -> Classification {
        Classification::new(match self {
            Self::Exit {
                retryable: true, ..
            }
            | Self::Signal(_) => ErrorCategory::ServiceUnavailable,
            Self::Exit {
                retryable: false, ..
            } => ErrorCategory::BusinessLogic,
            Self::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ErrorCategory::ResourceNotFound
            }
            Self::Spawn(_) => ErrorCategory::Validation,
        })
    }
}

/// The exit codes of `--retry-on-exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCodes(pub Vec<i32>);

/// Parses `--retry-on-exit`: comma-separated codes and ranges (`1,2,75-78`).
pub fn parse_exit_codes(spec: &str) -> Result<ExitCodes, String> {
    let mut codes = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            format!("--retry-on-exit: `{part}` is not an exit code (0-255) or a range like 75-78")
        };
        let code = |s: &str| {
            s.trim()
                .parse::<i32>()
                .ok()
                .filter(|c| (0..=255).contains(c))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?);
                if a > b {
                    return Err(bad());
                }
                codes.extend(a..=b);
            }
            None => codes.push(code(part).ok_or_else(bad)?),
        }
    }
    if codes.is_empty() {
        return Err("--retry-on-exit: no exit codes given".into());
    }
    Ok(ExitCodes(codes))
}

/// Parses a duration: `250ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 250ms, 2s, 1.5s, 1m)"))?;
    if !value.is_finite() || value < 0.0 || value * scale > 1e9 {
        return Err(format!(
            "`{s}` is not a duration between 0 and 10^9 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Options of `ricochet run`.
pub struct RunOptions {
    pub service: String,
    pub operation: String,
    pub retry_on_exit: Option<ExitCodes>,
    pub attempt_timeout: Option<Duration>,
    pub idempotency_key: Option<String>,
    pub lease: Duration,
    pub command: Vec<String>,
}

async fn run_once(options: &RunOptions) -> Result<i32, CommandFailure> {
    let (program, args) = options.command.split_first().ok_or_else(|| {
        CommandFailure::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command given",
        ))
    })?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .map_err(CommandFailure::Spawn)?;
    let status = child.wait().await.map_err(CommandFailure::Spawn)?;
    match status.code() {
        Some(0) => Ok(0),
        Some(code) => {
            let retryable = options
                .retry_on_exit
                .as_ref()
                .is_none_or(|codes| codes.0.contains(&code));
            Err(CommandFailure::Exit { code, retryable })
        }
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(CommandFailure::Signal(status.signal().unwrap_or(0)))
        }
    }
}

fn exit_code_of(failure: &CommandFailure) -> u8 {
    match failure {
        CommandFailure::Exit { code, .. } => u8::try_from(*code).unwrap_or(1),
        CommandFailure::Signal(s) => u8::try_from(128 + s).unwrap_or(255),
        CommandFailure::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => 127,
        CommandFailure::Spawn(_) => 126,
    }
}

/// Runs the command under the policy; the process exit code.
pub async fn run(options: RunOptions, backends: Backends) -> Result<ExitCode> {
    let mut policy = build_policy(&backends, None)?;
    if let Some(t) = options.attempt_timeout {
        policy = policy.with_attempt_timeout(t);
    }
    let (service, operation) = (options.service.clone(), options.operation.clone());
    let result = match &options.idempotency_key {
        Some(key) => {
            let fingerprint = options.command.join("\u{1f}");
            let idempotency = ricochet::idempotency::IdempotencyOptions {
                lease: options.lease,
                ..Default::default()
            };
            crate::cli::run_idempotent(
                &policy,
                &idempotency,
                key,
                &fingerprint,
                || run_once(&options),
                &service,
                &operation,
            )
            .await?
        }
        None => {
            policy
                .execute_with_retry(|| run_once(&options), &service, &operation)
                .await
        }
    };
    Ok(ExitCode::from(match result {
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(RetryError::NonRetryable(f)) => exit_code_of(&f),
        Err(RetryError::MaxRetriesExceeded(m)) => match &m.last_error {
            AttemptError::TimedOut(_) => 124,
            AttemptError::Failed(f) => exit_code_of(f),
        },
        Err(RetryError::CircuitOpen { .. }) => 75,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exit_code_lists_and_durations() {
        assert_eq!(
            parse_exit_codes("1, 3,75-77"),
            Ok(ExitCodes(vec![1, 3, 75, 76, 77]))
        );
        assert!(parse_exit_codes("x").unwrap_err().contains("`x`"));
        assert!(parse_exit_codes("9-2").is_err());
        assert!(parse_exit_codes("256").is_err());
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert!(parse_duration("-1s").is_err());
    }
}
