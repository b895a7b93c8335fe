//! `ricochet plan` and `ricochet check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use ricochet_core::JitterStrategy;
use ricochet_host::component::{PolicyComponent, Sandbox};
use ricochet_host::config_file::{load_policy, PolicyFile};
use ricochet_host::engine::{EngineError, NativeEngine, PolicyEngine};

use super::EngineArg;

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
    #[arg(long)]
    component: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
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

/// The component to run: `--component PATH`, else the one embedded at build time.
pub fn load_component(path: Option<&PathBuf>) -> Result<PolicyComponent> {
    match path {
        Some(p) => Ok(PolicyComponent::from_file(p, Sandbox::default())?),
        None => match ricochet_host::guests::POLICY_COMPONENT {
            Some(bytes) => Ok(PolicyComponent::from_bytes(bytes, Sandbox::default())?),
            None => bail!(
                "--engine wasm: this binary was built without the policy component. Install a wasm32 toolchain \
                 (`rustup target add wasm32-unknown-unknown`, or `apt-get install rustc-web cargo-web rust-web-src`) \
                 and rebuild, or pass --component PATH"
            ),
        },
    }
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
    let mut engine: Box<dyn PolicyEngine> =
        if args.engine == EngineArg::Wasm || args.component.is_some() {
            Box::new(load_component(args.component.as_ref())?)
        } else {
            Box::new(NativeEngine)
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
    match args.format {
        Format::Json => {
            let line = serde_json::json!({
                "policy": args.policy,
                "seed": seed,
                "engine": engine.name(),
                "strategy": strategy.name(),
                "max_attempts": config.max_attempts,
                "delays_us": plan.iter().map(|r| r.delay_us).collect::<Vec<_>>(),
                "base_delays_us": plan.iter().map(|r| r.base_delay_us).collect::<Vec<_>>(),
            });
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
    }
    Ok(())
}

pub fn check(file: &PathBuf) -> ExitCode {
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
