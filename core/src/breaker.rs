//! Circuit breaker: a pure state machine driven by `(outcome, now_us)`.
//!
//! # Why a breaker as well as a budget?
//!
//! A [retry budget](crate::budget) stops *retries* from piling onto a failing dependency, but
//! every first attempt still goes out. When the dependency is down hard, each of those still
//! costs the caller a timeout and the dependency a connection it cannot serve. A breaker notices
//! the pattern, fails calls at once for a cool-down, and then lets a few probes through to learn
//! whether the dependency is back. It trades a few calls that might have succeeded for fast
//! failure while things are broken and quiet in which they can recover.
//!
//! # States
//!
//! ```text
//!           failure_threshold consecutive failures, or
//!           failure_rate of the calls in window (once there are minimum_calls)
//!  Closed ─────────────────────────────────────────────────▶ Open { until_us }
//!    ▲                                                          │
//!    │ half_open_probes probes succeeded                        │ now_us >= until_us
//!    │                                                          ▼
//!    └──────────────────────────────────────────────────── HalfOpen
//!                any probe failed: Open again, with a fresh cool_down
//! ```
//!
//! * **Closed**: [`CircuitBreaker::admit`] allows every call; [`CircuitBreaker::record`] counts
//!   outcomes. Either trigger opens it, and either can be turned off with `0`.
//! * **Open**: every call is [`Admission::Rejected`] with the cool-down left. Results recorded
//!   now belong to calls admitted before it opened and are ignored.
//! * **HalfOpen**: the first `admit` at or after `until_us` moves here. Up to `half_open_probes`
//!   calls are handed out as [`Admission::Probe`]; the rest are rejected. Once that many probes
//!   have succeeded it closes with a clean slate; the first failed probe re-opens it. Results
//!   recorded while no probe is outstanding are ignored. A probe that got an answer which is
//!   neither a failure nor a success (a rejected request) is handed back with
//!   [`CircuitBreaker::release`], so the next call probes. `record` cannot tell a probe's result
//!   from a late result of a call admitted while closed, so it counts any result recorded while
//!   probes are outstanding as a probe's.
//!
//! A probe whose result never comes (a cancelled call, a lost worker) would leave the breaker
//! half-open for ever. So probes that are still outstanding `cool_down` after the last one was
//! handed out are presumed lost, and new probes are handed out in their place; rejections while
//! probes are outstanding carry the time until that happens as their `retry_after_us`.
//!
//! # Time
//!
//! The caller passes the time in, as integer microseconds from any fixed origin; the breaker
//! never reads a clock. Time may jump forward by any amount, and may go backwards: a result
//! recorded at an earlier time counts in the newest bucket seen, an earlier `admit` while open is
//! told to wait at most `cool_down`, and nothing panics, overflows or underflows.
//!
//! The rate trigger looks at a sliding window kept as a ring of 8 buckets, each `window / 8`
//! wide (rounded down to a whole microsecond): the bucket `now_us` falls in plus the 7 before
//! it. So the window really covers between 7/8 and all of `window`, and old calls fall out one
//! bucket at a time.
//!
//! # Sharing
//!
//! [`CircuitBreaker`] is a 128-byte `Copy` value with no clock and no pointers. A host shares it
//! between workers by storing [`CircuitBreaker::to_bytes`] in any shared slot (a proxy-wasm
//! filter's shared data, a Redis key) and reading it back with [`CircuitBreaker::from_bytes`].
//! The encoding includes the [`BreakerPolicy`], so a stored breaker is self-contained; after a
//! configuration change, start a new breaker.

use core::fmt;

/// Buckets in the sliding window.
const BUCKETS: u64 = 8;
/// The shortest `window` or `cool_down` accepted, in seconds.
const MIN_SECONDS: f64 = 0.001;
/// The longest `window` or `cool_down` accepted, in seconds: a day.
const MAX_SECONDS: f64 = 86_400.0;
/// [`MIN_SECONDS`] in microseconds.
const MIN_US: u64 = 1_000;
/// [`MAX_SECONDS`] in microseconds.
const MAX_US: u64 = 86_400_000_000;
/// Parts per million in a whole: the unit `failure_rate` is kept in.
const PPM: u64 = 1_000_000;
/// The leading byte of the current [`CircuitBreaker::to_bytes`] layout.
const ENCODING_VERSION: u8 = 1;

/// How a [`CircuitBreaker`] trips and recovers, as written in configuration. Durations are in
/// seconds, like the rest of ricochet's configuration.
///
/// [`BreakerConfig::validate`] checks it and turns it into the [`BreakerPolicy`] a breaker runs
/// on.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit. `0` turns this trigger off.
    pub failure_threshold: u32,
    /// Open when failures make up at least this share of the calls in `window`: within
    /// `[0, 1]`, kept to the nearest millionth. `0` turns this trigger off; `1` opens only when
    /// every call in the window failed.
    pub failure_rate: f64,
    /// Calls the window must hold before `failure_rate` is looked at. `0` behaves as `1`.
    pub minimum_calls: u32,
    /// The span of the sliding window for `failure_rate`, in seconds: within `[0.001, 86400]`.
    pub window: f64,
    /// How long the circuit stays open before probing, in seconds: within `[0.001, 86400]`.
    /// Also how long outstanding probes are waited for before they are presumed lost.
    pub cool_down: f64,
    /// Probes handed out while half-open, all of which must succeed to close it: at least `1`.
    pub half_open_probes: u32,
}

impl BreakerConfig {
    /// Checks every field, naming the first one out of range, and converts the durations to
    /// microseconds (rounded to the nearest) and the rate to parts per million.
    ///
    /// Turning both triggers off (`failure_threshold` and `failure_rate` both `0`) is allowed:
    /// the breaker then never opens.
    ///
    /// # Errors
    ///
    /// [`BreakerError::FailureRate`] if `failure_rate` is NaN or outside `[0, 1]`;
    /// [`BreakerError::Window`] or [`BreakerError::CoolDown`] if that duration is NaN or outside
    /// `[0.001, 86400]` seconds; [`BreakerError::HalfOpenProbes`] if `half_open_probes` is `0`.
    pub fn validate(&self) -> Result<BreakerPolicy, BreakerError> {
        // `contains` is false for NaN, and the closed ranges exclude both infinities.
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(BreakerError::FailureRate {
                value: self.failure_rate,
            });
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&self.window) {
            return Err(BreakerError::Window { value: self.window });
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&self.cool_down) {
            return Err(BreakerError::CoolDown {
                value: self.cool_down,
            });
        }
        if self.half_open_probes == 0 {
            return Err(BreakerError::HalfOpenProbes {
                value: self.half_open_probes,
            });
        }
        // A positive rate too small for a millionth still means "on".
        let failure_rate_ppm = if self.failure_rate > 0.0 {
            ((self.failure_rate * PPM as f64 + 0.5) as u32).max(1)
        } else {
            0
        };
        Ok(BreakerPolicy {
            window_us: seconds_to_us(self.window),
            cool_down_us: seconds_to_us(self.cool_down),
            failure_threshold: self.failure_threshold,
            failure_rate_ppm,
            minimum_calls: self.minimum_calls,
            half_open_probes: self.half_open_probes,
        })
    }
}

/// Seconds, already checked to be within `[MIN_SECONDS, MAX_SECONDS]`, to the nearest µs.
fn seconds_to_us(seconds: f64) -> u64 {
    // In range, the product is within [1e3, 8.64e10]; `as` saturates regardless.
    ((seconds * 1e6 + 0.5) as u64).clamp(MIN_US, MAX_US)
}

/// A [`BreakerConfig`] field out of range. [`fmt::Display`] names the field and the value, for
/// example `circuit_breaker.failure_rate must be within [0, 1], got 1.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BreakerError {
    /// `failure_rate` is NaN or outside `[0, 1]`.
    FailureRate {
        /// The rejected value.
        value: f64,
    },
    /// `window` is NaN or outside `[0.001, 86400]` seconds.
    Window {
        /// The rejected value, in seconds.
        value: f64,
    },
    /// `cool_down` is NaN or outside `[0.001, 86400]` seconds.
    CoolDown {
        /// The rejected value, in seconds.
        value: f64,
    },
    /// `half_open_probes` is `0`.
    HalfOpenProbes {
        /// The rejected value.
        value: u32,
    },
}

impl BreakerError {
    /// The configuration path of the offending field, such as `circuit_breaker.window`.
    pub fn field(&self) -> &'static str {
        match self {
            BreakerError::FailureRate { .. } => "circuit_breaker.failure_rate",
            BreakerError::Window { .. } => "circuit_breaker.window",
            BreakerError::CoolDown { .. } => "circuit_breaker.cool_down",
            BreakerError::HalfOpenProbes { .. } => "circuit_breaker.half_open_probes",
        }
    }
}

impl fmt::Display for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field();
        match self {
            BreakerError::FailureRate { value } => {
                write!(f, "{field} must be within [0, 1], got {value}")
            }
            BreakerError::Window { value } | BreakerError::CoolDown { value } => write!(
                f,
                "{field} must be within [{MIN_SECONDS}, {MAX_SECONDS}] seconds, got {value}"
            ),
            BreakerError::HalfOpenProbes { value } => {
                write!(f, "{field} must be at least 1, got {value}")
            }
        }
    }
}

impl core::error::Error for BreakerError {}

/// A validated [`BreakerConfig`], in integer units: what a [`CircuitBreaker`] runs on.
///
/// Made only by [`BreakerConfig::validate`] (or read back inside
/// [`CircuitBreaker::from_bytes`]), so its fields are always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BreakerPolicy {
    window_us: u64,
    cool_down_us: u64,
    failure_threshold: u32,
    failure_rate_ppm: u32,
    minimum_calls: u32,
    half_open_probes: u32,
}

impl BreakerPolicy {
    /// Consecutive failures that open the circuit; `0` if that trigger is off.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// The failure rate that opens the circuit, in millionths (`1_000_000` is every call);
    /// `0` if that trigger is off.
    pub fn failure_rate_ppm(&self) -> u32 {
        self.failure_rate_ppm
    }

    /// Calls the window must hold before the rate trigger is looked at.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The span of the sliding window, in µs.
    pub fn window_us(&self) -> u64 {
        self.window_us
    }

    /// How long the circuit stays open, in µs.
    pub fn cool_down_us(&self) -> u64 {
        self.cool_down_us
    }

    /// Probes handed out while half-open, all of which must succeed to close it.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// The width of one window bucket, in µs: at least 125.
    fn bucket_us(&self) -> u64 {
        (self.window_us / BUCKETS).max(1)
    }

    /// The absolute index of the bucket `now_us` falls in.
    fn epoch(&self, now_us: u64) -> u64 {
        now_us / self.bucket_us()
    }

    /// Whether the integer fields are ones [`BreakerConfig::validate`] can produce.
    fn is_valid(&self) -> bool {
        (MIN_US..=MAX_US).contains(&self.window_us)
            && (MIN_US..=MAX_US).contains(&self.cool_down_us)
            && u64::from(self.failure_rate_ppm) <= PPM
            && self.half_open_probes >= 1
    }
}

/// Where a breaker stands at a given time, as [`CircuitBreaker::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until `until_us`.
    Open {
        /// When the cool-down ends and probing may start, in µs.
        until_us: u64,
    },
    /// A few probes are let through to learn whether the dependency is back.
    HalfOpen,
}

/// What [`CircuitBreaker::admit`] says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a probe handed out and never recorded holds the breaker half-open for a cool-down"]
pub enum Admission {
    /// The circuit is closed: make the call and [`record`](CircuitBreaker::record) its outcome.
    Allowed,
    /// The circuit is half-open and this call is one of its probes: make it and record its
    /// outcome, which decides whether the circuit closes or opens again.
    Probe,
    /// Do not make the call.
    Rejected {
        /// How long until asking again could be answered differently, in µs: the cool-down
        /// left while open, or the time until outstanding probes are presumed lost while
        /// half-open. Within `[1, cool_down]`.
        retry_after_us: u64,
    },
}

/// One bucket of the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
}

/// The state proper, with what each state needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until_us: u64,
    },
    HalfOpen {
        /// When the newest probe was handed out.
        last_probe_us: u64,
        /// Probes handed out whose results are not in.
        outstanding: u32,
        /// Probes that have succeeded since it went half-open.
        successes: u32,
    },
}

/// A circuit breaker: a pure state machine over `(outcome, now_us)`.
///
/// Ask [`admit`](Self::admit) before each call, and [`record`](Self::record) the outcome of each
/// call it allowed. See the [module docs](self) for the states and the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    phase: Phase,
    /// The absolute index of the newest bucket the window has seen.
    head_epoch: u64,
    /// The window; the bucket with absolute index `e` lives at `buckets[e % 8]`.
    buckets: [Bucket; BUCKETS as usize],
}

const _: () = assert!(core::mem::size_of::<CircuitBreaker>() <= 128);

impl CircuitBreaker {
    /// The length of [`CircuitBreaker::to_bytes`].
    pub const ENCODED_LEN: usize = 1 + 32 + 17 + 8 + 8 * BUCKETS as usize;

    /// A closed breaker with an empty window.
    pub fn new(policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            policy,
            phase: Phase::Closed {
                consecutive_failures: 0,
            },
            head_epoch: 0,
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    /// The policy it runs on.
    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// Asks whether a call may go out at `now_us`.
    ///
    /// Closed: always [`Admission::Allowed`]. Open: [`Admission::Rejected`] with the cool-down
    /// left, until `now_us` reaches its end, when it turns half-open and this call is the first
    /// [`Admission::Probe`]. Half-open: a probe while fewer than `half_open_probes` are
    /// outstanding or succeeded, otherwise rejected.
    pub fn admit(&mut self, now_us: u64) -> Admission {
        let cool_down_us = self.policy.cool_down_us;
        match self.phase {
            Phase::Closed { .. } => Admission::Allowed,
            Phase::Open { until_us } if now_us >= until_us => {
                self.phase = Phase::HalfOpen {
                    last_probe_us: now_us,
                    outstanding: 1,
                    successes: 0,
                };
                Admission::Probe
            }
            Phase::Open { until_us } => Admission::Rejected {
                // Time that went backwards must not stretch the wait past one cool-down.
                retry_after_us: wait(until_us, now_us, cool_down_us),
            },
            Phase::HalfOpen {
                last_probe_us,
                outstanding,
                successes,
            } => {
                let handed_out = u64::from(outstanding) + u64::from(successes);
                let lost = now_us.saturating_sub(last_probe_us) >= cool_down_us;
                if handed_out < u64::from(self.policy.half_open_probes) || lost {
                    // Lost probes are forgotten and replaced; successes already in still count.
                    let outstanding = if lost { 0 } else { outstanding };
                    self.phase = Phase::HalfOpen {
                        last_probe_us: now_us,
                        outstanding: outstanding + 1,
                        successes,
                    };
                    Admission::Probe
                } else {
                    Admission::Rejected {
                        retry_after_us: wait(
                            last_probe_us.saturating_add(cool_down_us),
                            now_us,
                            cool_down_us,
                        ),
                    }
                }
            }
        }
    }

    /// Records the outcome of a call that [`admit`](Self::admit) let through, at `now_us`.
    ///
    /// Closed: counts it in the window and the run of consecutive failures, and opens the
    /// circuit (for `cool_down` from `now_us`) if either trigger fires. Open: ignored.
    /// Half-open: taken as an outstanding probe's result (ignored if none is outstanding); a
    /// failure re-opens the circuit with a fresh cool-down, and the `half_open_probes`-th
    /// success closes it with an empty window.
    pub fn record(&mut self, success: bool, now_us: u64) {
        match self.phase {
            Phase::Closed {
                consecutive_failures,
            } => {
                let slot = self.roll(now_us);
                let bucket = &mut self.buckets[slot];
                bucket.calls = bucket.calls.saturating_add(1);
                if success {
                    self.phase = Phase::Closed {
                        consecutive_failures: 0,
                    };
                    return;
                }
                bucket.failures = bucket.failures.saturating_add(1);
                let consecutive_failures = consecutive_failures.saturating_add(1);
                self.phase = Phase::Closed {
                    consecutive_failures,
                };
                if self.trips(consecutive_failures) {
                    self.open(now_us);
                }
            }
            Phase::Open { .. } => {}
            Phase::HalfOpen {
                last_probe_us,
                outstanding,
                successes,
            } => {
                if outstanding == 0 {
                    return;
                }
                if !success {
                    self.open(now_us);
                    return;
                }
                let successes = successes + 1;
                if successes >= self.policy.half_open_probes {
                    self.close(now_us);
                } else {
                    self.phase = Phase::HalfOpen {
                        last_probe_us,
                        outstanding: outstanding - 1,
                        successes,
                    };
                }
            }
        }
    }

    /// Hands back the probe of a call that [`admit`](Self::admit) let through and that ended
    /// in an answer which is neither a failure nor a success (a request the dependency
    /// rejected: validation, not found, …).
    ///
    /// Half-open: one outstanding probe is given back without counting, so the next `admit`
    /// hands out a probe again (as resilience4j's ignored exceptions release their permission);
    /// ignored if none is outstanding. Closed or open: nothing to do — such an answer is not
    /// counted in the window either.
    pub fn release(&mut self) {
        if let Phase::HalfOpen {
            last_probe_us,
            outstanding,
            successes,
        } = self.phase
        {
            self.phase = Phase::HalfOpen {
                last_probe_us,
                outstanding: outstanding.saturating_sub(1),
                successes,
            };
        }
    }

    /// Where it stands at `now_us`. An open circuit whose cool-down has ended reads as
    /// half-open, as the next [`admit`](Self::admit) will make it.
    pub fn state(&self, now_us: u64) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until_us } if now_us < until_us => BreakerState::Open { until_us },
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The calls and failures in the sliding window as of `now_us`, as `(calls, failures)`.
    /// Always `(0, 0)` while open or half-open: the window starts empty when it closes.
    pub fn window_counts(&self, now_us: u64) -> (u64, u64) {
        self.counts_as_of(self.policy.epoch(now_us).max(self.head_epoch))
    }

    /// The calls and failures in the 8 buckets ending with absolute index `newest`, which must
    /// be at or after `head_epoch`.
    fn counts_as_of(&self, newest: u64) -> (u64, u64) {
        let (mut calls, mut failures) = (0u64, 0u64);
        for age in 0..BUCKETS {
            let Some(epoch) = self.head_epoch.checked_sub(age) else {
                break;
            };
            if newest - epoch >= BUCKETS {
                break;
            }
            let bucket = self.buckets[(epoch % BUCKETS) as usize];
            calls += u64::from(bucket.calls);
            failures += u64::from(bucket.failures);
        }
        (calls, failures)
    }

    /// Moves the window to `now_us`, clearing buckets that fell out of it, and returns the
    /// slot to count in. A time before the newest bucket counts in the newest bucket.
    fn roll(&mut self, now_us: u64) -> usize {
        let epoch = self.policy.epoch(now_us);
        if epoch > self.head_epoch {
            let gap = epoch - self.head_epoch;
            if gap >= BUCKETS {
                self.buckets = [Bucket::default(); BUCKETS as usize];
            } else {
                let head_slot = self.head_epoch % BUCKETS;
                for step in 1..=gap {
                    self.buckets[((head_slot + step) % BUCKETS) as usize] = Bucket::default();
                }
            }
            self.head_epoch = epoch;
        }
        (self.head_epoch % BUCKETS) as usize
    }

    /// Whether the window, just updated with a failure, opens the circuit.
    fn trips(&self, consecutive_failures: u32) -> bool {
        let policy = &self.policy;
        if policy.failure_threshold > 0 && consecutive_failures >= policy.failure_threshold {
            return true;
        }
        if policy.failure_rate_ppm == 0 {
            return false;
        }
        // `record` has just rolled the window to `head_epoch`.
        let (calls, failures) = self.counts_as_of(self.head_epoch);
        // At most 8 × u32::MAX calls, so neither product comes near u64::MAX.
        calls >= u64::from(policy.minimum_calls.max(1))
            && failures * PPM >= calls * u64::from(policy.failure_rate_ppm)
    }

    fn open(&mut self, now_us: u64) {
        self.phase = Phase::Open {
            until_us: now_us.saturating_add(self.policy.cool_down_us),
        };
        self.buckets = [Bucket::default(); BUCKETS as usize];
    }

    fn close(&mut self, now_us: u64) {
        self.phase = Phase::Closed {
            consecutive_failures: 0,
        };
        self.buckets = [Bucket::default(); BUCKETS as usize];
        self.head_epoch = self.policy.epoch(now_us);
    }

    /// The breaker, policy included, as [`CircuitBreaker::ENCODED_LEN`] bytes, little-endian:
    ///
    /// | bytes | field |
    /// | --- | --- |
    /// | 1 | version, `1` |
    /// | 4 + 4 + 4 | `failure_threshold`, `failure_rate_ppm`, `minimum_calls` (`u32`) |
    /// | 8 + 8 | `window_us`, `cool_down_us` (`u64`) |
    /// | 4 | `half_open_probes` (`u32`) |
    /// | 1 | state: `0` closed, `1` open, `2` half-open |
    /// | 8 | open: `until_us`; half-open: when the last probe was handed out; closed: `0` |
    /// | 4 | closed: consecutive failures; half-open: outstanding probes; open: `0` |
    /// | 4 | half-open: probe successes; otherwise `0` |
    /// | 8 | the absolute index of the newest window bucket (`u64`) |
    /// | 8 × 8 | the ring of buckets, slot by slot: calls, failures (`u32`) |
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let mut w = Writer::new(&mut out);
        let p = &self.policy;
        w.u8(ENCODING_VERSION);
        w.u32(p.failure_threshold);
        w.u32(p.failure_rate_ppm);
        w.u32(p.minimum_calls);
        w.u64(p.window_us);
        w.u64(p.cool_down_us);
        w.u32(p.half_open_probes);
        let (tag, a, b, c) = match self.phase {
            Phase::Closed {
                consecutive_failures,
            } => (0, 0, consecutive_failures, 0),
            Phase::Open { until_us } => (1, until_us, 0, 0),
            Phase::HalfOpen {
                last_probe_us,
                outstanding,
                successes,
            } => (2, last_probe_us, outstanding, successes),
        };
        w.u8(tag);
        w.u64(a);
        w.u32(b);
        w.u32(c);
        w.u64(self.head_epoch);
        for bucket in &self.buckets {
            w.u32(bucket.calls);
            w.u32(bucket.failures);
        }
        out
    }

    /// Reads back what [`CircuitBreaker::to_bytes`] wrote.
    ///
    /// `None` if `bytes` is not exactly [`CircuitBreaker::ENCODED_LEN`] long, starts with an
    /// unknown version, or holds something no breaker can have: a policy `validate` cannot
    /// produce, an unknown state, a non-zero unused field, more probes than `half_open_probes`,
    /// or a bucket with more failures than calls. Every accepted input round-trips: its
    /// `to_bytes` is the same bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut r = Reader(bytes);
        if r.u8()? != ENCODING_VERSION {
            return None;
        }
        let failure_threshold = r.u32()?;
        let failure_rate_ppm = r.u32()?;
        let minimum_calls = r.u32()?;
        let window_us = r.u64()?;
        let cool_down_us = r.u64()?;
        let half_open_probes = r.u32()?;
        let policy = BreakerPolicy {
            window_us,
            cool_down_us,
            failure_threshold,
            failure_rate_ppm,
            minimum_calls,
            half_open_probes,
        };
        if !policy.is_valid() {
            return None;
        }
        let (tag, a, b, c) = (r.u8()?, r.u64()?, r.u32()?, r.u32()?);
        let phase = match (tag, a, b, c) {
            (0, 0, consecutive_failures, 0) => Phase::Closed {
                consecutive_failures,
            },
            (1, until_us, 0, 0) => Phase::Open { until_us },
            (2, last_probe_us, outstanding, successes)
                if successes < half_open_probes
                    && u64::from(outstanding) + u64::from(successes)
                        <= u64::from(half_open_probes) =>
            {
                Phase::HalfOpen {
                    last_probe_us,
                    outstanding,
                    successes,
                }
            }
            _ => return None,
        };
        let head_epoch = r.u64()?;
        let mut buckets = [Bucket::default(); BUCKETS as usize];
        for bucket in &mut buckets {
            let (calls, failures) = (r.u32()?, r.u32()?);
            if failures > calls {
                return None;
            }
            *bucket = Bucket { calls, failures };
        }
        Some(CircuitBreaker {
            policy,
            phase,
            head_epoch,
            buckets,
        })
    }
}

/// The time from `now_us` to `until_us`, within `[1, cool_down_us]`.
fn wait(until_us: u64, now_us: u64, cool_down_us: u64) -> u64 {
    until_us.saturating_sub(now_us).min(cool_down_us).max(1)
}

/// Fills a byte buffer front to back, little-endian.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        // The layout is fixed and sized by ENCODED_LEN; the tests check every byte is written.
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

/// Consumes a byte slice front to back, little-endian.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&v, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        let (v, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*v))
    }

    fn u64(&mut self) -> Option<u64> {
        let (v, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    const S: u64 = 1_000_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            failure_rate: 0.0,
            minimum_calls: 0,
            window: 8.0,
            cool_down: 5.0,
            half_open_probes: 2,
        }
    }

    fn open_until(until_us: u64) -> BreakerState {
        BreakerState::Open { until_us }
    }

    fn breaker(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::new(config.validate().unwrap())
    }

    /// A breaker opened at `t` by three consecutive failures, cool-down 5 s, 2 probes.
    fn opened_at(t: u64) -> CircuitBreaker {
        let mut b = breaker(config());
        for _ in 0..3 {
            assert_eq!(b.admit(t), Admission::Allowed);
            b.record(false, t);
        }
        assert_eq!(b.state(t), open_until(t.saturating_add(5 * S)));
        b
    }

    fn round_trips(b: &CircuitBreaker) {
        let bytes = b.to_bytes();
        assert_eq!(CircuitBreaker::from_bytes(&bytes), Some(*b));
    }

    #[test]
    fn size_is_modest() {
        assert_eq!(core::mem::size_of::<CircuitBreaker>(), 128);
        assert_eq!(CircuitBreaker::ENCODED_LEN, 122);
    }

    #[test]
    fn closed_allows_and_consecutive_failures_open() {
        let mut b = breaker(config());
        assert_eq!(b.state(0), BreakerState::Closed);
        assert_eq!(b.admit(0), Admission::Allowed);
        b.record(false, 10);
        b.record(false, 20);
        b.record(true, 30); // breaks the run
        b.record(false, 40);
        b.record(false, 50);
        assert_eq!(b.state(50), BreakerState::Closed);
        assert_eq!(b.admit(50), Admission::Allowed);
        b.record(false, 60);
        assert_eq!(b.state(60), open_until(60 + 5 * S));
        assert_eq!(b.window_counts(60), (0, 0), "opening clears the window");
        round_trips(&b);
    }

    #[test]
    fn threshold_one_opens_on_first_failure() {
        let mut b = breaker(BreakerConfig {
            failure_threshold: 1,
            ..config()
        });
        b.record(true, 0);
        b.record(false, 1);
        assert!(matches!(b.state(1), BreakerState::Open { .. }));
    }

    #[test]
    fn rate_opens_only_with_minimum_calls() {
        let rate = BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.5,
            minimum_calls: 4,
            ..config()
        };
        let mut b = breaker(rate);
        b.record(false, 0);
        b.record(false, 1);
        b.record(false, 2);
        assert_eq!(
            b.state(2),
            BreakerState::Closed,
            "100% of 3 calls is too few"
        );
        assert_eq!(b.window_counts(2), (3, 3));
        b.record(false, 3);
        assert_eq!(b.state(3), open_until(3 + 5 * S));

        // Exactly at the rate opens; just under does not.
        let mut b = breaker(rate);
        for _ in 0..3 {
            b.record(true, 0);
        }
        b.record(false, 0);
        b.record(false, 0);
        assert_eq!(b.window_counts(0), (5, 2));
        assert_eq!(b.state(0), BreakerState::Closed, "40% < 50%");
        b.record(false, 0);
        assert!(matches!(b.state(0), BreakerState::Open { .. }), "50% of 6");
    }

    #[test]
    fn rate_of_one_needs_every_call_failed_and_minimum_zero_is_one() {
        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 1.0,
            minimum_calls: 0,
            ..config()
        });
        b.record(false, 0);
        assert!(matches!(b.state(0), BreakerState::Open { .. }));

        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 1.0,
            minimum_calls: 2,
            ..config()
        });
        b.record(true, 0);
        for _ in 0..100 {
            b.record(false, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
    }

    #[test]
    fn both_triggers_off_never_opens() {
        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.0,
            ..config()
        });
        for t in 0..1000 {
            assert_eq!(b.admit(t), Admission::Allowed);
            b.record(false, t);
        }
        assert_eq!(b.state(1000), BreakerState::Closed);
        assert_eq!(b.window_counts(1000), (1000, 1000));
    }

    #[test]
    fn open_rejects_with_cool_down_left() {
        let t = 100 * S;
        let mut b = opened_at(t);
        assert_eq!(
            b.admit(t),
            Admission::Rejected {
                retry_after_us: 5 * S
            }
        );
        assert_eq!(
            b.admit(t + 3 * S + 250),
            Admission::Rejected {
                retry_after_us: 2 * S - 250
            }
        );
        assert_eq!(
            b.admit(t + 5 * S - 1),
            Admission::Rejected { retry_after_us: 1 }
        );
        // Time going backwards never asks for more than one cool-down.
        assert_eq!(
            b.admit(0),
            Admission::Rejected {
                retry_after_us: 5 * S
            }
        );
        assert_eq!(b.state(t + 5 * S - 1), open_until(t + 5 * S));
        round_trips(&b);
    }

    #[test]
    fn results_while_open_are_ignored() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let before = b;
        b.record(true, t + 1);
        b.record(false, t + 2);
        assert_eq!(b, before);
    }

    #[test]
    fn open_turns_half_open_after_cool_down() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let until = t + 5 * S;
        assert_eq!(b.state(until), BreakerState::HalfOpen);
        assert_eq!(b.admit(until + 7), Admission::Probe);
        assert_eq!(b.state(until + 7), BreakerState::HalfOpen);
        round_trips(&b);
    }

    #[test]
    fn half_open_hands_out_at_most_the_probe_limit() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        assert_eq!(b.admit(h + 100), Admission::Probe);
        // Rejected until the outstanding probes would be presumed lost: cool_down after the last.
        assert_eq!(
            b.admit(h + 300),
            Admission::Rejected {
                retry_after_us: 5 * S - 200
            }
        );
        // A success frees no slot: all `half_open_probes` must succeed, one round at a time.
        b.record(true, h + 400);
        assert_eq!(b.state(h + 400), BreakerState::HalfOpen);
        assert!(matches!(b.admit(h + 500), Admission::Rejected { .. }));
        round_trips(&b);
    }

    #[test]
    fn probe_successes_close_with_a_clean_slate() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        assert_eq!(b.admit(h), Admission::Probe);
        b.record(true, h + 1);
        assert_eq!(b.state(h + 1), BreakerState::HalfOpen);
        b.record(true, h + 2);
        assert_eq!(b.state(h + 2), BreakerState::Closed);
        assert_eq!(b.admit(h + 3), Admission::Allowed);
        assert_eq!(b.window_counts(h + 3), (0, 0));
        // The consecutive count restarted too: two failures do not reopen it.
        b.record(false, h + 4);
        b.record(false, h + 5);
        assert_eq!(b.state(h + 5), BreakerState::Closed);
        b.record(false, h + 6);
        assert_eq!(b.state(h + 6), open_until(h + 6 + 5 * S));
    }

    #[test]
    fn probe_failure_reopens_with_a_fresh_cool_down() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        assert_eq!(b.admit(h), Admission::Probe);
        b.record(true, h + 10);
        b.record(false, h + 20);
        assert_eq!(b.state(h + 20), open_until(h + 20 + 5 * S));
        assert_eq!(
            b.admit(h + 20),
            Admission::Rejected {
                retry_after_us: 5 * S
            }
        );
        // And the next round starts from scratch.
        let h2 = h + 20 + 5 * S;
        assert_eq!(b.admit(h2), Admission::Probe);
        assert_eq!(b.admit(h2), Admission::Probe);
        b.record(true, h2);
        b.record(true, h2);
        assert_eq!(b.state(h2), BreakerState::Closed);
    }

    #[test]
    fn a_released_probe_is_handed_out_again_without_counting() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        assert_eq!(b.admit(h), Admission::Probe);
        assert!(matches!(b.admit(h + 1), Admission::Rejected { .. }));
        // One probe got an answer that is neither a failure nor a success (a 404): handed back.
        b.release();
        assert_eq!(b.state(h + 2), BreakerState::HalfOpen);
        assert_eq!(b.admit(h + 2), Admission::Probe, "the next call probes");
        // It counted as nothing: two successes are still needed to close.
        b.record(true, h + 3);
        assert_eq!(b.state(h + 3), BreakerState::HalfOpen);
        b.record(true, h + 4);
        assert_eq!(b.state(h + 4), BreakerState::Closed);
        round_trips(&b);
        // Closed or open, a release changes nothing.
        let closed = b;
        b.release();
        assert_eq!(b, closed);
        let mut open = opened_at(t);
        let before = open;
        open.release();
        assert_eq!(open, before);
        // Half-open with nothing outstanding: ignored.
        let mut idle = opened_at(t);
        assert_eq!(idle.admit(h), Admission::Probe);
        idle.record(true, h);
        let before = idle;
        idle.release();
        assert_eq!(idle, before);
    }

    #[test]
    fn half_open_results_without_outstanding_probes_are_ignored() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        b.record(true, h + 1); // the probe: 1 of 2 successes, none outstanding
        let before = b;
        b.record(false, h + 2); // a late result of a call admitted while closed
        b.record(true, h + 3);
        assert_eq!(b, before);
        assert_eq!(b.admit(h + 4), Admission::Probe);
        b.record(true, h + 5);
        assert_eq!(b.state(h + 5), BreakerState::Closed);
    }

    #[test]
    fn lost_probes_are_replaced_after_a_cool_down() {
        let t = 10 * S;
        let mut b = opened_at(t);
        let h = t + 5 * S;
        assert_eq!(b.admit(h), Admission::Probe);
        assert_eq!(b.admit(h + 1), Admission::Probe);
        assert_eq!(
            b.admit(h + 5 * S),
            Admission::Rejected { retry_after_us: 1 }
        );
        // Neither result came back within a cool-down of the last probe.
        assert_eq!(b.admit(h + 5 * S + 1), Admission::Probe);
        assert_eq!(b.admit(h + 5 * S + 2), Admission::Probe);
        assert!(matches!(b.admit(h + 5 * S + 3), Admission::Rejected { .. }));
        b.record(true, h + 5 * S + 4);
        b.record(true, h + 5 * S + 5);
        assert_eq!(b.state(h + 5 * S + 5), BreakerState::Closed);
    }

    #[test]
    fn window_slides_bucket_by_bucket() {
        // window 8 s: 8 buckets of 1 s. Triggers off, so only the counting is tested.
        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.0,
            ..config()
        });
        for second in 0..8 {
            b.record(second % 2 == 0, second * S + 500);
        }
        assert_eq!(b.window_counts(7 * S), (8, 4));
        // Reading later drops the buckets that fell out, without recording.
        assert_eq!(
            b.window_counts(8 * S),
            (7, 4),
            "second 0, a success, is gone"
        );
        assert_eq!(b.window_counts(9 * S), (6, 3));
        assert_eq!(b.window_counts(14 * S + 999_999), (1, 1));
        assert_eq!(b.window_counts(15 * S), (0, 0));
        // Recording at 10 s clears seconds 0..=2 and counts in a fresh bucket.
        b.record(false, 10 * S);
        assert_eq!(b.window_counts(10 * S), (6, 4));
        round_trips(&b);
    }

    #[test]
    fn rate_forgets_calls_that_left_the_window() {
        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.5,
            minimum_calls: 4,
            ..config()
        });
        b.record(false, 0);
        b.record(false, 0);
        b.record(false, 0);
        b.record(false, 8 * S); // the first three are 8 buckets old now
        assert_eq!(b.state(8 * S), BreakerState::Closed);
        assert_eq!(b.window_counts(8 * S), (1, 1));

        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.5,
            minimum_calls: 4,
            ..config()
        });
        b.record(false, 0);
        b.record(false, 0);
        b.record(false, 0);
        b.record(false, 8 * S - 1); // still 7 buckets on
        assert!(matches!(b.state(8 * S - 1), BreakerState::Open { .. }));
    }

    #[test]
    fn jumps_and_backwards_time() {
        let mut b = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.0,
            ..config()
        });
        b.record(false, 5 * S);
        b.record(true, 6 * S);
        // Backwards: counts in the newest bucket (6 s), never underflows.
        b.record(false, 0);
        assert_eq!(b.window_counts(0), (3, 2));
        assert_eq!(b.window_counts(6 * S), (3, 2));
        assert_eq!(
            b.window_counts(12 * S),
            (3, 2),
            "seconds 5 and 6 are still in"
        );
        assert_eq!(
            b.window_counts(13 * S),
            (2, 1),
            "only the 6 s bucket is left"
        );
        // A jump far longer than the window clears everything.
        b.record(true, 1_000_000 * S);
        assert_eq!(b.window_counts(1_000_000 * S), (1, 0));
        // The far end of time.
        b.record(false, u64::MAX);
        assert_eq!(b.window_counts(u64::MAX), (1, 1));
        b.record(false, 0);
        assert_eq!(b.window_counts(u64::MAX), (2, 2));
        round_trips(&b);

        // Opening near the end of time saturates instead of overflowing.
        let mut b = opened_at(u64::MAX - 1);
        assert_eq!(b.state(u64::MAX - 1), open_until(u64::MAX));
        assert_eq!(
            b.admit(u64::MAX - 1),
            Admission::Rejected { retry_after_us: 1 }
        );
        assert_eq!(b.admit(u64::MAX), Admission::Probe);
        assert_eq!(b.admit(u64::MAX), Admission::Probe);
        assert!(matches!(
            b.admit(u64::MAX),
            Admission::Rejected { retry_after_us: 1 }
        ));
    }

    #[test]
    fn validate_converts_units() {
        let p = BreakerConfig {
            failure_rate: 0.25,
            window: 0.0015,
            cool_down: 86_400.0,
            ..config()
        }
        .validate()
        .unwrap();
        assert_eq!(p.window_us(), 1_500);
        assert_eq!(p.cool_down_us(), 86_400 * S);
        assert_eq!(p.failure_rate_ppm(), 250_000);
        assert_eq!(p.failure_threshold(), 3);
        assert_eq!(p.minimum_calls(), 0);
        assert_eq!(p.half_open_probes(), 2);

        let p = BreakerConfig {
            failure_rate: 1e-9,
            window: 0.001,
            cool_down: 0.1 + 0.2, // 0.30000000000000004
            ..config()
        }
        .validate()
        .unwrap();
        assert_eq!(p.failure_rate_ppm(), 1, "a tiny positive rate stays on");
        assert_eq!(p.window_us(), 1_000);
        assert_eq!(p.cool_down_us(), 300_000);
        let p = BreakerConfig {
            failure_rate: -0.0,
            ..config()
        };
        assert_eq!(p.validate().unwrap().failure_rate_ppm(), 0);
        let p = BreakerConfig {
            failure_rate: 1.0,
            ..config()
        };
        assert_eq!(p.validate().unwrap().failure_rate_ppm(), 1_000_000);
    }

    #[test]
    fn validation_errors_name_field_and_value() {
        let cases: [(BreakerConfig, &str, &str); 9] = [
            (
                BreakerConfig {
                    failure_rate: 1.5,
                    ..config()
                },
                "circuit_breaker.failure_rate",
                "circuit_breaker.failure_rate must be within [0, 1], got 1.5",
            ),
            (
                BreakerConfig {
                    failure_rate: -0.1,
                    ..config()
                },
                "circuit_breaker.failure_rate",
                "circuit_breaker.failure_rate must be within [0, 1], got -0.1",
            ),
            (
                BreakerConfig {
                    failure_rate: f64::NAN,
                    ..config()
                },
                "circuit_breaker.failure_rate",
                "circuit_breaker.failure_rate must be within [0, 1], got NaN",
            ),
            (
                BreakerConfig {
                    window: 0.0,
                    ..config()
                },
                "circuit_breaker.window",
                "circuit_breaker.window must be within [0.001, 86400] seconds, got 0",
            ),
            (
                BreakerConfig {
                    window: f64::INFINITY,
                    ..config()
                },
                "circuit_breaker.window",
                "circuit_breaker.window must be within [0.001, 86400] seconds, got inf",
            ),
            (
                BreakerConfig {
                    cool_down: -1.0,
                    ..config()
                },
                "circuit_breaker.cool_down",
                "circuit_breaker.cool_down must be within [0.001, 86400] seconds, got -1",
            ),
            (
                BreakerConfig {
                    cool_down: 86_400.5,
                    ..config()
                },
                "circuit_breaker.cool_down",
                "circuit_breaker.cool_down must be within [0.001, 86400] seconds, got 86400.5",
            ),
            (
                BreakerConfig {
                    cool_down: f64::NAN,
                    ..config()
                },
                "circuit_breaker.cool_down",
                "circuit_breaker.cool_down must be within [0.001, 86400] seconds, got NaN",
            ),
            (
                BreakerConfig {
                    half_open_probes: 0,
                    ..config()
                },
                "circuit_breaker.half_open_probes",
                "circuit_breaker.half_open_probes must be at least 1, got 0",
            ),
        ];
        for (config, field, message) in cases {
            let e = config.validate().unwrap_err();
            assert_eq!(e.field(), field);
            assert_eq!(e.to_string(), message);
        }
        assert_eq!(
            BreakerConfig {
                window: 0.0009,
                ..config()
            }
            .validate(),
            Err(BreakerError::Window { value: 0.0009 })
        );
    }

    #[test]
    fn bytes_round_trip_in_every_state_and_reject_malformed() {
        let closed = {
            let mut b = breaker(config());
            b.record(false, 3 * S);
            b.record(true, 4 * S);
            b.record(false, 5 * S);
            b
        };
        let open = opened_at(7 * S);
        let half_open = {
            let mut b = opened_at(7 * S);
            assert_eq!(b.admit(12 * S), Admission::Probe);
            b
        };
        for b in [closed, open, half_open] {
            round_trips(&b);
        }
        let bytes = closed.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1..5], 3u32.to_le_bytes());
        assert_eq!(bytes[33], 0, "closed");
        assert_eq!(bytes[42..46], 1u32.to_le_bytes(), "one consecutive failure");
        assert_eq!(bytes[50..58], 5u64.to_le_bytes(), "newest bucket: second 5");
        assert_eq!(open.to_bytes()[33], 1);
        assert_eq!(half_open.to_bytes()[33], 2);

        assert_eq!(CircuitBreaker::from_bytes(&bytes[..121]), None);
        assert_eq!(CircuitBreaker::from_bytes(&[]), None);
        let mut long = [0u8; 123];
        long[..122].copy_from_slice(&bytes);
        assert_eq!(CircuitBreaker::from_bytes(&long), None);
        let patched = |from: [u8; 122], at: usize, v: &[u8]| {
            let mut b = from;
            b[at..at + v.len()].copy_from_slice(v);
            CircuitBreaker::from_bytes(&b)
        };
        assert_eq!(patched(bytes, 0, &[2]), None, "version");
        assert_eq!(patched(bytes, 5, &1_000_001u32.to_le_bytes()), None, "rate");
        assert_eq!(patched(bytes, 13, &999u64.to_le_bytes()), None, "window");
        assert_eq!(
            patched(bytes, 21, &(MAX_US + 1).to_le_bytes()),
            None,
            "cool_down"
        );
        assert_eq!(patched(bytes, 29, &0u32.to_le_bytes()), None, "probes");
        assert_eq!(patched(bytes, 33, &[3]), None, "state");
        assert_eq!(patched(bytes, 34, &[1]), None, "closed with a time");
        assert_eq!(patched(bytes, 46, &[1]), None, "closed with successes");
        assert_eq!(
            patched(bytes, 58 + 5 * 8 + 4, &[9]),
            None,
            "failures > calls"
        );
        assert_eq!(
            patched(open.to_bytes(), 42, &[1]),
            None,
            "open with a count"
        );
        let h = half_open.to_bytes();
        assert_eq!(
            patched(h, 46, &2u32.to_le_bytes()),
            None,
            "successes = probes"
        );
        assert_eq!(
            patched(h, 42, &2u32.to_le_bytes()),
            Some(CircuitBreaker {
                phase: Phase::HalfOpen {
                    last_probe_us: 12 * S,
                    outstanding: 2,
                    successes: 0
                },
                ..half_open
            })
        );
        assert_eq!(
            patched(h, 42, &3u32.to_le_bytes()),
            None,
            "more probes than allowed"
        );
    }

    /// A time step: small forward, within a few windows, a huge jump, backwards, or absolute.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Forward(u64),
        Back(u64),
        At(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..2 * S).prop_map(Step::Forward),
            2 => (0u64..40 * S).prop_map(Step::Forward),
            1 => any::<u64>().prop_map(Step::Forward),
            1 => (0u64..20 * S).prop_map(Step::Back),
            1 => any::<u64>().prop_map(Step::At),
            1 => ((u64::MAX - 20 * S)..=u64::MAX).prop_map(Step::At),
        ]
    }

    fn advance(now: u64, s: Step) -> u64 {
        match s {
            Step::Forward(d) => now.saturating_add(d),
            Step::Back(d) => now.saturating_sub(d),
            Step::At(t) => t,
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Admit(Step),
        Record(bool, Step),
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (step()).prop_map(Op::Admit),
            4 => (any::<bool>(), step()).prop_map(|(ok, s)| Op::Record(ok, s)),
            1 => Just(Op::Release),
        ]
    }

    fn any_config() -> impl Strategy<Value = BreakerConfig> {
        (
            0u32..6,
            prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
            0u32..10,
            0.001f64..30.0,
            0.001f64..30.0,
            1u32..4,
        )
            .prop_map(
                |(failure_threshold, failure_rate, minimum_calls, window, cool_down, probes)| {
                    BreakerConfig {
                        failure_threshold,
                        failure_rate,
                        minimum_calls,
                        window,
                        cool_down,
                        half_open_probes: probes,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_sequences_keep_the_invariants(
            config in any_config(),
            start: u64,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut b = breaker(config);
            let cool_down = b.policy().cool_down_us();
            let mut now = start;
            for op in ops {
                match op {
                    Op::Admit(s) => {
                        now = advance(now, s);
                        let before = b.state(now);
                        let admission = b.admit(now);
                        match admission {
                            Admission::Allowed => prop_assert_eq!(before, BreakerState::Closed),
                            Admission::Probe => prop_assert_eq!(before, BreakerState::HalfOpen),
                            Admission::Rejected { retry_after_us } => {
                                prop_assert!(before != BreakerState::Closed);
                                prop_assert!((1..=cool_down).contains(&retry_after_us));
                            }
                        }
                        // Admitting never changes the state as `state` reports it.
                        prop_assert_eq!(b.state(now), before);
                    }
                    Op::Record(ok, s) => {
                        now = advance(now, s);
                        let before = b.state(now);
                        b.record(ok, now);
                        let after = b.state(now);
                        match before {
                            BreakerState::Closed => {
                                let until_us = now.saturating_add(cool_down);
                                // A cool-down that saturated at the end of time is already over.
                                let opened = if now < until_us {
                                    BreakerState::Open { until_us }
                                } else {
                                    BreakerState::HalfOpen
                                };
                                prop_assert!(after == BreakerState::Closed || after == opened);
                            }
                            BreakerState::Open { .. } => prop_assert_eq!(after, before),
                            BreakerState::HalfOpen => {}
                        }
                    }
                    Op::Release => {
                        let before = b;
                        b.release();
                        // Never a transition, never the window: at most a probe handed back.
                        prop_assert_eq!(b.state(now), before.state(now));
                        prop_assert_eq!(b.window_counts(now), before.window_counts(now));
                        if before.state(now) != BreakerState::HalfOpen {
                            prop_assert_eq!(b, before);
                        }
                    }
                }
                let (calls, failures) = b.window_counts(now);
                prop_assert!(failures <= calls);
                prop_assert_eq!(CircuitBreaker::from_bytes(&b.to_bytes()), Some(b));
            }
        }

        #[test]
        fn window_matches_a_model(
            window in 0.001f64..10.0,
            start in 0u64..(1 << 40),
            events in proptest::collection::vec((any::<bool>(), step()), 0..200),
        ) {
            let mut b = breaker(BreakerConfig {
                failure_threshold: 0,
                failure_rate: 0.0,
                window,
                ..config()
            });
            let width = b.policy().window_us() / 8;
            // Every event with the bucket index it was counted in.
            let mut log: Vec<(u64, bool)> = Vec::new();
            let mut head = 0u64;
            let mut now = start;
            for (ok, s) in events {
                now = advance(now, s);
                head = head.max(now / width);
                log.push((head, ok));
                b.record(ok, now);
                let newest = head.max(now / width);
                let live = log.iter().filter(|(e, _)| newest - e < 8);
                let calls = live.clone().count() as u64;
                let failures = live.filter(|(_, ok)| !ok).count() as u64;
                prop_assert_eq!(b.window_counts(now), (calls, failures));
                prop_assert_eq!(b.state(now), BreakerState::Closed);
            }
        }

        #[test]
        fn rate_trigger_matches_a_model(
            rate in 0.01f64..=1.0,
            minimum_calls in 0u32..12,
            events in proptest::collection::vec((any::<bool>(), 0u64..3 * S), 0..200),
        ) {
            let config = BreakerConfig {
                failure_threshold: 0,
                failure_rate: rate,
                minimum_calls,
                window: 8.0,
                ..config()
            };
            let ppm = u64::from(config.validate().unwrap().failure_rate_ppm());
            let mut b = breaker(config);
            let mut log: Vec<(u64, bool)> = Vec::new();
            let mut now = 0u64;
            for (ok, dt) in events {
                now += dt;
                if b.state(now) != BreakerState::Closed {
                    // Start over, as closing after probes would.
                    b = breaker(config);
                    log.clear();
                }
                log.push((now / S, ok));
                b.record(ok, now);
                let live = log.iter().filter(|(e, _)| now / S - e < 8);
                let calls = live.clone().count() as u64;
                let failures = live.filter(|(_, ok)| !ok).count() as u64;
                let trips = !ok
                    && calls >= u64::from(minimum_calls.max(1))
                    && failures * 1_000_000 >= calls * ppm;
                prop_assert_eq!(
                    b.state(now) != BreakerState::Closed,
                    trips,
                    "calls {} failures {} ppm {}", calls, failures, ppm
                );
            }
        }

        #[test]
        fn validate_never_panics(
            failure_threshold: u32,
            failure_rate: f64,
            minimum_calls: u32,
            window: f64,
            cool_down: f64,
            half_open_probes: u32,
        ) {
            let config = BreakerConfig {
                failure_threshold, failure_rate, minimum_calls, window, cool_down, half_open_probes,
            };
            if let Ok(p) = config.validate() {
                prop_assert!(p.is_valid());
                prop_assert!(p.window_us() / 8 >= 125);
                let b = CircuitBreaker::new(p);
                prop_assert_eq!(CircuitBreaker::from_bytes(&b.to_bytes()), Some(b));
            }
        }

        #[test]
        fn from_bytes_never_panics_and_accepts_only_canonical(
            config in any_config(),
            ops in proptest::collection::vec(op(), 0..40),
            pokes in proptest::collection::vec((0usize..122, any::<u8>()), 1..4),
            junk in proptest::collection::vec(any::<u8>(), 0..130),
        ) {
            let mut b = breaker(config);
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Admit(s) => { now = advance(now, s); let _ = b.admit(now); }
                    Op::Record(ok, s) => { now = advance(now, s); b.record(ok, now); }
                    Op::Release => b.release(),
                }
            }
            let mut bytes = b.to_bytes();
            for (at, v) in pokes {
                bytes[at] = v;
            }
            for input in [&bytes[..], &junk[..]] {
                if let Some(mut c) = CircuitBreaker::from_bytes(input) {
                    prop_assert_eq!(&c.to_bytes()[..], input);
                    // Whatever was accepted runs without panicking.
                    let _ = c.admit(now);
                    c.record(false, now);
                    let _ = c.admit(u64::MAX);
                    c.record(true, 0);
                    let _ = c.window_counts(now);
                }
            }
        }
    }
}
