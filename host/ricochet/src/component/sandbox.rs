//! The bounds a guest runs in, and the wasmtime engines that enforce them.
//!
//! A policy decision is a few thousand wasm instructions; a guest that needs more than a few
//! milliseconds is broken or hostile. Two meters are available, separately or together:
//!
//! - **fuel** (the default): about one unit per wasm instruction, refilled before every call —
//!   10 million units, a few milliseconds of guest code. Deterministic: a busy machine does not
//!   make a good guest fail, and host imports cost the guest nothing.
//! - **time**: wasmtime's epoch interruption. One process-wide ticker thread advances the epoch
//!   of every engine that uses it — every millisecond while calls are being made, every 20 ms
//!   when idle — and each store checks the guest's own time at every tick: wall time since the
//!   call started *minus* the time spent in host imports (a coordination round trip is the
//!   host's time, not the guest's). Past the budget the call traps. It bounds wall time, which
//!   fuel does not, but on an overloaded machine a preempted call counts as guest time: keep
//!   the budget well above the scheduler's time slices (the tests use it at 5 ms only on
//!   hostile guests).
//!
//! Memory is capped per store (`StoreLimits`, with growth past the cap a trap rather than a
//! `-1`, so an allocation bomb is reported as such), and compiled wasm gets a bounded native
//! stack (`max_wasm_stack`).
//!
//! Engines are cached per combination of meters and stack size, so every component loaded with
//! the same sandbox shares one engine (and one epoch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine};

/// The bounds of a guest, per call.
///
/// # Default
///
/// - fuel: 10 million units per call ([`Sandbox::DEFAULT_FUEL_PER_CALL`]), no time meter;
/// - memory: 16 MiB of linear memory per instance;
/// - stack: 256 KiB of native stack for wasm frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sandbox {
    /// Guest time per call (epoch interruption; host imports excluded). `None`: unbounded.
    pub time_per_call: Option<Duration>,
    /// Fuel per call (about one unit per wasm instruction). `None`: not metered.
    pub fuel_per_call: Option<u64>,
    /// Cap on the guest's linear memory, bytes.
    pub max_memory_bytes: usize,
    /// Cap on the native stack used by wasm frames, bytes.
    pub max_wasm_stack_bytes: usize,
}

impl Sandbox {
    /// A guest time budget of a few milliseconds, for [`with_time_per_call`](Self::with_time_per_call).
    pub const DEFAULT_TIME_PER_CALL: Duration = Duration::from_millis(5);

    /// Fuel per call: a few milliseconds of guest code (a decision takes a few thousand).
    pub const DEFAULT_FUEL_PER_CALL: u64 = 10_000_000;

    /// Default memory cap (16 MiB).
    pub const DEFAULT_MAX_MEMORY_BYTES: usize = 16 << 20;

    /// Default wasm stack cap (256 KiB).
    pub const DEFAULT_MAX_WASM_STACK_BYTES: usize = 256 << 10;

    /// No time or fuel meter (memory and stack still capped): for benchmarks and trusted guests.
    pub const fn unmetered() -> Self {
        Self {
            time_per_call: None,
            fuel_per_call: None,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            max_wasm_stack_bytes: Self::DEFAULT_MAX_WASM_STACK_BYTES,
        }
    }

    /// The same bounds with `time` of guest time per call.
    #[must_use]
    pub const fn with_time_per_call(mut self, time: Duration) -> Self {
        self.time_per_call = Some(time);
        self
    }

    /// The same bounds with `fuel` per call.
    #[must_use]
    pub const fn with_fuel_per_call(mut self, fuel: u64) -> Self {
        self.fuel_per_call = Some(fuel);
        self
    }

    /// The same bounds with a memory cap of `bytes`.
    #[must_use]
    pub const fn with_max_memory_bytes(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = bytes;
        self
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            fuel_per_call: Some(Self::DEFAULT_FUEL_PER_CALL),
            ..Self::unmetered()
        }
    }
}

/// What an engine is configured for (the part of a [`Sandbox`] that lives in `Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EngineKey {
    epochs: bool,
    fuel: bool,
    max_wasm_stack_bytes: usize,
}

/// The shared engine for `sandbox`, created on first use.
pub(crate) fn engine_for(sandbox: &Sandbox) -> wasmtime::Result<Engine> {
    static ENGINES: Mutex<Vec<(EngineKey, Engine)>> = Mutex::new(Vec::new());
    let key = EngineKey {
        epochs: sandbox.time_per_call.is_some(),
        fuel: sandbox.fuel_per_call.is_some(),
        max_wasm_stack_bytes: sandbox.max_wasm_stack_bytes,
    };
    let mut engines = ENGINES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, engine)) = engines.iter().find(|(k, _)| *k == key) {
        return Ok(engine.clone());
    }
    let mut config = Config::new();
    config
        .epoch_interruption(key.epochs)
        .consume_fuel(key.fuel)
        .max_wasm_stack(key.max_wasm_stack_bytes);
    let engine = Engine::new(&config)?;
    if key.epochs {
        ticker()
            .engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(engine.clone());
    }
    engines.push((key, engine.clone()));
    Ok(engine)
}

/// The epoch ticker: one thread for every engine with epoch interruption.
struct Ticker {
    engines: Mutex<Vec<Engine>>,
    /// When a metered call last started, ms since `origin` (drives the fast/slow tick rate).
    last_call_ms: AtomicU64,
    origin: Instant,
}

/// Tick period while calls are being made.
const FAST_TICK: Duration = Duration::from_millis(1);
/// Tick period after [`IDLE_AFTER`] without calls.
const SLOW_TICK: Duration = Duration::from_millis(20);
const IDLE_AFTER: Duration = Duration::from_millis(200);

fn ticker() -> &'static Ticker {
    static TICKER: OnceLock<Ticker> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let t = TICKER.get_or_init(|| Ticker {
        engines: Mutex::new(Vec::new()),
        last_call_ms: AtomicU64::new(0),
        origin: Instant::now(),
    });
    STARTED.get_or_init(|| {
        // If the thread cannot be spawned, epochs never advance and a looping guest is caught
        // only by fuel, if configured: report it loudly rather than fail every load.
        if let Err(e) = std::thread::Builder::new()
            .name("ricochet-epoch".into())
            .spawn(|| tick_forever(t))
        {
            tracing::error!(error = %e, "cannot start the wasm epoch ticker; guest time budgets are not enforced");
        }
    });
    t
}

fn tick_forever(t: &'static Ticker) -> ! {
    loop {
        let since_call = t.origin.elapsed().saturating_sub(Duration::from_millis(
            t.last_call_ms.load(Ordering::Relaxed),
        ));
        std::thread::sleep(if since_call < IDLE_AFTER {
            FAST_TICK
        } else {
            SLOW_TICK
        });
        for engine in t.engines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            engine.increment_epoch();
        }
    }
}

/// Notes that a time-metered call starts now (keeps the ticker fast).
pub(crate) fn note_metered_call() {
    let t = ticker();
    let now_ms = t.origin.elapsed().as_millis() as u64;
    // Relaxed and racy on purpose: the ticker only needs "recently", not "exactly".
    if t.last_call_ms.load(Ordering::Relaxed) != now_ms {
        t.last_call_ms.store(now_ms, Ordering::Relaxed);
    }
}
