//! The bare cost of a component call on one wasmtime version (this file is built per version): the
//! policy component's empty export (`ricochet:retry/probe.empty`) and `policy.decide` on the
//! `default` config, each called on one instance and one store, with no pool, no sandbox
//! bookkeeping and no imports (they trap; neither call uses one). What is left is wasmtime's own
//! crossing: the floor under ricochet's `PolicyComponent`, which adds its pool and call scope.
//!
//! Built once per wasmtime version (`v48/`, `v49/`); usage: `wasmtime-floor-49
//! <policy.component.wasm>` (see `run.sh`, which runs both, alternating). Each figure is the
//! median of `ROUNDS` measurements of `CALLS` calls.

use std::time::Instant;

/// Calls per measurement, and measurements per figure (the median is reported).
const CALLS: u32 = 1_000_000;
const ROUNDS: usize = 7;

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../../wit",
        world: "policy",
    });
}
use generated::ricochet::retry::types as t;

/// `RetryConfig::DEFAULT` of ricochet-core, as the WIT record.
fn default_config() -> t::RetryConfig {
    t::RetryConfig {
        max_attempts: 3,
        initial_delay: 0.1,
        max_delay: 10.0,
        exponential_base: 2.0,
        jitter: true,
        jitter_factor: 0.1,
        slot_count: 10,
        slot_width: 0.1,
        coordination_enabled: true,
        idempotency_ttl: 3600.0,
        strategy: t::JitterStrategy::Proportional,
        max_elapsed: None,
        max_retry_after: 60.0,
        slot_capacity: None,
        retry_on: t::CategorySet::CONNECTION_ERROR
            | t::CategorySet::TIMEOUT_ERROR
            | t::CategorySet::SERVICE_UNAVAILABLE_ERROR
            | t::CategorySet::RATE_LIMIT_EXCEEDED_ERROR,
        circuit_breaker: None,
        retry_budget: None,
    }
}

struct Calls {
    store: Store<()>,
    fuel: bool,
    empty: wasmtime::component::TypedFunc<(), ()>,
    world: generated::Policy,
    policy: ResourceAny,
}

impl Calls {
    fn new(bytes: &[u8], fuel: bool) -> Result<Self, String> {
        let e = |e: wasmtime::Error| format!("{e:#}");
        let mut config = Config::new();
        config.consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(e)?;
        let component = Component::new(&engine, bytes).map_err(e)?;
        let mut linker = Linker::<()>::new(&engine);
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(e)?;
        let mut store = Store::new(&engine, ());
        if fuel {
            store.set_fuel(10_000_000).map_err(e)?;
        }
        let instance = linker.instantiate(&mut store, &component).map_err(e)?;
        let world = generated::Policy::new(&mut store, &instance).map_err(e)?;
        let probe = "ricochet:retry/probe@0.2.0";
        let interface = instance
            .get_export_index(&mut store, None, probe)
            .ok_or_else(|| format!("the component does not export {probe}"))?;
        let empty = instance
            .get_export_index(&mut store, Some(&interface), "empty")
            .ok_or("no probe.empty")?;
        let empty = instance
            .get_typed_func::<(), ()>(&mut store, &empty)
            .map_err(e)?;
        let policy = world
            .ricochet_retry_retry_policy()
            .policy()
            .call_create(&mut store, default_config())
            .map_err(e)?
            .map_err(|c| format!("config refused: {}: {}", c.field, c.message))?;
        Ok(Self {
            store,
            fuel,
            empty,
            world,
            policy,
        })
    }

    /// ns per empty call, over `calls` calls (fuel reset before each, as ricochet does).
    fn empty(&mut self, calls: u32) -> Result<f64, String> {
        let e = |e: wasmtime::Error| format!("{e:#}");
        let started = Instant::now();
        for _ in 0..calls {
            if self.fuel {
                self.store.set_fuel(10_000_000).map_err(e)?;
            }
            self.empty.call(&mut self.store, ()).map_err(e)?;
        }
        Ok(started.elapsed().as_nanos() as f64 / f64::from(calls))
    }

    /// ns per `decide` of a first failure (503), over `calls` calls.
    fn decide(&mut self, calls: u32) -> Result<f64, String> {
        let e = |e: wasmtime::Error| format!("{e:#}");
        let state = t::RetryState {
            seed: 0xDEC1DE,
            started_us: 1_000_000,
            prev_delay_us: 0,
            calls: 1,
            auth_retried: false,
        };
        let failure = t::Failure {
            category: t::ErrorCategory::ServiceUnavailableError,
            server_delay_us: None,
            token_refreshed: false,
        };
        let policy = self.world.ricochet_retry_retry_policy().policy();
        let started = Instant::now();
        for _ in 0..calls {
            if self.fuel {
                self.store.set_fuel(10_000_000).map_err(e)?;
            }
            let state = std::hint::black_box(state);
            let decided = policy
                .call_decide(&mut self.store, self.policy, state, failure, 2_000_000)
                .map_err(e)?;
            std::hint::black_box(decided);
        }
        Ok(started.elapsed().as_nanos() as f64 / f64::from(calls))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: wasmtime-floor-<version> <policy.component.wasm>")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    // The package is built once per wasmtime version: ricochet-wasmtime-floor-48, -49.
    let version = env!("CARGO_PKG_NAME").rsplit('-').next().unwrap_or("?");
    for fuel in [false, true] {
        let mut calls = Calls::new(&bytes, fuel)?;
        let (mut empty, mut decide) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            empty.push(calls.empty(CALLS)?);
            decide.push(calls.decide(CALLS)?);
        }
        println!(
            "wasmtime {version}  fuel {:<5}  empty {:>6.1} ns  decide {:>6.1} ns",
            fuel,
            median(empty),
            median(decide)
        );
    }
    Ok(())
}
