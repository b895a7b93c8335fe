//! Herd simulation: what a fleet of clients does to a server when they all fail at once.
//!
//! `ricochet simulate` lets an SRE *see* why coordinated slots beat jitter, and reproduces the AWS
//! "Exponential Backoff And Jitter" study (Brooker, 2015). N clients start at t = 0 against one
//! contended resource. Every failed call goes to the core exactly as the executor hands it over:
//! [`RetryState::on_failure`](ricochet_core::RetryState::on_failure) picks the delay
//! (`Policy::next_delay`) — the simulator never computes a delay of its own. For `slots` the
//! retry then takes a ticket from an in-sim coordinator that, like the real ones, counts tickets
//! per window index, and `Policy::resolve_ticket` turns ticket *k* into a fire time *k mod
//! slot_count* slots after the retry's earliest time (DESIGN.md, "Coordination: retry slots").
//! That is why `slots` flattens a herd: one window's retries are dealt round the slots instead
//! of landing wherever their jitter puts them.
//!
//! Time is integer µs in a monotone event queue, nothing sleeps, and every draw comes from the
//! core's counter RNG ([`unit_interval`](ricochet_core::unit_interval)), so a run is a pure
//! function of its [`SimOptions`]. 10 000 clients take milliseconds against `capacity` and under
//! half a second in the worst `occ` case (plain exponential, ~3 million calls), in release.
//!
//! # Models
//!
//! - [`SimModel::Capacity`]: a server that serves `C` calls per bucket (one `slot_width`) and
//!   rejects the rest; a rejection is a failure that is retried. Policy: the `default` preset with
//!   `max_attempts` 10 (see [`SimModel::config`]). `C` defaults to `clients / 20`, so the herd needs
//!   at least 20 buckets whatever the strategy; what differs is how many calls it wastes and who
//!   gives up.
//! - [`SimModel::Occ`]: the study's optimistic-concurrency model. One row with a version; a client
//!   reads the version, then writes, and the write commits only if no other write committed since
//!   its read. Each message takes |N(10 ms, 2 ms)|; base 5 ms, cap 2 s.
//!
//! # What is measured
//!
//! `calls` counts every call the server sees (in `occ`, every write, as in the study).
//! `peak_per_slot` is the largest number of *retries* arriving in one slot-width bucket: the first
//! calls are the same herd at t = 0 for every strategy, and a retry policy can only shape what
//! follows. `completion_s` is when the last client was done (succeeded or gave up); `gave_up`
//! counts clients that spent `max_attempts`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ricochet_core::{JitterStrategy, RetryConfig};

mod capacity;
mod herd;
mod occ;
mod plot;
mod queue;
mod tally;

pub use plot::write_svg;

/// A retry strategy as the simulator compares them: a jitter, or jitter plus coordinated slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimStrategy {
    /// Capped exponential backoff without jitter (`exponential`, alias `none`).
    None,
    /// The seed's jitter: ±`jitter_factor` around the base delay.
    Proportional,
    /// AWS full jitter: uniform in `[0, base)`.
    Full,
    /// AWS equal jitter: `base/2` plus uniform in `[0, base/2)`.
    Equal,
    /// AWS decorrelated jitter.
    Decorrelated,
    /// Proportional jitter plus fleet-wide slots: tickets per window from one coordinator.
    Slots,
}

impl SimStrategy {
    /// Every strategy, in the order tables and plots list them.
    pub const ALL: [SimStrategy; 6] = [
        Self::None,
        Self::Proportional,
        Self::Full,
        Self::Equal,
        Self::Decorrelated,
        Self::Slots,
    ];

    /// The name in tables, JSON and `--strategy`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "exponential",
            Self::Proportional => "proportional",
            Self::Full => "full",
            Self::Equal => "equal",
            Self::Decorrelated => "decorrelated",
            Self::Slots => "slots",
        }
    }

    /// Looks a strategy up by name; `none` is accepted for `exponential`.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "none" {
            return Some(Self::None);
        }
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The core's jitter for this strategy (`slots` jitters proportionally inside its slot).
    pub const fn jitter(self) -> JitterStrategy {
        match self {
            Self::None => JitterStrategy::None,
            Self::Proportional | Self::Slots => JitterStrategy::Proportional,
            Self::Full => JitterStrategy::Full,
            Self::Equal => JitterStrategy::Equal,
            Self::Decorrelated => JitterStrategy::Decorrelated,
        }
    }

    /// Whether retries take a ticket from the coordinator.
    pub const fn coordinated(self) -> bool {
        matches!(self, Self::Slots)
    }
}

impl fmt::Display for SimStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SimStrategy {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        Self::from_name(s).ok_or_else(|| SimError::UnknownStrategy(s.to_string()))
    }
}

/// What the herd runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SimModel {
    /// A server that serves `C` calls per slot-width bucket and rejects the rest.
    #[default]
    Capacity,
    /// The AWS study's optimistic concurrency on one contended row.
    Occ,
}

impl SimModel {
    /// Every model.
    pub const ALL: [SimModel; 2] = [Self::Capacity, Self::Occ];

    /// The name in `--model`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Occ => "occ",
        }
    }

    /// Looks a model up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The policy every client runs before the strategy sets its jitter and coordination.
    ///
    /// - `capacity`: the `default` preset (0.1 s doubling to 10 s, slots of 10 × 0.1 s) with
    ///   `max_attempts` 10, so that plain backoff visibly runs out of attempts.
    /// - `occ`: the study's 5 ms base, 2 s cap, doubling, with 1000 attempts (the study never
    ///   gives up); slots as in the `default` preset.
    pub const fn config(self) -> RetryConfig {
        match self {
            Self::Capacity => RetryConfig {
                max_attempts: 10,
                ..RetryConfig::DEFAULT
            },
            Self::Occ => RetryConfig {
                max_attempts: 1000,
                initial_delay: 0.005,
                max_delay: 2.0,
                exponential_base: 2.0,
                ..RetryConfig::DEFAULT
            },
        }
    }
}

impl fmt::Display for SimModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SimModel {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        Self::from_name(s).ok_or_else(|| SimError::UnknownModel(s.to_string()))
    }
}

/// What to simulate.
///
/// # Default
///
/// 1000 clients, the `capacity` model, seed 0, `clients / 20` calls per bucket (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// Clients in the herd, all starting at t = 0.
    pub clients: u32,
    /// The server model.
    pub model: SimModel,
    /// Seed of every draw: the same seed gives the same result.
    pub seed: u64,
    /// Calls the `capacity` server serves per bucket (default `clients / 20`, at least 1).
    pub capacity_per_bucket: Option<u32>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            clients: 1000,
            model: SimModel::Capacity,
            seed: 0,
            capacity_per_bucket: None,
        }
    }
}

impl SimOptions {
    /// The capacity per bucket in effect.
    pub fn effective_capacity(&self) -> u32 {
        self.capacity_per_bucket.unwrap_or(self.clients / 20).max(1)
    }
}

/// The outcome of one strategy's run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// The strategy's name ([`SimStrategy::name`]).
    pub strategy: &'static str,
    /// Clients in the herd.
    pub clients: u32,
    /// Calls the server saw, first calls included.
    pub calls: u64,
    /// When the last client was done (succeeded or gave up), in seconds.
    pub completion_s: f64,
    /// Most retries arriving in one bucket.
    pub peak_per_slot: u64,
    /// Clients that spent `max_attempts` without success.
    pub gave_up: u64,
    /// Width of a bucket (the policy's `slot_width`), in seconds.
    pub bucket_s: f64,
    /// Per bucket: its start in seconds and the calls that arrived in it.
    pub arrivals: Vec<(f64, u64)>,
    /// Per bucket: its end in seconds and the clients that had succeeded by then.
    pub completions: Vec<(f64, u64)>,
}

/// Runs one strategy against the model in `opts`.
///
/// `progress`, when given, is called with the number of clients done (succeeded or gave up) as
/// the run goes: about a hundred times, and once at the end with `opts.clients`.
pub fn simulate(
    strategy: SimStrategy,
    opts: &SimOptions,
    progress: Option<&dyn Fn(u64)>,
) -> SimResult {
    let config = RetryConfig {
        jitter: strategy.jitter() != JitterStrategy::None,
        strategy: strategy.jitter(),
        coordination_enabled: strategy.coordinated(),
        ..opts.model.config()
    };
    let policy = config
        .validate()
        .expect("the models' configs are valid constants (tested)");
    let mut herd = herd::Herd::new(policy, opts.clients, opts.seed);
    let mut tally = tally::Tally::new(policy.slot_width_us(), opts.clients, progress);
    match opts.model {
        SimModel::Capacity => {
            capacity::run(&mut herd, &mut tally, u64::from(opts.effective_capacity()));
        }
        SimModel::Occ => occ::run(&mut herd, &mut tally, opts.seed),
    }
    tally.finish(strategy.name(), opts.clients)
}

/// The JSON line of `--format json`: `strategy`, `clients`, `calls`, `completion_s`,
/// `peak_per_slot`, `gave_up`.
pub fn result_json(r: &SimResult) -> serde_json::Value {
    serde_json::json!({
        "strategy": r.strategy,
        "clients": r.clients,
        "calls": r.calls,
        "completion_s": r.completion_s,
        "peak_per_slot": r.peak_per_slot,
        "gave_up": r.gave_up,
    })
}

/// Why a simulation name could not be parsed or a plot could not be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// Not a strategy name.
    UnknownStrategy(String),
    /// Not a model name.
    UnknownModel(String),
    /// Nothing to plot.
    NoResults,
    /// The SVG could not be drawn or written.
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownStrategy(s) => {
                write!(f, "unknown strategy `{s}`: expected one of ")?;
                for (i, strategy) in SimStrategy::ALL.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{strategy}")?;
                }
                f.write_str(" (`none` is `exponential`)")
            }
            Self::UnknownModel(s) => write!(f, "unknown model `{s}`: expected capacity or occ"),
            Self::NoResults => f.write_str("no simulation results to plot"),
            Self::Plot { path, message } => {
                write!(f, "cannot write plot {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for SimError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_of_every_model_validates() {
        for model in SimModel::ALL {
            for strategy in SimStrategy::ALL {
                let config = RetryConfig {
                    strategy: strategy.jitter(),
                    coordination_enabled: strategy.coordinated(),
                    ..model.config()
                };
                assert!(config.validate().is_ok(), "{model} {strategy}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in SimStrategy::ALL {
            assert_eq!(s.name().parse::<SimStrategy>().ok(), Some(s));
        }
        assert_eq!(SimStrategy::from_name("none"), Some(SimStrategy::None));
        for m in SimModel::ALL {
            assert_eq!(m.name().parse::<SimModel>().ok(), Some(m));
        }
        let e = "fast".parse::<SimStrategy>().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "unknown strategy `fast`: expected one of exponential, proportional, full, \
                 equal, decorrelated, slots (`none` is `exponential`)"
            )
        );
    }

    #[test]
    fn a_run_is_a_pure_function_of_its_options() {
        for model in SimModel::ALL {
            let opts = SimOptions {
                clients: 200,
                model,
                seed: 7,
                capacity_per_bucket: None,
            };
            for strategy in SimStrategy::ALL {
                let a = simulate(strategy, &opts, None);
                assert_eq!(a, simulate(strategy, &opts, None), "{model} {strategy}");
                let done = a.completions.last().map_or(0, |c| c.1) + a.gave_up;
                assert_eq!(
                    done, 200,
                    "{model} {strategy}: every client is accounted for"
                );
                let arrived: u64 = a.arrivals.iter().map(|a| a.1).sum();
                assert_eq!(arrived, a.calls, "{model} {strategy}");
            }
        }
    }

    #[test]
    fn no_clients_no_calls() {
        let opts = SimOptions {
            clients: 0,
            ..SimOptions::default()
        };
        let r = simulate(SimStrategy::Full, &opts, None);
        assert_eq!((r.calls, r.gave_up, r.peak_per_slot), (0, 0, 0));
        assert_eq!(r.completion_s, 0.0);
    }
}
