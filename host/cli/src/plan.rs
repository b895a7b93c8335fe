//! `ricochet plan` and `ricochet check`.
//!
//! `plan` prints a policy's schedule as one engine computes it. With `--redis` it also asks the
//! fleet's coordinator for each retry's slot, the way a service would at run time: natively
//! through `schedule_retry`, with `--engine wasm` through the component's `schedule` export and
//! its `coordination` import. Every acquisition is a real ticket in Redis (keys
//! `<prefix>:{<tag>}:slot:<window>`, the tag a digest of service and operation), and a coordinator that does not answer
//! within the deadline shows up as a fallback slot and in the fallback count.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ricochet::component::{failure_to_wit, state_to_wit, wit, PolicyComponent};
use ricochet::config_file::{load_policy, PolicyFile};
use ricochet::coordination::{
    schedule_retry, Coordinator, Scheduled, DEFAULT_COORDINATION_DEADLINE,
};
use ricochet::engine::{EngineError, NativeEngine, PlannedRetry, PolicyEngine};
use ricochet::metrics::RetryMetrics;
use ricochet::redis::{RedisConnection, RedisCoordinator, RedisSettings};
use ricochet_core::{ErrorCategory, Failure, JitterStrategy, RetryConfig, RetryState};

use crate::cli::{load_component, wants_component, EngineArg};

#[derive(Args)]
pub struct PlanArgs {
    /// Policy name: a preset (default, aggressive, conservative) or an entry of --config.
    #[arg(long, default_value = "default")]
    policy: String,
    /// Policy file in the seed's format (`retry_policies:` map), YAML or JSON.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Jitter seed (default: random); the same seed gives the same schedule everywhere.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the jitter strategy.
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Which engine computes the plan.
    #[arg(long, value_enum, default_value_t = EngineArg::Native)]
    engine: EngineArg,
    /// A policy component to run (implies --engine wasm); default: the one built into this binary.
    #[arg(long, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Also take each retry's slot from this Redis coordinator (real tickets), as a service would.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Key prefix in Redis.
    #[arg(long, default_value = "ricochet")]
    redis_prefix: String,
    /// Service name for the slot tickets (with --redis).
    #[arg(long, default_value = "plan")]
    service: String,
    /// Operation name for the slot tickets (with --redis).
    #[arg(long, default_value = "plan")]
    operation: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Where the coordinator put one retry.
struct Slot {
    /// The slot within the window.
    slot: u32,
    /// Delay from the failure until the retry fires, slot included.
    fire_in_us: u64,
    /// `None` when the coordinator answered; else the fallback's reason (or `fallback`).
    fallback: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    None,
    Proportional,
    Full,
    Equal,
    Decorrelated,
}

impl From<StrategyArg> for JitterStrategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::None => JitterStrategy::None,
            StrategyArg::Proportional => JitterStrategy::Proportional,
            StrategyArg::Full => JitterStrategy::Full,
            StrategyArg::Equal => JitterStrategy::Equal,
            StrategyArg::Decorrelated => JitterStrategy::Decorrelated,
        }
    }
}

/// A random seed for one invocation.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

pub fn plan(args: PlanArgs) -> Result<()> {
    let mut config = load_policy(&args.policy, args.config.as_deref(), |v| {
        std::env::var(v).ok()
    })
    .map_err(|e| anyhow::anyhow!("--policy {}: {e}", args.policy))?;
    if let Some(s) = args.strategy {
        config.strategy = s.into();
        config.jitter = s != StrategyArg::None;
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let component = if wants_component(args.engine, args.component.as_ref()) {
        Some(load_component(args.component.as_ref())?)
    } else {
        None
    };
    let engine: &dyn PolicyEngine = match &component {
        Some(c) => c,
        None => &NativeEngine,
    };
    let plan = engine.plan(&config, seed).map_err(|e| match e {
        EngineError::Config { message, .. } => {
            anyhow::anyhow!("policy `{}`: {message}", args.policy)
        }
        other => anyhow::Error::new(other),
    })?;
    let strategy = if config.jitter {
        config.strategy
    } else {
        JitterStrategy::None
    };
    let coordinated = match &args.redis {
        Some(url) => Some(coordinate(
            &args,
            url,
            &config,
            seed,
            &plan,
            component.clone(),
        )?),
        None => None,
    };
    match args.format {
        Format::Json => {
            let mut line = serde_json::json!({
                "policy": args.policy,
                "seed": seed,
                "engine": engine.name(),
                "strategy": strategy.name(),
                "max_attempts": config.max_attempts,
                "delays_us": plan.iter().map(|r| r.delay_us).collect::<Vec<_>>(),
                "base_delays_us": plan.iter().map(|r| r.base_delay_us).collect::<Vec<_>>(),
            });
            if let Some((slots, fallbacks)) = &coordinated {
                line["coordinator"] = "redis".into();
                line["ticket_keys"] = ticket_keys(&args).into();
                line["slots"] = slots.iter().map(|s| s.slot).collect::<Vec<_>>().into();
                line["fire_in_us"] = slots
                    .iter()
                    .map(|s| s.fire_in_us)
                    .collect::<Vec<_>>()
                    .into();
                line["fallbacks"] = slots
                    .iter()
                    .map(|s| s.fallback.clone())
                    .collect::<Vec<_>>()
                    .into();
                line["coordination_fallback_total"] = (*fallbacks).into();
            }
            println!("{line}");
        }
        Format::Table => {
            println!(
                "policy {} · engine {} · strategy {} · seed {seed} · max_attempts {}",
                args.policy,
                engine.name(),
                strategy.name(),
                config.max_attempts
            );
            match &coordinated {
                None => {
                    println!(
                        "{:>7}  {:>12}  {:>12}",
                        "attempt", "base (s)", "jittered (s)"
                    );
                    for r in &plan {
                        println!(
                            "{:>7}  {:>12.6}  {:>12.6}",
                            r.retry + 1,
                            r.base_delay_us as f64 / 1e6,
                            r.delay_us as f64 / 1e6
                        );
                    }
                }
                Some((slots, fallbacks)) => {
                    println!(
                        "{:>7}  {:>12}  {:>12}  {:>5}  {:>12}  slot from",
                        "attempt", "base (s)", "jittered (s)", "slot", "fires in (s)"
                    );
                    for (r, s) in plan.iter().zip(slots) {
                        println!(
                            "{:>7}  {:>12.6}  {:>12.6}  {:>5}  {:>12.6}  {}",
                            r.retry + 1,
                            r.base_delay_us as f64 / 1e6,
                            r.delay_us as f64 / 1e6,
                            s.slot,
                            s.fire_in_us as f64 / 1e6,
                            match &s.fallback {
                                None => "redis".to_string(),
                                Some(why) => format!("local fallback ({why})"),
                            }
                        );
                    }
                    if slots.len() < plan.len() {
                        println!(
                            "(the coordinator had no room for retry {}: every window it could move to was full)",
                            slots.len() + 1
                        );
                    }
                    println!(
                        "slot tickets: redis keys {} · retry_coordination_fallback_total {fallbacks}",
                        ticket_keys(&args)
                    );
                }
            }
        }
    }
    Ok(())
}

/// The Redis keys the tickets of this plan were counted in.
fn ticket_keys(args: &PlanArgs) -> String {
    format!(
        "{}:{{{}}}:slot:*",
        args.redis_prefix,
        ricochet::redis::operation_tag(&args.service, &args.operation)
    )
}

/// Takes a slot from Redis for each retry of `plan`: natively, or through the component's
/// `schedule` export. Returns the slots (fewer than retries when a retry found no room) and
/// the fallbacks counted.
fn coordinate(
    args: &PlanArgs,
    url: &str,
    config: &RetryConfig,
    seed: u64,
    plan: &[PlannedRetry],
    component: Option<PolicyComponent>,
) -> Result<(Vec<Slot>, u64)> {
    if !config.coordination_enabled {
        anyhow::bail!(
            "--redis: policy `{}` has coordination_enabled: false, so its retries take no slots",
            args.policy
        );
    }
    let policy = config
        .validate()
        .map_err(|e| anyhow::anyhow!("policy `{}`: {e}", args.policy))?;
    // The connection's background tasks need a runtime that keeps running while this thread
    // waits in a (synchronous) component call: one worker thread is enough.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let connection = {
        let _context = runtime.enter();
        RedisConnection::open(&RedisSettings::parse(url).with_key_prefix(args.redis_prefix.clone()))
            .with_context(|| "--redis: cannot use this Redis URL")?
    };
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry)?;
    let redis = Arc::new(RedisCoordinator::new(connection).with_metrics(metrics.clone()));
    // A few TIME round trips first, so the first ticket does not also pay for the connection.
    let _ = runtime.block_on(redis.calibrate(3));
    let coordinator: Arc<dyn Coordinator> = redis;
    let category = if config.retry_on.contains(ErrorCategory::ServiceUnavailable) {
        ErrorCategory::ServiceUnavailable
    } else {
        ErrorCategory::RateLimited
    };
    let (service, operation) = (args.service.as_str(), args.operation.as_str());
    let mut slots = Vec::with_capacity(plan.len());
    match component {
        Some(component) => {
            let component = component
                .with_coordinator(coordinator.clone())
                .with_metrics(Some(metrics.clone()))
                .with_coordination_deadline(DEFAULT_COORDINATION_DEADLINE);
            let failure = failure_to_wit(Failure::new(category));
            let mut state = state_to_wit(&RetryState::new(seed, coordinator.now_us()));
            for _ in plan {
                let before = fallback_reasons(&registry);
                let (next, outcome) = component
                    .schedule(config, service, operation, state, failure)?
                    .map_err(|e| anyhow::anyhow!("policy `{}`: {}", args.policy, e.message))?;
                state = next;
                match outcome {
                    wit::ScheduleOutcome::Retry(r) => slots.push(Slot {
                        slot: r.slot,
                        fire_in_us: r.delay_us,
                        // The host counted the reason when the import failed.
                        fallback: r.fallback.then(|| {
                            let after = fallback_reasons(&registry);
                            after
                                .into_iter()
                                .find(|(reason, n)| before.get(reason) != Some(n))
                                .map_or_else(|| "fallback".to_string(), |(reason, _)| reason)
                        }),
                    }),
                    wit::ScheduleOutcome::GiveUp(_) => break,
                }
            }
        }
        None => {
            for r in plan {
                let scheduled = runtime.block_on(schedule_retry(
                    coordinator.as_ref(),
                    &policy,
                    seed,
                    r.retry,
                    r.delay_us,
                    service,
                    operation,
                    DEFAULT_COORDINATION_DEADLINE,
                    Some(&metrics),
                ));
                match scheduled {
                    Scheduled::FireIn {
                        delay_us,
                        slot,
                        fallback,
                    } => slots.push(Slot {
                        slot,
                        fire_in_us: delay_us,
                        fallback: fallback.map(str::to_string),
                    }),
                    Scheduled::GiveUp(_) => break,
                }
            }
        }
    }
    let fallbacks = fallback_reasons(&registry).values().sum::<f64>() as u64;
    Ok((slots, fallbacks))
}

/// `retry_coordination_fallback_total` by reason.
fn fallback_reasons(registry: &prometheus::Registry) -> std::collections::BTreeMap<String, f64> {
    let mut by_reason = std::collections::BTreeMap::new();
    for family in registry.gather() {
        if family.name() != "retry_coordination_fallback_total" {
            continue;
        }
        for metric in family.get_metric() {
            let reason = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "reason")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            *by_reason.entry(reason).or_insert(0.0) += metric.get_counter().get_value();
        }
    }
    by_reason
}

pub fn check(file: &Path) -> ExitCode {
    match PolicyFile::load(file) {
        Ok(f) => {
            for (name, c) in f.policies() {
                println!(
                    "{name}: ok (max_attempts {}, initial_delay {}s, max_delay {}s, base {}, jitter {}, slots {}x{}s)",
                    c.max_attempts,
                    c.initial_delay,
                    c.max_delay,
                    c.exponential_base,
                    if c.jitter { c.strategy.name() } else { "none" },
                    c.slot_count,
                    c.slot_width
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::from(2)
        }
    }
}
