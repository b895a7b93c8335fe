//! The service's circuit breaker and retry budget, kept in proxy-wasm shared data.
//!
//! Envoy runs one copy of the filter per worker thread; a breaker that each worker kept to
//! itself would need N times the failures to open. So both guards live in one shared-data value
//! under `ricochet.guards.<service>.<config hash>`: the breaker's [`CircuitBreaker::to_bytes`]
//! followed by the budget's [`RetryBudget::to_bytes`] (each present only when configured).
//!
//! The key carries a hash of the guards' configuration (16 hex digits of the FNV-1a hash of the
//! fresh guards' encoding, which holds the configuration and nothing else): two plugin
//! configurations for one service — another listener, another route — each keep their own
//! breaker and budget instead of replacing each other's on every write, while every worker of
//! one configuration shares one. Both encodings are `ricochet-core`'s own and carry their
//! configuration, so a value that is not of this configuration (a hash collision, a value from
//! another version) is still recognised and replaced by fresh guards rather than misread.
//!
//! Every change is a read–modify–write under the shared-data CAS token: a write that lost a
//! race (`CasMismatch`) is redone from a fresh read, so two workers' outcomes are never lost.
//! A value is written only when it changed (a closed breaker's `admit` changes nothing), which
//! keeps the common path to one read.
//!
//! proxy-wasm has no "create if absent": the first write of a missing key is unconditional, so
//! [`SharedGuards::ensure`] writes fresh guards when the plugin is configured, before traffic.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use ricochet_core::breaker::{BreakerPolicy, CircuitBreaker};
use ricochet_core::budget::{BudgetConfig, RetryBudget};

/// How many times a lost CAS race is redone before the update is dropped (and logged).
const MAX_CAS_ROUNDS: u32 = 64;

/// The guards of one service, as read from shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceGuards {
    /// The circuit breaker, when configured.
    pub breaker: Option<CircuitBreaker>,
    /// The retry budget, when configured.
    pub budget: Option<RetryBudget>,
}

/// Where a service's guards live and what they should look like when fresh.
#[derive(Debug, Clone)]
pub struct SharedGuards {
    key: String,
    fresh: ServiceGuards,
}

impl SharedGuards {
    /// The shared guards of `service`, or `None` when neither guard is configured.
    pub fn new(
        service: &str,
        breaker: Option<BreakerPolicy>,
        budget: Option<BudgetConfig>,
    ) -> Option<Self> {
        if breaker.is_none() && budget.is_none() {
            return None;
        }
        let fresh = ServiceGuards {
            breaker: breaker.map(CircuitBreaker::new),
            // Validated with the rest of the policy, so `new` cannot fail here.
            budget: budget.and_then(|b| RetryBudget::new(b).ok()),
        };
        let hash = fnv1a(&encode(&fresh));
        Some(SharedGuards {
            key: format!("ricochet.guards.{service}.{hash:016x}"),
            fresh,
        })
    }

    /// The shared-data key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes fresh guards unless guards of this configuration are already stored.
    pub fn ensure(&self) {
        self.update(|_| ());
    }

    /// Runs `f` on the current guards and stores what it leaves, redoing it from a fresh read
    /// whenever another worker wrote in between. Returns what `f` returned the last time.
    pub fn update<R>(&self, mut f: impl FnMut(&mut ServiceGuards) -> R) -> R {
        let mut rounds = 0;
        loop {
            let (stored, cas) = read(&self.key);
            let read_back = stored.as_deref().and_then(|b| self.decode(b));
            let mut guards = read_back.unwrap_or(self.fresh);
            let answer = f(&mut guards);
            if read_back == Some(guards) {
                return answer;
            }
            match hostcalls::set_shared_data(&self.key, Some(&encode(&guards)), cas) {
                Ok(()) => return answer,
                Err(Status::CasMismatch) if rounds + 1 < MAX_CAS_ROUNDS => rounds += 1,
                Err(status) => {
                    log::warn!(
                        "ricochet: shared data `{}` not updated ({status:?} after {} tries)",
                        self.key,
                        rounds + 1
                    );
                    return answer;
                }
            }
        }
    }

    /// The stored guards, if they were written under this configuration.
    fn decode(&self, bytes: &[u8]) -> Option<ServiceGuards> {
        let mut rest = bytes;
        let breaker = match &self.fresh.breaker {
            None => None,
            Some(fresh) => {
                let (head, tail) = rest.split_at_checked(CircuitBreaker::ENCODED_LEN)?;
                rest = tail;
                let b = CircuitBreaker::from_bytes(head)?;
                (b.policy() == fresh.policy()).then_some(b)?;
                Some(b)
            }
        };
        let budget = match &self.fresh.budget {
            None => None,
            Some(fresh) => {
                let (head, tail) = rest.split_at_checked(RetryBudget::ENCODED_LEN)?;
                rest = tail;
                let b = RetryBudget::from_bytes(head)?;
                let same = b.max_tokens() == fresh.max_tokens()
                    && b.token_ratio_milli() == fresh.token_ratio_milli();
                same.then_some(b)?;
                Some(b)
            }
        };
        rest.is_empty().then_some(ServiceGuards { breaker, budget })
    }
}

/// The stored value of `guards`: the breaker's encoding, then the budget's.
fn encode(guards: &ServiceGuards) -> Vec<u8> {
    let mut out = Vec::with_capacity(CircuitBreaker::ENCODED_LEN + RetryBudget::ENCODED_LEN);
    if let Some(b) = &guards.breaker {
        out.extend_from_slice(&b.to_bytes());
    }
    if let Some(b) = &guards.budget {
        out.extend_from_slice(&b.to_bytes());
    }
    out
}

/// FNV-1a, 64 bits: a short, stable name for a configuration (not a defence against anyone:
/// the stored value is checked against the configuration anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stored bytes and CAS token of `key` (both `None` when absent).
fn read(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    // The SDK traps on statuses other than OK and NOT_FOUND, which no proxy returns here.
    hostcalls::get_shared_data(key).unwrap_or_default()
}
