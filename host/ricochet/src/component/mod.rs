//! The component host: runs any component of the `ricochet:retry@0.2.0` `policy` world with
//! wasmtime.
//!
//! A [`PolicyComponent`] is compiled and checked once: the component must fit the world (an
//! error names the import the host does not provide, or the export that is missing; a 0.1.0
//! component is refused with what its author has to change), and is then pre-instantiated
//! (`InstancePre`), so a new instance costs microseconds. Instances are pooled and reused call
//! after call — their stores are reset to a fresh budget before each call — and several threads
//! can call one component at once, each on its own instance. Each thread also keeps the instance
//! it used last, of one component, so a thread that keeps calling the same component skips the
//! pool's lock (two lock round trips cost ~24 ns, a tenth of a decision): at most one instance
//! per thread, handed back to the pool when the thread exits. It outlives a dropped component
//! until the thread releases an instance of another one, or exits.
//!
//! # Policies are made once
//!
//! The world's `policy` resource is made from a config once (`create`, which validates it) and
//! then asked with small arguments that the canonical ABI passes in registers. Each instance
//! keeps the policies it made for the last few configs it was called with
//! (`MAX_POLICIES_PER_INSTANCE`), so the methods here that take a config find the guest's
//! policy for it with a comparison and cross into the guest once per call; a config the guest
//! rejects is asked again next time (and rejected again).
//!
//! # Sandbox
//!
//! Every call runs within the [`Sandbox`]: fuel (10 million units, a few milliseconds, by
//! default) and/or a guest time budget (epoch interruption), a memory cap (16 MiB), a cap on
//! table elements (20 000 per table) and a wasm stack cap. A trap, an exhausted budget or an
//! oversize allocation comes back as a typed [`ComponentError`]; the instance that failed is
//! dropped (a trapped instance refuses further calls), and the next call runs on a fresh one.
//! The host keeps serving. Text the guest chose that can end up in an error — a trap's
//! backtrace carries the names of the guest's name section, a `config-error` its own field and
//! message — has its control characters escaped and is cut to 1 KiB, so it cannot forge log
//! lines or drive a terminal.
//!
//! # Imports
//!
//! The guest's `clock`, `coordination`, `metrics` and `logging` imports are served by
//! [`HostBackends`]: the same coordinator, idempotency store, Prometheus metrics and JSON log as
//! the native executor, with the same coordination deadline and fallback (see `imports`). What
//! a guest may ask of them is bounded per export call: slots only for the service and operation
//! the host called it for, a few store calls and log lines, capped leases and TTLs, keys under
//! the component's own namespace.
//! Calls are synchronous (`component-model-async` stays off for speed); the asynchronous
//! backends are reached through a bounded bridge that never blocks past the deadline.
//!
//! # What a failed call means for a retry
//!
//! Nothing is retried *inside* the host because a policy failed: the executor
//! ([`RetryPolicy::with_component`](crate::RetryPolicy::with_component)) falls back to the
//! native policy of the same config for that decision and counts it in
//! `retry_policy_fallback_total{service,operation,reason}`, with the reason from
//! [`ComponentError::reason`].

mod bindings;
mod bridge;
mod convert;
mod engine;
mod guest_text;
mod imports;
mod sandbox;
mod world;

use std::cell::RefCell;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ricochet_core as rc;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, TypedFunc};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};

pub use crate::engine::HostBackends;
pub use bindings::types as wit;
use bindings::{PolicyWorld, PolicyWorldPre};
pub use convert::{
    category_to_wit, decision_from_wit, failure_to_wit, reason_from_wit, state_from_wit,
    state_to_wit, to_wit,
};
use guest_text::{sanitized, MAX_MESSAGE_BYTES};
use imports::{CallScope, HostState};
pub use imports::{
    ImportStats, MemoryCapExceeded, TableCapExceeded, MAX_GUEST_KEY_BYTES, MAX_GUEST_LEASE_MS,
    MAX_GUEST_SERIES, MAX_GUEST_TTL_MS, MAX_GUEST_VALUE_BYTES, MAX_LOG_ERROR_BYTES,
    MAX_LOG_LINES_PER_CALL, MAX_LOG_NAME_BYTES, MAX_SLOT_CALLS_PER_CALL, MAX_STORE_CALLS_PER_CALL,
};
use sandbox::MeteredCall;
pub use sandbox::Sandbox;

use crate::coordination::Coordinator;
use crate::idempotency::IdempotencyStore;
use crate::metrics::RetryMetrics;

/// Idle instances kept per component (more are made when calls overlap, and dropped after).
const MAX_IDLE_INSTANCES: usize = 16;

/// Guest policies (one per config) an instance keeps; the least recently made goes first.
const MAX_POLICIES_PER_INSTANCE: usize = 8;

/// Why a component could not be loaded or called.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComponentError {
    /// The file could not be read, or the bytes are not a valid component.
    Invalid(String),
    /// A valid component, but not of the `ricochet:retry` `policy` world; the message names the
    /// import or export.
    WrongWorld(String),
    /// The guest used up its fuel.
    OutOfFuel {
        /// The fuel each call gets.
        fuel_per_call: u64,
    },
    /// The guest ran past its time budget.
    TimedOut {
        /// The guest time each call gets.
        budget: Duration,
    },
    /// The guest tried to grow its memory past the cap.
    MemoryLimit(MemoryCapExceeded),
    /// The guest tried to grow (or declared) a table past the cap.
    TableLimit(TableCapExceeded),
    /// The guest overflowed its stack.
    StackOverflow,
    /// Any other trap (`unreachable`, an out-of-bounds access, …), as wasmtime describes it.
    Trap(String),
}

impl ComponentError {
    /// A short label: `invalid`, `wrong_world`, `out_of_fuel`, `timeout`, `memory`, `table`,
    /// `stack_overflow` or `trap` (the `reason` of `retry_policy_fallback_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::WrongWorld(_) => "wrong_world",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::TimedOut { .. } => "timeout",
            Self::MemoryLimit(_) => "memory",
            Self::TableLimit(_) => "table",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
        }
    }
}

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "cannot load policy component: {e}"),
            Self::WrongWorld(e) => write!(f, "not a ricochet:retry/policy component: {e}"),
            Self::OutOfFuel { fuel_per_call } => write!(
                f,
                "policy component ran out of fuel ({fuel_per_call} units per call)"
            ),
            Self::TimedOut { budget } => write!(
                f,
                "policy component ran past its time budget ({budget:?} per call)"
            ),
            Self::MemoryLimit(e) => write!(f, "policy component exceeded its memory: {e}"),
            Self::TableLimit(e) => write!(f, "policy component exceeded its tables: {e}"),
            Self::StackOverflow => f.write_str("policy component overflowed its stack"),
            Self::Trap(e) => write!(f, "policy component trapped: {e}"),
        }
    }
}

impl std::error::Error for ComponentError {}

/// One instance and its store.
struct Instance {
    store: Store<HostState>,
    world: PolicyWorld,
    /// The guest's `policy` for each config it was made for, most recent last.
    policies: Vec<(rc::RetryConfig, ResourceAny)>,
    /// `ricochet:retry/probe.empty`, when the component exports it.
    probe: Option<TypedFunc<(), ()>>,
}

impl Instance {
    /// The guest's policy for `config`: the one made before, or a new one (`create`, which
    /// validates the config). A config the guest rejects is not kept.
    fn policy_for(
        &mut self,
        config: &rc::RetryConfig,
    ) -> wasmtime::Result<Result<ResourceAny, wit::ConfigError>> {
        if let Some((_, handle)) = self.policies.iter().rev().find(|(c, _)| c == config) {
            return Ok(Ok(*handle));
        }
        let created = self
            .world
            .ricochet_retry_retry_policy()
            .policy()
            .call_create(&mut self.store, to_wit(config))?;
        let handle = match created {
            Ok(handle) => handle,
            Err(e) => return Ok(Err(e)),
        };
        if self.policies.len() >= MAX_POLICIES_PER_INSTANCE {
            let (_, oldest) = self.policies.remove(0);
            oldest.resource_drop(&mut self.store)?;
        }
        self.policies.push((*config, handle));
        Ok(Ok(handle))
    }
}

/// The instance a thread used last, and the component it belongs to (see the module docs).
struct ThreadInstance {
    /// The component; a `Weak` holds its allocation, so its address is not reused while this
    /// names it.
    owner: Weak<Loaded>,
    /// Its idle instance, when no call on this thread has it out.
    instance: Option<Box<Instance>>,
}

impl ThreadInstance {
    fn owned_by(&self, loaded: &Arc<Loaded>) -> bool {
        std::ptr::eq(self.owner.as_ptr(), Arc::as_ptr(loaded))
    }
}

impl Drop for ThreadInstance {
    /// A thread that exits hands its idle instance back to its component's pool, if the
    /// component is still loaded, so a thread per call does not instantiate per call.
    fn drop(&mut self) {
        if let (Some(instance), Some(loaded)) = (self.instance.take(), self.owner.upgrade()) {
            loaded.pool(instance);
        }
    }
}

thread_local! {
    static THREAD_INSTANCE: RefCell<ThreadInstance> = const {
        RefCell::new(ThreadInstance {
            owner: Weak::new(),
            instance: None,
        })
    };
}

/// The probe export, as component names spell it.
const PROBE_INTERFACE: &str = "ricochet:retry/probe@0.2.0";

/// What every handle on one component shares.
struct Loaded {
    engine: Engine,
    pre: PolicyWorldPre<HostState>,
    sandbox: Sandbox,
    shared: Arc<imports::Shared>,
    /// Boxed, so taking one out and putting it back moves a pointer, not the instance.
    #[allow(
        clippy::vec_box,
        reason = "an instance moves in and out of the pool on every call: a pointer, not ~300 bytes"
    )]
    idle: Mutex<Vec<Box<Instance>>>,
    instantiated: AtomicU64,
}

impl Loaded {
    /// Keeps an instance in the pool, for a call on any thread.
    fn pool(&self, instance: Box<Instance>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }
}

/// A loaded policy component: cheap to clone, safe to call from many threads.
#[derive(Clone)]
pub struct PolicyComponent {
    loaded: Arc<Loaded>,
    backends: Arc<HostBackends>,
}

impl fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("sandbox", &self.loaded.sandbox)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl PolicyComponent {
    /// Loads a component from a file.
    pub fn from_file(path: &Path, sandbox: Sandbox) -> Result<Self, ComponentError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ComponentError::Invalid(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes, sandbox)
    }

    /// Loads a component from its bytes: compiles it, checks it against the world and
    /// pre-instantiates it. Its imports are served by [`HostBackends::default`] until
    /// [`with_backends`](Self::with_backends) says otherwise.
    pub fn from_bytes(bytes: &[u8], sandbox: Sandbox) -> Result<Self, ComponentError> {
        let invalid = |e: wasmtime::Error| ComponentError::Invalid(guest_error_text(&e));
        let wrong_world = |e: wasmtime::Error| ComponentError::WrongWorld(guest_error_text(&e));
        let engine = sandbox::engine_for(&sandbox).map_err(invalid)?;
        let component = Component::new(&engine, bytes).map_err(invalid)?;
        world::check(&engine, &component)
            .map_err(|e| ComponentError::WrongWorld(sanitized(&e, MAX_MESSAGE_BYTES)))?;
        let mut linker = Linker::<HostState>::new(&engine);
        PolicyWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(invalid)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = PolicyWorldPre::new(instance_pre).map_err(wrong_world)?;
        let loaded = Self {
            loaded: Arc::new(Loaded {
                engine,
                pre,
                sandbox,
                shared: Arc::new(imports::Shared::new(&namespace_of(bytes))),
                idle: Mutex::new(Vec::new()),
                instantiated: AtomicU64::new(0),
            }),
            backends: Arc::new(HostBackends::default()),
        };
        loaded.probe()?;
        Ok(loaded)
    }

    /// Instantiates once to type-check every export (wasmtime checks export types only when
    /// they are first looked up) and keeps the instance for the first call.
    fn probe(&self) -> Result<(), ComponentError> {
        let _metered = self.metered();
        let mut store = self
            .new_store(&self.backends)
            .map_err(|e| self.classify(e))?;
        let instance = self
            .loaded
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| self.classify(e))?;
        world::check_functions(&mut store, &instance)
            .map_err(|e| ComponentError::WrongWorld(sanitized(&e, MAX_MESSAGE_BYTES)))?;
        let world = PolicyWorld::new(&mut store, &instance)
            .map_err(|e| ComponentError::WrongWorld(guest_error_text(&e)))?;
        let probe = probe_of(&mut store, &instance);
        self.loaded.instantiated.fetch_add(1, Ordering::Relaxed);
        self.loaded.pool(Box::new(Instance {
            store,
            world,
            policies: Vec::new(),
            probe,
        }));
        Ok(())
    }

    /// The same component with its imports served by `backends`.
    #[must_use]
    pub fn with_backends(mut self, backends: HostBackends) -> Self {
        self.backends = Arc::new(backends);
        self
    }

    /// The same component with `coordinator` behind `coordination.acquire-slot` and `clock`.
    #[must_use]
    pub fn with_coordinator(self, coordinator: Arc<dyn Coordinator>) -> Self {
        let backends = HostBackends {
            coordinator,
            ..(*self.backends).clone()
        };
        self.with_backends(backends)
    }

    /// The same component with `store` behind `coordination.idempotency-*`.
    #[must_use]
    pub fn with_idempotency_store(self, store: Arc<dyn IdempotencyStore>) -> Self {
        let backends = HostBackends {
            idempotency: store,
            ..(*self.backends).clone()
        };
        self.with_backends(backends)
    }

    /// The same component with its metrics on `metrics` (`None`: ignored).
    #[must_use]
    pub fn with_metrics(self, metrics: Option<RetryMetrics>) -> Self {
        let backends = HostBackends {
            metrics,
            ..(*self.backends).clone()
        };
        self.with_backends(backends)
    }

    /// The same component with another coordination deadline.
    #[must_use]
    pub fn with_coordination_deadline(self, deadline: Duration) -> Self {
        let backends = HostBackends {
            deadline,
            ..(*self.backends).clone()
        };
        self.with_backends(backends)
    }

    /// The backends serving this handle's imports.
    pub fn backends(&self) -> &HostBackends {
        &self.backends
    }

    pub(crate) fn backends_arc(&self) -> &Arc<HostBackends> {
        &self.backends
    }

    /// The bounds every call runs within.
    pub fn sandbox(&self) -> Sandbox {
        self.loaded.sandbox
    }

    /// Instances created so far (one per concurrent caller, plus one after each failed call).
    pub fn instances_created(&self) -> u64 {
        self.loaded.instantiated.load(Ordering::Relaxed)
    }

    /// What the imports ignored or could not do.
    pub fn import_stats(&self) -> &ImportStats {
        &self.loaded.shared.stats
    }

    /// Creates an instance now and keeps it for the next call (so the first call does not pay
    /// for it).
    pub fn prewarm(&self) -> Result<(), ComponentError> {
        let _metered = self.metered();
        let instance = self.instantiate(&self.backends)?;
        self.loaded.pool(instance);
        Ok(())
    }

    /// Drops every idle instance: the pool's, and this thread's (another thread's own instance
    /// is not reachable from here: it goes back to the pool when that thread exits).
    pub fn clear_idle(&self) {
        let _ = THREAD_INSTANCE.try_with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                if slot.owned_by(&self.loaded) {
                    slot.instance = None;
                }
            }
        });
        self.loaded
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A store with the sandbox's limits and meters, ready for a call.
    fn new_store(&self, backends: &Arc<HostBackends>) -> wasmtime::Result<Store<HostState>> {
        let loaded = &self.loaded;
        let sandbox = loaded.sandbox;
        let state = HostState::new(&sandbox, backends.clone(), loaded.shared.clone());
        let mut store = Store::new(&loaded.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        if let Some(budget) = sandbox.time_per_call {
            // Called at each epoch tick that finds the guest running: trap once the guest's own
            // time (wall time minus host imports) is over budget, else check again next tick.
            store.epoch_deadline_callback(move |ctx| {
                let s = ctx.data();
                let guest = s
                    .call_started
                    .map(|t| t.elapsed().saturating_sub(s.host_time))
                    .unwrap_or_default();
                Ok(if guest >= budget {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Continue(1)
                })
            });
        }
        // Instantiation runs guest code too (initialisers): the same budget applies, and its
        // imports may do what an export without names may.
        Self::prepare(&mut store, &sandbox, backends, CallScope::default())?;
        Ok(store)
    }

    fn instantiate(&self, backends: &Arc<HostBackends>) -> Result<Box<Instance>, ComponentError> {
        let mut store = self.new_store(backends).map_err(|e| self.classify(e))?;
        let instance = self
            .loaded
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| self.classify(e))?;
        let world = PolicyWorld::new(&mut store, &instance).map_err(|e| self.classify(e))?;
        let probe = probe_of(&mut store, &instance);
        self.loaded.instantiated.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(Instance {
            store,
            world,
            policies: Vec::new(),
            probe,
        }))
    }

    fn prepare(
        store: &mut Store<HostState>,
        sandbox: &Sandbox,
        backends: &Arc<HostBackends>,
        scope: CallScope,
    ) -> wasmtime::Result<()> {
        let timed = sandbox.time_per_call.is_some();
        store.data_mut().begin_call(backends, scope, timed);
        if let Some(fuel) = sandbox.fuel_per_call {
            store.set_fuel(fuel)?;
        }
        if timed {
            store.set_epoch_deadline(1);
        }
        Ok(())
    }

    /// Keeps the epoch ticker fast while a time-metered call (or instantiation) runs.
    fn metered(&self) -> Option<MeteredCall> {
        self.loaded
            .sandbox
            .time_per_call
            .is_some()
            .then(MeteredCall::start)
    }

    /// An idle instance: this thread's, or one from the pool.
    fn take_idle(&self) -> Option<Box<Instance>> {
        let loaded = &self.loaded;
        let mine = THREAD_INSTANCE
            .try_with(|cell| {
                let mut slot = cell.try_borrow_mut().ok()?;
                if slot.owned_by(loaded) {
                    slot.instance.take()
                } else {
                    None
                }
            })
            .ok()
            .flatten();
        mine.or_else(|| loaded.idle.lock().unwrap_or_else(|p| p.into_inner()).pop())
    }

    /// Keeps an instance after a call on it went well: as this thread's, unless the thread keeps
    /// one of another component that is still alive (a thread adopts the component it releases
    /// to when it has none, or its own is dropped); otherwise in the pool.
    fn release(&self, instance: Box<Instance>) {
        let loaded = &self.loaded;
        let mut instance = Some(instance);
        let _ = THREAD_INSTANCE.try_with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return;
            };
            if !slot.owned_by(loaded) {
                if slot.instance.is_some() && slot.owner.strong_count() > 0 {
                    return;
                }
                *slot = ThreadInstance {
                    owner: Arc::downgrade(loaded),
                    instance: None,
                };
            }
            if slot.instance.is_none() {
                slot.instance = instance.take();
            }
        });
        if let Some(instance) = instance {
            self.loaded.pool(instance);
        }
    }

    fn classify(&self, e: wasmtime::Error) -> ComponentError {
        if let Some(m) = e.downcast_ref::<MemoryCapExceeded>() {
            return ComponentError::MemoryLimit(*m);
        }
        if let Some(t) = e.downcast_ref::<TableCapExceeded>() {
            return ComponentError::TableLimit(*t);
        }
        let sandbox = &self.loaded.sandbox;
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => ComponentError::OutOfFuel {
                fuel_per_call: sandbox.fuel_per_call.unwrap_or(0),
            },
            Some(Trap::Interrupt) => ComponentError::TimedOut {
                budget: sandbox.time_per_call.unwrap_or_default(),
            },
            Some(Trap::StackOverflow) => ComponentError::StackOverflow,
            _ => ComponentError::Trap(guest_error_text(&e)),
        }
    }

    /// Runs `f` on an instance with a fresh budget, its imports served by `backends` within
    /// `scope`. A failed call drops its instance.
    fn call<R>(
        &self,
        backends: &Arc<HostBackends>,
        scope: CallScope,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, ComponentError> {
        let _metered = self.metered();
        let mut instance = match self.take_idle() {
            Some(instance) => instance,
            None => self.instantiate(backends)?,
        };
        Self::prepare(&mut instance.store, &self.loaded.sandbox, backends, scope)
            .map_err(|e| self.classify(e))?;
        let out = f(&mut instance).map_err(|e| self.classify(e))?;
        self.release(instance);
        Ok(out)
    }

    /// Runs `f` on the guest's policy for `config` (made now if this instance has none), with
    /// one budget for both; a config the guest rejects is its `config-error`.
    fn call_policy<R>(
        &self,
        backends: &Arc<HostBackends>,
        config: &rc::RetryConfig,
        scope: CallScope,
        f: impl FnOnce(&PolicyWorld, &mut Store<HostState>, ResourceAny) -> wasmtime::Result<R>,
    ) -> Result<Result<R, wit::ConfigError>, ComponentError> {
        self.call(backends, scope, |instance| {
            let handle = match instance.policy_for(config)? {
                Ok(handle) => handle,
                Err(e) => return Ok(Err(e)),
            };
            f(&instance.world, &mut instance.store, handle).map(Ok)
        })
    }

    /// Calls the component's empty export (`ricochet:retry/probe.empty`: no arguments, no
    /// result, no work) through the same pool, store reset and budget as every other call: the
    /// floor under any call on this engine. `Ok(false)` when the component does not export it.
    pub fn call_empty(&self) -> Result<bool, ComponentError> {
        self.call(
            &self.backends,
            CallScope::default(),
            |instance| match instance.probe {
                Some(empty) => {
                    empty.call(&mut instance.store, ())?;
                    Ok(true)
                }
                None => Ok(false),
            },
        )
    }

    /// Makes the guest's policy for `config` (`create`, which validates it) and keeps it for
    /// the calls that follow; `Err` is the guest's `config-error`.
    pub fn validate(
        &self,
        config: &rc::RetryConfig,
    ) -> Result<Result<(), wit::ConfigError>, ComponentError> {
        self.call_policy(
            &self.backends,
            config,
            CallScope::new(config, None),
            |_, _, _| Ok(()),
        )
    }

    /// `next-delay` through the component.
    pub fn next_delay(
        &self,
        config: &rc::RetryConfig,
        retry: u32,
        seed: u64,
        prev_delay_us: u64,
    ) -> Result<Result<u64, wit::ConfigError>, ComponentError> {
        self.call_policy(
            &self.backends,
            config,
            CallScope::new(config, None),
            |w, s, p| {
                w.ricochet_retry_retry_policy().policy().call_next_delay(
                    s,
                    p,
                    retry,
                    seed,
                    prev_delay_us,
                )
            },
        )
    }

    /// `plan` through the component: the whole schedule in one crossing.
    pub fn plan(
        &self,
        config: &rc::RetryConfig,
        seed: u64,
    ) -> Result<Result<Vec<wit::PlannedRetry>, wit::ConfigError>, ComponentError> {
        self.call_policy(
            &self.backends,
            config,
            CallScope::new(config, None),
            |w, s, p| {
                w.ricochet_retry_retry_policy()
                    .policy()
                    .call_plan(s, p, seed)
            },
        )
    }

    /// `decide` through the component (`decide-guarded` when a guard goes in): what the
    /// guest decides for `state` (before this failure), and the guards it moved. The state's
    /// bookkeeping is the caller's, by the core's rule ([`rc::RetryState::record_failure`]).
    pub fn decide(
        &self,
        config: &rc::RetryConfig,
        state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: &wit::Guards,
    ) -> Result<Result<(wit::Guards, wit::Decision), wit::ConfigError>, ComponentError> {
        self.decide_with(&self.backends, config, state, failure, now_us, guards)
    }

    /// `decide` with the imports served by `backends` for this one call. For a config without
    /// a circuit breaker or retry budget, called without guard state, this is the all-scalar
    /// `decide`; otherwise `decide-guarded`, whose guard bytes go through guest memory (a guard
    /// the config has but that goes in as `none` starts fresh, as in the world's `guards`).
    pub(crate) fn decide_with(
        &self,
        backends: &Arc<HostBackends>,
        config: &rc::RetryConfig,
        state: wit::RetryState,
        failure: wit::Failure,
        now_us: u64,
        guards: &wit::Guards,
    ) -> Result<Result<(wit::Guards, wit::Decision), wit::ConfigError>, ComponentError> {
        let scope = CallScope::new(config, None);
        let unguarded = config.circuit_breaker.is_none() && config.retry_budget.is_none();
        if unguarded && guards.breaker.is_none() && guards.budget.is_none() {
            return self.call_policy(backends, config, scope, |w, s, p| {
                let decision = w
                    .ricochet_retry_retry_policy()
                    .policy()
                    .call_decide(s, p, state, failure, now_us)?;
                let none = wit::Guards {
                    breaker: None,
                    budget: None,
                };
                Ok((none, decision))
            });
        }
        self.call_policy(backends, config, scope, |w, s, p| {
            let d = w
                .ricochet_retry_retry_policy()
                .policy()
                .call_decide_guarded(s, p, state, failure, now_us, guards)?;
            Ok((d.guards, d.decision))
        })
    }

    /// `resolve-ticket` through the component.
    pub fn resolve_ticket(
        &self,
        config: &rc::RetryConfig,
        request: wit::SlotRequest,
        ticket: u64,
        seed: u64,
    ) -> Result<Result<Option<u64>, wit::ConfigError>, ComponentError> {
        self.call_policy(
            &self.backends,
            config,
            CallScope::new(config, None),
            |w, s, p| {
                w.ricochet_retry_retry_policy()
                    .policy()
                    .call_resolve_ticket(s, p, request, ticket, seed)
            },
        )
    }

    /// `schedule` through the component: the decision, a slot from the host's coordinator
    /// (within the coordination deadline, or the guest's local fallback), the log line.
    pub fn schedule(
        &self,
        config: &rc::RetryConfig,
        service: &str,
        operation: &str,
        state: wit::RetryState,
        failure: wit::Failure,
    ) -> Result<Result<(wit::RetryState, wit::ScheduleOutcome), wit::ConfigError>, ComponentError>
    {
        let scope = CallScope::new(config, Some((service, operation)));
        self.call_policy(&self.backends, config, scope, |w, s, p| {
            let d = w
                .ricochet_retry_retry_policy()
                .policy()
                .call_schedule(s, p, service, operation, state, failure)?;
            Ok((d.state, d.outcome))
        })
    }
}

/// The component's `probe.empty`, if it exports one of that type.
fn probe_of(
    store: &mut Store<HostState>,
    instance: &wasmtime::component::Instance,
) -> Option<TypedFunc<(), ()>> {
    let interface = instance.get_export_index(&mut *store, None, PROBE_INTERFACE)?;
    let empty = instance.get_export_index(&mut *store, Some(&interface), "empty")?;
    instance.get_typed_func::<(), ()>(&mut *store, &empty).ok()
}

/// What wasmtime says about a failure, fit for a log line: a trap's backtrace names functions
/// from the guest's name section, which the guest wrote.
fn guest_error_text(e: &wasmtime::Error) -> String {
    sanitized(&format!("{e:#}"), MAX_MESSAGE_BYTES)
}

/// The component's key namespace: the first 128 bits of the SHA-256 of its bytes, in hex. The
/// same component has the same namespace on every host of a fleet; another component, or
/// another build of this one, has another.
fn namespace_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg_attr(docsrs, doc(cfg(feature = "component")))]
impl crate::RetryPolicy {
    /// A policy for `config` whose decisions come from `component` (loaded with
    /// [`PolicyComponent::from_file`] or [`PolicyComponent::from_bytes`]); see
    /// [`with_engine`](Self::with_engine).
    pub fn from_component(
        config: rc::RetryConfig,
        component: PolicyComponent,
    ) -> Result<Self, crate::engine::EngineError> {
        Self::new(config)?.with_component(component)
    }

    /// Decisions by `component`; see [`with_engine`](Self::with_engine).
    pub fn with_component(
        self,
        component: PolicyComponent,
    ) -> Result<Self, crate::engine::EngineError> {
        self.with_engine(Arc::new(component))
    }
}
