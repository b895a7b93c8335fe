//! Argument definitions and the backends every command shares.

use std::path::PathBuf;

use crate::{demo, interop, plan, run, sim};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ricochet::component::{PolicyComponent, Sandbox};
use ricochet::config_file::load_policy;
use ricochet::idempotency::IdempotencyError;
use ricochet::metrics::RetryMetrics;
use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore, RedisSettings};
use ricochet::{Classify, RetryError, RetryPolicy};
use ricochet_core::RetryConfig;

#[derive(Parser)]
#[command(
    name = "ricochet",
    version,
    about = "One retry policy that runs everywhere",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a herd of clients against a flaky local service and show what coordinated retries do.
    #[command(
        after_help = "Examples:\n  ricochet demo\n  ricochet demo --clients 50 --duration 3s\n  ricochet demo --redis redis://127.0.0.1:6379 --engine wasm"
    )]
    Demo(demo::DemoArgs),
    /// Retry a command by a policy: `ricochet run -- CMD ARGS…`.
    #[command(
        after_help = "Examples:\n  ricochet run -- curl -fsS http://127.0.0.1:8080/health\n  ricochet run --policy aggressive --retry-on-exit 75,111 --attempt-timeout 2s -- ./sync.sh\n\nExit status: the last attempt's; 124 when it timed out; 127 when the command cannot be started."
    )]
    Run(RunArgs),
    /// Simulate a herd of retrying clients (deterministic, no sleeping) and compare strategies.
    #[command(
        after_help = "Examples:\n  ricochet simulate --clients 1000 --strategy all --plot herd.svg\n  ricochet simulate --clients 10000 --model occ --format json"
    )]
    Simulate(sim::SimulateArgs),
    /// Print the retry schedule of a policy.
    #[command(
        after_help = "Examples:\n  ricochet plan --policy aggressive --seed 7\n  ricochet plan --config retry.yaml --policy critical --engine wasm --format json\n  ricochet plan --strategy decorrelated --seed 1"
    )]
    Plan(plan::PlanArgs),
    /// Validate a policy file: one line per policy (exit 0), or every error (exit 2).
    #[command(after_help = "Example:\n  ricochet check retry.yaml")]
    Check {
        /// The policy file (YAML, or JSON for *.json).
        file: PathBuf,
    },
    /// Import an Envoy route config or a gRPC service config as a ricochet policy file.
    #[command(
        after_help = "Examples:\n  ricochet import envoy envoy.yaml > policies.yaml\n  ricochet import grpc service_config.json --out policies.yaml\n  ricochet import envoy route.yaml --strict\n\nNotes (where the translation is not exact) go to stderr and into the file as comments.\nExit status: 0, or 2 with every field that cannot be imported (file:line: path: why)."
    )]
    Import(interop::ImportArgs),
    /// Export a ricochet policy as an Envoy route `retry_policy` (for routes running the ricochet filter).
    #[command(
        after_help = "Examples:\n  ricochet export envoy --policy aggressive\n  ricochet export envoy --config retry.yaml --policy critical --attempt-timeout 2s --json"
    )]
    Export(interop::ExportArgs),
    /// Write the policy component built into this binary (`ricochet-core` as a
    /// `ricochet:retry` component), for a service that loads it with ricochet's `component`
    /// feature (`PolicyComponent::from_file`) or for any other component host.
    #[command(after_help = "Example:\n  ricochet component --out policy.wasm")]
    Component {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `ricochet component --out FILE`.
pub fn write_component(out: &std::path::Path) -> Result<()> {
    let bytes = crate::guests::POLICY_COMPONENT.ok_or_else(|| anyhow::anyhow!(NO_COMPONENT))?;
    std::fs::write(out, bytes).with_context(|| format!("--out {}", out.display()))?;
    eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

const NO_COMPONENT: &str = "this binary was built without the policy component. Install a wasm32 toolchain \
     (`rustup target add wasm32-unknown-unknown`, or `apt-get install rustc-web cargo-web rust-web-src`) \
     and run `cargo build` again";

/// Where a policy comes from and which backends it uses (shared by `run` and `demo`).
#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// Policy name: a preset (default, aggressive, conservative) or an entry of --config.
    #[arg(long, default_value = "default")]
    pub policy: String,
    /// Policy file in the seed's format (`retry_policies:` map), YAML or JSON.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Redis (or `cluster:` + comma-separated node URLs) for coordination and idempotency;
    /// default: $REDIS_URL, else in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Key prefix in Redis (separates deployments sharing one server).
    #[arg(long, default_value = "ricochet")]
    pub redis_prefix: String,
    /// Which engine decides: the linked-in core, or a policy component in wasmtime (whose
    /// failures fall back to the core, counted in retry_policy_fallback_total).
    #[arg(long, value_enum, default_value_t = EngineArg::Native)]
    pub engine: EngineArg,
    /// A policy component to run (implies --engine wasm); default: the one built into this binary.
    #[arg(long, value_name = "PATH")]
    pub component: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Service name (metrics and log lines).
    #[arg(long, default_value = "cli")]
    pub service: String,
    /// Operation name (default: the command's name).
    #[arg(long)]
    pub operation: Option<String>,
    /// Exit codes that are retried, e.g. `1,75-78` (default: every non-zero code).
    #[arg(long, value_parser = run::parse_exit_codes)]
    pub retry_on_exit: Option<run::ExitCodes>,
    /// Bound on each attempt, e.g. `500ms`, `2s`; a timed-out attempt is killed.
    #[arg(long, value_parser = run::parse_duration)]
    pub attempt_timeout: Option<std::time::Duration>,
    /// Run at most once per key (a completed key exits with the stored status).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// With `--idempotency-key`: how long the claim lasts without renewal (renewed every third
    /// of it while the command runs), i.e. how soon another run may take over from a run that
    /// was killed.
    #[arg(long, default_value = "30s", value_parser = run::parse_duration)]
    pub lease: std::time::Duration,
    /// Do not write ricochet's JSON log lines to stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--engine`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// The core, linked into this binary.
    Native,
    /// A policy component in wasmtime (sandboxed; falls back to the core when it fails).
    Wasm,
}

/// The resolved config and backends for a command.
pub struct Backends {
    pub config: RetryConfig,
    pub redis: Option<RedisConnection>,
    /// The policy component, with `--engine wasm` or `--component`.
    pub component: Option<PolicyComponent>,
}

/// Whether `engine` and `component` ask for a component.
pub fn wants_component(engine: EngineArg, component: Option<&PathBuf>) -> bool {
    engine == EngineArg::Wasm || component.is_some()
}

/// The component to run: `--component PATH`, else the one embedded at build time.
pub fn load_component(path: Option<&PathBuf>) -> Result<PolicyComponent> {
    match path {
        Some(p) => Ok(PolicyComponent::from_file(p, Sandbox::default())
            .with_context(|| format!("--component {}", p.display()))?),
        None => match crate::guests::POLICY_COMPONENT {
            Some(bytes) => Ok(PolicyComponent::from_bytes(bytes, Sandbox::default())?),
            None => anyhow::bail!("--engine wasm: {NO_COMPONENT}, or pass --component PATH"),
        },
    }
}

impl Backends {
    /// Loads the policy (environment > file > preset) and opens Redis when asked.
    pub fn from_args(args: &PolicyArgs) -> Result<Self> {
        let config = load_policy(&args.policy, args.config.as_deref(), |v| {
            std::env::var(v).ok()
        })
        .map_err(|e| anyhow::anyhow!("--policy {}: {e}", args.policy))?;
        let redis = match &args.redis {
            Some(spec) => {
                let settings =
                    RedisSettings::parse(spec).with_key_prefix(args.redis_prefix.clone());
                Some(
                    RedisConnection::open(&settings)
                        .with_context(|| "--redis: cannot use this Redis URL")?,
                )
            }
            None => None,
        };
        let component = if wants_component(args.engine, args.component.as_ref()) {
            Some(load_component(args.component.as_ref())?)
        } else {
            None
        };
        Ok(Self {
            config,
            redis,
            component,
        })
    }
}

/// A `RetryPolicy` on the chosen backends (Redis when given, memory otherwise), recording
/// metrics in `metrics` (prometheus's default registry when `None`).
pub fn build_policy(backends: &Backends, metrics: Option<RetryMetrics>) -> Result<RetryPolicy> {
    let mut policy = RetryPolicy::new(backends.config)?;
    if let Some(m) = metrics {
        policy = policy.with_metrics(m);
    }
    if let Some(conn) = &backends.redis {
        let mut coordinator = RedisCoordinator::new(conn.clone());
        if let Some(m) = policy.metrics() {
            coordinator = coordinator.with_metrics(m.clone());
        }
        policy = policy
            .with_coordinator(Arc::new(coordinator))
            .with_idempotency_store(Arc::new(RedisIdempotencyStore::new(conn.clone())));
    }
    if let Some(component) = &backends.component {
        policy = policy
            .with_component(component.clone())
            .with_context(|| "--engine wasm: the component cannot run this policy")?;
    }
    Ok(policy)
}

/// `execute_idempotent` for the CLI: folds the idempotency outcomes into a `RetryError`-shaped
/// result (mismatch and in-progress are errors the user must see).
pub async fn run_idempotent<T, E, F, Fut>(
    policy: &RetryPolicy,
    options: &ricochet::idempotency::IdempotencyOptions,
    key: &str,
    fingerprint: &str,
    op: F,
    service: &str,
    operation: &str,
) -> Result<Result<T, RetryError<E>>>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Classify + std::fmt::Display,
{
    match policy
        .execute_idempotent_with(options, key, fingerprint, op, service, operation)
        .await
    {
        Ok(outcome) => Ok(Ok(outcome.value)),
        Err(IdempotencyError::Operation(e)) => Ok(Err(e)),
        Err(other) => Err(anyhow::anyhow!("--idempotency-key {key}: {other}")),
    }
}

/// Installs a global subscriber that writes the seed's JSON lines to stderr, and ricochet's
/// operational warnings and errors (a rejected policy reload, a policy component replaced by the
/// native core, an idempotent call that may have run twice) as JSON lines of their own, told
/// apart by their `target` field.
pub fn init_stderr_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    let layer = ricochet::logging::SeedJsonLayer::new(std::io::stderr)
        .operational(Some(tracing::Level::WARN));
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}
