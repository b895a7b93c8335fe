//! What the host gives a policy component: its imports, served from in-memory backends.
//!
//! This is the embedded default (no Redis): one process-local slot coordinator and idempotency
//! store per instance, counters and histograms kept as plain maps, and JSON log lines. Bounded
//! by construction: slot windows and idempotency keys expire, and the log keeps the last
//! [`LOG_CAPACITY`] lines.

use std::collections::{HashMap, VecDeque};

use wasmtime::StoreLimits;

use crate::coordination::wall_clock_us;

use super::bindings::{clock, coordination, logging, metrics, types};
use types::{BeginOutcome, CoordinationError, Label, LogLevel, LogRecord, SlotRequest, SlotTicket};

/// Log lines kept in memory.
pub const LOG_CAPACITY: usize = 1024;

/// Windows kept per operation before the oldest are dropped.
const WINDOWS_KEPT: usize = 64;

enum Claim {
    InProgress {
        fingerprint: String,
        lease_until_us: u64,
    },
    Completed {
        fingerprint: String,
        value: Vec<u8>,
        until_us: u64,
    },
}

/// The store data of a component instance.
pub struct HostState {
    pub(crate) limits: StoreLimits,
    slots: HashMap<(String, String), VecDeque<(u64, u64)>>,
    claims: HashMap<String, Claim>,
    counters: HashMap<(String, Vec<(String, String)>), u64>,
    histograms: HashMap<(String, Vec<(String, String)>), Vec<f64>>,
    log: VecDeque<String>,
}

fn label_key(labels: Vec<Label>) -> Vec<(String, String)> {
    let mut v: Vec<_> = labels.into_iter().map(|l| (l.name, l.value)).collect();
    v.sort();
    v
}

impl HostState {
    pub(crate) fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            slots: HashMap::new(),
            claims: HashMap::new(),
            counters: HashMap::new(),
            histograms: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    /// The value of counter `name` with exactly these labels (0 when never incremented).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        self.counters
            .get(&(name.to_string(), key))
            .copied()
            .unwrap_or(0)
    }

    /// The log lines written by the guest, oldest first (JSON, one object per line).
    pub fn log_lines(&self) -> impl Iterator<Item = &str> {
        self.log.iter().map(String::as_str)
    }
}

impl types::Host for HostState {}

impl clock::Host for HostState {
    fn now_us(&mut self) -> u64 {
        wall_clock_us()
    }
}

impl coordination::Host for HostState {
    fn acquire_slot(
        &mut self,
        service: String,
        operation: String,
        request: SlotRequest,
    ) -> Result<SlotTicket, CoordinationError> {
        let windows = self.slots.entry((service, operation)).or_default();
        let ticket = match windows.iter_mut().find(|(w, _)| *w == request.window) {
            Some((_, next)) => {
                *next += 1;
                *next - 1
            }
            None => {
                if windows.len() >= WINDOWS_KEPT {
                    windows.pop_front();
                }
                windows.push_back((request.window, 1));
                0
            }
        };
        Ok(SlotTicket {
            ticket,
            server_time_us: wall_clock_us(),
        })
    }

    fn idempotency_begin(
        &mut self,
        key: String,
        fingerprint: String,
        lease_ms: u64,
    ) -> Result<BeginOutcome, CoordinationError> {
        let now = wall_clock_us();
        let outcome = match self.claims.get(&key) {
            Some(Claim::Completed {
                fingerprint: f,
                value,
                until_us,
            }) if *until_us > now => {
                if *f == fingerprint {
                    BeginOutcome::Completed(value.clone())
                } else {
                    BeginOutcome::Mismatch
                }
            }
            Some(Claim::InProgress {
                fingerprint: f,
                lease_until_us,
            }) if *lease_until_us > now => {
                if *f == fingerprint {
                    BeginOutcome::InProgress
                } else {
                    BeginOutcome::Mismatch
                }
            }
            _ => BeginOutcome::Started,
        };
        if matches!(outcome, BeginOutcome::Started) {
            let lease_until_us = now.saturating_add(lease_ms.saturating_mul(1000));
            self.claims.insert(
                key,
                Claim::InProgress {
                    fingerprint,
                    lease_until_us,
                },
            );
        }
        Ok(outcome)
    }

    fn idempotency_complete(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), CoordinationError> {
        let until_us = wall_clock_us().saturating_add(ttl_ms.saturating_mul(1000));
        match self.claims.remove(&key) {
            Some(Claim::InProgress { fingerprint, .. })
            | Some(Claim::Completed { fingerprint, .. }) => {
                self.claims.insert(
                    key,
                    Claim::Completed {
                        fingerprint,
                        value,
                        until_us,
                    },
                );
                Ok(())
            }
            None => Err(CoordinationError::Unavailable(format!(
                "idempotency key was not claimed: {key}"
            ))),
        }
    }

    fn idempotency_fail(&mut self, key: String) -> Result<(), CoordinationError> {
        if let Some(Claim::InProgress { .. }) = self.claims.get(&key) {
            self.claims.remove(&key);
        }
        Ok(())
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<Label>, value: u64) {
        *self.counters.entry((name, label_key(labels))).or_insert(0) += value;
    }

    fn histogram_observe(&mut self, name: String, labels: Vec<Label>, value: f64) {
        self.histograms
            .entry((name, label_key(labels)))
            .or_default()
            .push(value);
    }
}

impl logging::Host for HostState {
    fn log(&mut self, line: LogRecord) {
        let level = match line.level {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        };
        let json = serde_json::json!({
            "timestamp": crate::logging::rfc3339_now(),
            "level": level,
            "service": line.service,
            "operation": line.operation,
            "attempt": line.attempt,
            "delay": line.delay,
            "error": line.error,
            "trace_id": line.trace_id,
        });
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(json.to_string());
    }
}
