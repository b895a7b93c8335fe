//! The bounds a guest runs in, and the wasmtime engines that enforce them.
//!
//! A policy decision is a few thousand wasm instructions; a guest that needs more than a few
//! milliseconds is broken or hostile. Two meters are available, separately or together:
//!
//! - **fuel** (the default): about one unit per wasm instruction, refilled before every call —
//!   10 million units, a few milliseconds of guest code. Deterministic: a busy machine does not
//!   make a good guest fail, and host imports cost the guest nothing.
//! - **time**: wasmtime's epoch interruption. One process-wide ticker thread advances the epoch
//!   of every engine that uses it — every millisecond while a time-metered call is in flight or
//!   has started in the last 200 ms; when idle it sleeps until the next such call wakes it — and
//!   each store checks the guest's own time at every tick: wall time since the call started
//!   *minus* the time spent in host imports (a coordination round trip is the host's time, not
//!   the guest's; the imports bound it by their own deadline). Past the budget the call traps.
//!   It bounds wall time, which fuel does not, but on an overloaded machine a preempted call
//!   counts as guest time: keep the budget well above the scheduler's time slices (the tests use
//!   it at 5 ms only on hostile guests).
//!
//! Memory and tables are capped per store (`StoreLimits`, with growth past the cap a trap rather
//! than a `-1`, so an allocation bomb is reported as such — and a pooled instance never keeps a
//! table it grew call after call), and compiled wasm gets a bounded native stack
//! (`max_wasm_stack`).
//!
//! Engines are cached per combination of meters and stack size, so every component loaded with
//! the same sandbox shares one engine (and one epoch).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine};

/// The bounds of a guest, per call.
///
/// # Default
///
/// - fuel: 10 million units per call ([`Sandbox::DEFAULT_FUEL_PER_CALL`]), no time meter;
/// - memory: 16 MiB of linear memory per instance;
/// - tables: 20 000 elements per table (wasmtime's pooling allocator default);
/// - stack: 256 KiB of native stack for wasm frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sandbox {
    /// Guest time per call (epoch interruption; host imports excluded). `None`: unbounded.
    pub time_per_call: Option<Duration>,
    /// Fuel per call (about one unit per wasm instruction). `None`: not metered.
    pub fuel_per_call: Option<u64>,
    /// Cap on the guest's linear memory, bytes.
    pub max_memory_bytes: usize,
    /// Cap on the elements of each of the guest's tables.
    pub max_table_elements: usize,
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

    /// Default cap on a table's elements (wasmtime's pooling allocator uses the same): a guest
    /// needs one per function it calls indirectly, a few hundred for a policy.
    pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 20_000;

    /// Default wasm stack cap (256 KiB).
    pub const DEFAULT_MAX_WASM_STACK_BYTES: usize = 256 << 10;

    /// No time or fuel meter (memory and stack still capped): for benchmarks and trusted guests.
    pub const fn unmetered() -> Self {
        Self {
            time_per_call: None,
            fuel_per_call: None,
            max_memory_bytes: Self::DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: Self::DEFAULT_MAX_TABLE_ELEMENTS,
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

    /// The same bounds with a cap of `elements` per table.
    #[must_use]
    pub const fn with_max_table_elements(mut self, elements: usize) -> Self {
        self.max_table_elements = elements;
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
    /// When a metered call last started, ms since `origin`.
    last_call_ms: AtomicU64,
    /// Time-metered calls in flight.
    in_flight: AtomicUsize,
    origin: Instant,
    /// The ticker thread, to wake it when a call starts while it sleeps (`None`: it could not
    /// be started).
    thread: OnceLock<Option<Thread>>,
}

/// Tick period while calls are being made.
const FAST_TICK: Duration = Duration::from_millis(1);
/// Ticking goes on this long after the last call started (calls tend to come in bursts).
const IDLE_AFTER: Duration = Duration::from_millis(200);

/// How long the ticker sleeps before its next tick: `Some(FAST_TICK)` while a metered call is
/// in flight or started less than [`IDLE_AFTER`] ago, `None` (until woken) otherwise. A call in
/// flight never waits for a slow tick, however long ago it started.
fn tick_period(in_flight: usize, since_last_call: Duration) -> Option<Duration> {
    (in_flight > 0 || since_last_call < IDLE_AFTER).then_some(FAST_TICK)
}

fn ticker() -> &'static Ticker {
    static TICKER: OnceLock<Ticker> = OnceLock::new();
    let t = TICKER.get_or_init(|| Ticker {
        engines: Mutex::new(Vec::new()),
        last_call_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        origin: Instant::now(),
        thread: OnceLock::new(),
    });
    t.thread.get_or_init(|| {
        // If the thread cannot be spawned, epochs never advance and a looping guest is caught
        // only by fuel, if configured: report it loudly rather than fail every load.
        match std::thread::Builder::new()
            .name("ricochet-epoch".into())
            .spawn(move || tick_forever(t))
        {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the wasm epoch ticker; guest time budgets are not enforced");
                None
            }
        }
    });
    t
}

fn tick_forever(t: &'static Ticker) -> ! {
    loop {
        let since_call = t
            .origin
            .elapsed()
            .saturating_sub(Duration::from_millis(t.last_call_ms.load(Ordering::SeqCst)));
        match tick_period(t.in_flight.load(Ordering::SeqCst), since_call) {
            Some(period) => std::thread::sleep(period),
            // `MeteredCall::start` counts the call, then unparks: either this load saw the
            // count, or the unpark is pending and `park` returns at once.
            None => {
                std::thread::park();
                continue;
            }
        }
        for engine in t.engines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            engine.increment_epoch();
        }
    }
}

/// A time-metered call in flight: keeps the ticker ticking fast until dropped.
pub(crate) struct MeteredCall(());

impl MeteredCall {
    /// Notes that a time-metered call starts now, waking the ticker if it sleeps.
    pub(crate) fn start() -> Self {
        let t = ticker();
        t.in_flight.fetch_add(1, Ordering::SeqCst);
        let now_ms = t.origin.elapsed().as_millis() as u64;
        t.last_call_ms.store(now_ms, Ordering::SeqCst);
        if let Some(Some(thread)) = t.thread.get() {
            // Cheap when the ticker is awake: unparking a running thread only sets its token.
            thread.unpark();
        }
        MeteredCall(())
    }
}

impl Drop for MeteredCall {
    fn drop(&mut self) {
        ticker().in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_flight_keeps_the_ticker_fast_however_long_ago_it_started() {
        // The old ticker looked only at when the last call started: a call still running
        // 300 ms later got 20 ms ticks, and so ran up to 20 ms past its budget.
        assert_eq!(tick_period(1, Duration::from_secs(300)), Some(FAST_TICK));
        assert_eq!(tick_period(1, Duration::ZERO), Some(FAST_TICK));
        assert_eq!(tick_period(0, Duration::from_millis(10)), Some(FAST_TICK));
        // Idle: no ticks at all until a call wakes the ticker.
        assert_eq!(tick_period(0, IDLE_AFTER), None);
    }
}
