//! Soak and load: thousands of concurrent retrying, idempotent tasks against a flaky HTTP service
//! on loopback, with Redis coordination and idempotency, for a fixed time — optionally while
//! Redis is killed, paused, slowed and cut off, and while holders are killed mid-operation.
//!
//! ```text
//! cargo bench -p ricochet-cli --bench soak -- --tasks 10000 --duration 600
//! cargo bench -p ricochet-cli --bench soak -- --tasks 10000 --duration 110 --faults
//! ```
//!
//! Options: `--tasks N` (default 10000), `--duration SECS` (60), `--think-ms MIN..MAX`
//! (2000..4000), `--connections N` (HTTP keep-alive pool, 128), `--redis spawn|memory|URL`
//! (spawn: a private `redis-server` with `--appendonly yes --appendfsync always`), `--json PATH`
//! (the report as JSON too), `--faults` (needs `spawn`): from 15 s on, every 15 s, one fault
//! for 5 s — `kill -9` then a restart, `SIGSTOP`/`SIGCONT`, `DEBUG SLEEP`, a busy Lua script, a
//! network black hole, `CLIENT PAUSE` — and every 2 s up to 10 tasks killed inside a call;
//! `--fault-rounds N` repeats the six faults N times (give it `--duration` 15 + 90·N or more).
//! The exit status is 1 unless the verdict is CLEAN.
//!
//! # What runs
//!
//! - A child process (this binary with `--serve`) runs the flaky service and, with `--faults`, a
//!   TCP proxy in front of Redis that can black-hole traffic. Being another process, neither
//!   counts in the peak RSS reported for the retrying side.
//! - The tasks come in pairs. Both tasks of a pair submit the same operations (`/op/PAIR/SEQ`,
//!   idempotency key `PAIR/SEQ`) — the second a little later, as a duplicate delivery would —
//!   through `execute_idempotent_with` on one `RetryPolicy` (aggressive preset, 2 s attempt
//!   timeout, 2 s lease). Between operations each task thinks for a while.
//! - The service fails 15 % of requests with 503, 3 % with 500 and 2 % with 429
//!   `Retry-After: 1`, and answers everything with 503 for 400 ms of every 10 s (a herd). Every
//!   200 carries the request's number, and the service counts its 200s per operation.
//!
//! # What is checked
//!
//! - Failures by reason: every failed call must end in the service's errors
//!   (`MaxRetriesExceeded` / `NonRetryable` with the service's last error); any other outcome
//!   (`InProgress`, `Mismatch`, `StoredResult`, an open circuit, a call that never ended) is
//!   counted as a failure *from ricochet*.
//! - No operation lost or duplicated: the two callers of one key get the same answer (the same
//!   request number), the service answered 200 exactly once for every operation a caller saw
//!   succeed, and never for one whose callers all failed. Exceptions must be explained, key by
//!   key: a caller ran unguarded (the store was unreachable: at-least-once by design), a caller
//!   ran but was told its result could not be stored (`Origin::Unrecorded`), a holder was killed
//!   mid-operation (its request may have reached the service), or an attempt was cut off by its
//!   timeout after the request left.
//! - Peak RSS (`VmHWM`) and RSS during the run, tokio's alive tasks and the process's threads
//!   after shutdown, and the Prometheus series count at 10 s and at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore, RedisSettings};
use ricochet_test_support as common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ricochet::idempotency::{IdempotencyError, IdempotencyOptions, Origin};
use ricochet::metrics::RetryMetrics;
use ricochet::{AttemptError, RetryConfig, RetryError, RetryPolicy};
use ricochet_cli::flaky::{FlakyServer, GetError, Pool, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "soak";
const OPERATION: &str = "submit";

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    tasks: u64,
    duration: Duration,
    think_ms: (u64, u64),
    connections: usize,
    redis: String,
    faults: bool,
    fault_rounds: u64,
    json: Option<String>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        tasks: 10_000,
        duration: Duration::from_secs(60),
        think_ms: (2000, 4000),
        connections: 128,
        redis: "spawn".into(),
        faults: false,
        fault_rounds: 1,
        json: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: `{v}` is not a whole number"))
        };
        match arg.as_str() {
            "--tasks" => o.tasks = number("--tasks", &value("--tasks")?)?.max(2),
            "--duration" => {
                o.duration = Duration::from_secs(number("--duration", &value("--duration")?)?)
            }
            "--think-ms" => {
                let v = value("--think-ms")?;
                let (a, b) = v
                    .split_once("..")
                    .ok_or_else(|| format!("--think-ms: `{v}` is not MIN..MAX"))?;
                o.think_ms = (number("--think-ms", a)?, number("--think-ms", b)?);
                if o.think_ms.0 > o.think_ms.1 {
                    return Err(format!("--think-ms: `{v}`: MIN is above MAX"));
                }
            }
            "--connections" => {
                o.connections = number("--connections", &value("--connections")?)? as usize
            }
            "--redis" => o.redis = value("--redis")?,
            "--faults" => o.faults = true,
            "--fault-rounds" => {
                o.fault_rounds = number("--fault-rounds", &value("--fault-rounds")?)?.max(1)
            }
            "--json" => o.json = Some(value("--json")?),
            // cargo bench passes `--bench`; criterion-style filters are not used here.
            "--bench" => {}
            other => return Err(format!("unknown option `{other}` (see the file's header)")),
        }
    }
    if o.faults && o.redis != "spawn" {
        return Err("--faults needs --redis spawn (it kills and restarts its own server)".into());
    }
    Ok(o)
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key_id(pair: u64, seq: u64) -> u64 {
    (pair << 32) | seq
}

// ---------------------------------------------------------------------------------------------
// The child process: the flaky service and the Redis proxy

fn serve(upstream: Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (gate, gate_rx) = tokio::sync::watch::channel(false);
        let proxy = match upstream {
            Some(up) => Some(start_proxy(up, gate_rx).await),
            None => None,
        };
        let ok_by_key: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let started = Instant::now();
        let counts = ok_by_key.clone();
        let server = FlakyServer::start_unrecorded(move |n, path| {
            if let Some(op) = path.strip_prefix("/op/") {
                let in_outage = started.elapsed().as_millis() % 10_000 < 400;
                let r = mix(n) % 100;
                if in_outage || r < 15 {
                    Reply::Status(503)
                } else if r < 18 {
                    Reply::Status(500)
                } else if r < 20 {
                    Reply::RetryAfter(429, "1".into())
                } else {
                    *counts.lock().unwrap().entry(op.to_string()).or_default() += 1;
                    Reply::Ok(n.to_string())
                }
            } else if path == "/__report" {
                let counts = counts.lock().unwrap();
                let mut out = String::with_capacity(counts.len() * 16);
                for (key, count) in counts.iter() {
                    out.push_str(&format!("{key} {count}\n"));
                }
                Reply::Ok(out)
            } else if path == "/__blackhole/on" {
                gate.send_replace(true);
                Reply::Ok("on".into())
            } else if path == "/__blackhole/off" {
                gate.send_replace(false);
                Reply::Ok("off".into())
            } else {
                Reply::Status(404)
            }
        })
        .await
        .expect("flaky service");
        let proxy_addr = proxy.map_or_else(|| "-".to_string(), |a| a.to_string());
        println!("READY {} {proxy_addr}", server.addr());
        std::io::stdout().flush().expect("stdout");
        // Runs until the parent closes our stdin.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            std::process::exit(0);
        });
        std::future::pending::<()>().await;
    });
}

/// A TCP proxy to `upstream`; while the gate is up it forwards nothing (bytes already read wait,
/// as retransmitted segments would), so both sides see silence — a partition, not a reset.
async fn start_proxy(upstream: String, gate: tokio::sync::watch::Receiver<bool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, gate) = (upstream.clone(), gate.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::select! {
                    () = pump(cr, sw, gate.clone()) => {}
                    () = pump(sr, cw, gate) => {}
                }
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if gate.wait_for(|closed| !closed).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|closed| !closed).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

struct Service {
    child: Child,
    http: SocketAddr,
    proxy: Option<SocketAddr>,
}

impl Service {
    fn spawn(redis_upstream: Option<u16>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg("--serve");
        if let Some(port) = redis_upstream {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the service process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("READY line");
        let mut parts = line.split_whitespace().skip(1);
        let http = parts.next().expect("http addr").parse().expect("http addr");
        let proxy = parts.next().and_then(|p| p.parse().ok());
        Self { child, http, proxy }
    }

    /// A blocking GET (for control paths and the final report).
    fn get(&self, path: &str) -> String {
        blocking_get(self.http, path)
    }
}

/// A blocking GET that must answer 200: its body.
fn blocking_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("service");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The retrying side

/// Counts, by outcome.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    /// Calls whose task was killed inside them (their operation is redone by a replacement).
    abandoned: AtomicU64,
    ran: AtomicU64,
    replayed: AtomicU64,
    unguarded: AtomicU64,
    unrecorded: AtomicU64,
    attempts: AtomicU64,
    /// Failed calls by reason; `ricochet:` prefixes those not caused by the service.
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn fail(&self, reason: String) {
        *self.failures.lock().unwrap().entry(reason).or_default() += 1;
    }

    fn failures(&self) -> u64 {
        self.failures.lock().unwrap().values().sum()
    }
}

/// What the two callers of a key saw (cleared once both reported).
#[derive(Default)]
struct Pair {
    /// seq → the first caller's answer (`None`: it failed).
    first: HashMap<u64, Option<u64>>,
    /// Bit per seq: some caller saw success.
    succeeded: Vec<u64>,
}

impl Pair {
    fn mark(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.succeeded.len() <= word {
            self.succeeded.resize(word + 1, 0);
        }
        self.succeeded[word] |= 1 << bit;
    }

    fn succeeded(&self, seq: u64) -> bool {
        self.succeeded
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

struct Shared {
    policy: RetryPolicy,
    options: IdempotencyOptions,
    pool: Pool,
    tally: Tally,
    pairs: Vec<Mutex<Pair>>,
    /// Keys allowed to run twice (`E key why`) and pairs of callers with different answers
    /// (`D key a b`), one line each, checked after the run: in a file, so that the harness's
    /// bookkeeping stays out of the memory figures.
    notes: Mutex<std::io::BufWriter<std::fs::File>>,
    deadline: Instant,
    think_ms: (u64, u64),
}

impl Shared {
    fn explain(&self, key: u64, why: Why) {
        let _ = writeln!(self.notes.lock().unwrap(), "E {key} {}", why as u8);
    }
}

/// Why an operation may have run twice.
#[derive(Clone, Copy)]
enum Why {
    Unguarded = 0,
    HolderKilled = 1,
    CutOff = 2,
    Unrecorded = 3,
}

impl Why {
    fn from(code: u64) -> Self {
        match code {
            0 => Self::Unguarded,
            1 => Self::HolderKilled,
            2 => Self::CutOff,
            _ => Self::Unrecorded,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Unguarded => "ran unguarded (store unreachable)",
            Self::HolderKilled => "holder killed mid-operation",
            Self::CutOff => "attempt cut off by its timeout",
            Self::Unrecorded => "result not stored (store failed after the run)",
        }
    }
}

/// One task's place, so a killed task can be replaced by one that redoes its operation.
struct Slot {
    pair: u64,
    role: u64,
    next_seq: AtomicU64,
    in_call: AtomicBool,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

async fn worker(shared: Arc<Shared>, slot: Arc<Slot>) {
    let (pair, role) = (slot.pair, slot.role);
    loop {
        let seq = slot.next_seq.load(Ordering::SeqCst);
        let r = mix(key_id(pair, seq));
        let (lo, hi) = shared.think_ms;
        let mut think = lo + r % (hi - lo + 1);
        if role == 1 {
            // The duplicate arrives 0–150 ms after the original would.
            think += (r >> 32) % 150;
        }
        tokio::time::sleep(Duration::from_millis(think)).await;
        if Instant::now() >= shared.deadline {
            return;
        }
        let key = key_id(pair, seq);
        let path = format!("/op/{pair}/{seq}");
        let idem_key = format!("{pair}/{seq}");
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        slot.in_call.store(true, Ordering::SeqCst);
        shared.tally.calls.fetch_add(1, Ordering::Relaxed);
        let in_call = InCall(&shared.tally);
        let result = shared
            .policy
            .execute_idempotent_with(
                &shared.options,
                &idem_key,
                "soak-v1",
                || {
                    let (shared, path, sent, answered) =
                        (shared.clone(), path.clone(), sent.clone(), answered.clone());
                    async move {
                        sent.fetch_add(1, Ordering::Relaxed);
                        shared.tally.attempts.fetch_add(1, Ordering::Relaxed);
                        let r = shared.pool.get(&path).await;
                        answered.fetch_add(1, Ordering::Relaxed);
                        r
                    }
                },
                SERVICE,
                OPERATION,
            )
            .await;
        // No await from here to `next_seq`: a kill lands before this report or after it.
        std::mem::forget(in_call);
        slot.in_call.store(false, Ordering::SeqCst);
        if sent.load(Ordering::Relaxed) != answered.load(Ordering::Relaxed) {
            shared.explain(key, Why::CutOff);
        }
        let answer = match result {
            Ok(outcome) => {
                let counter = match outcome.origin {
                    Origin::Ran => &shared.tally.ran,
                    Origin::Replayed => &shared.tally.replayed,
                    Origin::Unguarded => {
                        shared.explain(key, Why::Unguarded);
                        &shared.tally.unguarded
                    }
                    Origin::Unrecorded => {
                        shared.explain(key, Why::Unrecorded);
                        &shared.tally.unrecorded
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Some(outcome.value.parse::<u64>().unwrap_or(u64::MAX))
            }
            Err(e) => {
                shared.tally.fail(failure_reason(&e));
                None
            }
        };
        {
            let mut p = shared.pairs[pair as usize].lock().unwrap();
            if answer.is_some() {
                p.mark(seq);
            }
            match p.first.remove(&seq) {
                None => {
                    p.first.insert(seq, answer);
                }
                Some(other) => {
                    if let (Some(a), Some(b)) = (answer, other) {
                        if a != b {
                            let _ = writeln!(shared.notes.lock().unwrap(), "D {key} {a} {b}");
                        }
                    }
                }
            }
        }
        slot.next_seq.store(seq + 1, Ordering::SeqCst);
    }
}

/// Counts a call as abandoned when its task is killed inside it (dropped, not forgotten).
struct InCall<'a>(&'a Tally);

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.0.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}

fn failure_reason(e: &IdempotencyError<GetError>) -> String {
    let answer = |e: &GetError| match e {
        GetError::Http(h) => format!("HTTP {}", h.status),
        GetError::Io(e) => format!("I/O {}", e.kind()),
    };
    match e {
        IdempotencyError::Operation(RetryError::MaxRetriesExceeded(m)) => {
            let last = match &m.last_error {
                AttemptError::Failed(e) => answer(e),
                AttemptError::TimedOut(_) => "attempt timeout".to_string(),
            };
            format!("service: gave up ({}), last {last}", m.reason)
        }
        IdempotencyError::Operation(RetryError::NonRetryable(e)) => {
            format!("service: non-retryable, {}", answer(e))
        }
        IdempotencyError::Operation(RetryError::CircuitOpen { .. }) => {
            "ricochet: circuit open".into()
        }
        IdempotencyError::InProgress => "ricochet: still in progress after the wait".into(),
        IdempotencyError::Mismatch => "ricochet: fingerprint mismatch".into(),
        IdempotencyError::StoredResult(_) => "ricochet: stored result unreadable".into(),
        _ => "ricochet: other".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Live heap bytes (allocated minus freed) and the most ever live: tells a leak, which grows the
/// live heap, from allocator fragmentation, which grows only the RSS.
struct CountingAlloc;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
            PEAK_LIVE_BYTES.fetch_max(live + layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// The size of one task's future (what `tokio::spawn` allocates per task, plus its header).
static TASK_BYTES: AtomicU64 = AtomicU64::new(0);

/// A number from `/proc/self/status` (`VmRSS:` and `VmHWM:` are in KiB, `Threads:` a count).
fn status_value(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Series as a scrape sees them: the non-comment lines of the text exposition.
fn series_count(registry: &prometheus::Registry) -> usize {
    ricochet::metrics::render(registry)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn counter_sum(registry: &prometheus::Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// A point in the run, for the per-fault windows.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    at: f64,
    calls_done: u64,
    failures: u64,
    unguarded: u64,
    coordination_fallbacks: u64,
    idempotency_fallbacks: u64,
}

fn snapshot(shared: &Shared, registry: &prometheus::Registry, started: Instant) -> Snapshot {
    let t = &shared.tally;
    Snapshot {
        at: started.elapsed().as_secs_f64(),
        calls_done: t.ran.load(Ordering::Relaxed)
            + t.replayed.load(Ordering::Relaxed)
            + t.unguarded.load(Ordering::Relaxed)
            + t.unrecorded.load(Ordering::Relaxed)
            + t.failures(),
        failures: t.failures(),
        unguarded: t.unguarded.load(Ordering::Relaxed),
        coordination_fallbacks: counter_sum(registry, "retry_coordination_fallback_total"),
        idempotency_fallbacks: counter_sum(registry, "retry_idempotency_fallback_total"),
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

const FAULT_LENGTH: Duration = Duration::from_secs(5);

/// Runs on its own thread: each fault in turn, 15 s apart, starting 15 s in; `rounds` times.
fn run_faults(
    rounds: u64,
    mut redis: common::RedisServer,
    service_http: SocketAddr,
    started: Instant,
    marks: Arc<Mutex<Vec<(String, f64, f64)>>>,
    stop: Arc<AtomicBool>,
) -> common::RedisServer {
    let control = |path: &str| blocking_get(service_http, path);
    let busy_script = format!(
        "local t=redis.call('TIME') local s=t[1]*1000000+t[2] \
         while true do local n=redis.call('TIME') \
         if n[1]*1000000+n[2]-s > {} then break end end return 1",
        FAULT_LENGTH.as_micros()
    );
    let faults: [&str; 6] = [
        "kill -9, restart (AOF) 5 s later",
        "SIGSTOP for 5 s, then SIGCONT",
        "DEBUG SLEEP 5 (server blocked)",
        "a Lua script busy for 5 s",
        "network black hole for 5 s (proxy)",
        "CLIENT PAUSE 5000 ALL",
    ];
    for n in 0..rounds as usize * faults.len() {
        let (i, name) = (n % faults.len(), faults[n % faults.len()]);
        let at = started + Duration::from_secs(15 + 15 * n as u64);
        while Instant::now() < at {
            if stop.load(Ordering::Relaxed) {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let from = started.elapsed().as_secs_f64();
        match i {
            0 => {
                redis.kill9();
                std::thread::sleep(FAULT_LENGTH);
                redis.restart();
            }
            1 => {
                redis.pause();
                std::thread::sleep(FAULT_LENGTH);
                redis.resume();
            }
            2 => {
                redis.cli(&["DEBUG", "SLEEP", &FAULT_LENGTH.as_secs().to_string()]);
            }
            3 => {
                redis.cli(&["EVAL", &busy_script, "0"]);
            }
            4 => {
                control("/__blackhole/on");
                std::thread::sleep(FAULT_LENGTH);
                control("/__blackhole/off");
            }
            _ => {
                redis.cli(&[
                    "CLIENT",
                    "PAUSE",
                    &FAULT_LENGTH.as_millis().to_string(),
                    "ALL",
                ]);
                std::thread::sleep(FAULT_LENGTH);
            }
        }
        let to = started.elapsed().as_secs_f64();
        marks.lock().unwrap().push((name.to_string(), from, to));
    }
    redis
}

/// Every 2 s, kills up to 10 tasks that are inside a call (holding a key or waiting on one) and
/// starts a replacement that redoes the same operation, as a restarted worker would.
async fn kill_holders(
    shared: Arc<Shared>,
    slots: Vec<Arc<Slot>>,
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
    killed: Arc<AtomicU64>,
) {
    let mut round = 0u64;
    while Instant::now() + Duration::from_secs(5) < shared.deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
        let mut n = 0;
        for i in 0..slots.len() as u64 {
            if n == 10 {
                break;
            }
            let slot = &slots[(mix(round * 1_000_003 + i) % slots.len() as u64) as usize];
            if !slot.in_call.load(Ordering::SeqCst) {
                continue;
            }
            let seq = slot.next_seq.load(Ordering::SeqCst);
            shared.explain(key_id(slot.pair, seq), Why::HolderKilled);
            if let Some(handle) = slot.abort.lock().unwrap().take() {
                handle.abort();
            }
            n += 1;
            killed.fetch_add(1, Ordering::Relaxed);
            let handle = tasks
                .lock()
                .unwrap()
                .spawn(worker(shared.clone(), slot.clone()));
            *slot.abort.lock().unwrap() = Some(handle);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        serve(args.get(1).cloned());
        return;
    }
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let report = run(&options);
    println!("{}", report.text);
    if let Some(path) = &options.json {
        std::fs::write(path, report.json.to_string()).expect("write --json");
    }
    if !report.clean {
        std::process::exit(1);
    }
}

struct Report {
    text: String,
    json: serde_json::Value,
    clean: bool,
}

fn run(o: &Options) -> Report {
    let redis = (o.redis == "spawn").then(|| {
        common::RedisServer::spawn_with(
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--enable-debug-command",
                "yes",
            ],
            None,
        )
    });
    let service = Service::spawn(if o.faults {
        redis.as_ref().map(|r| r.port)
    } else {
        None
    });
    let redis_url = match (&redis, service.proxy, o.redis.as_str()) {
        (_, Some(proxy), _) => Some(format!("redis://{proxy}")),
        (Some(r), None, _) => Some(r.url()),
        (None, _, "memory") => None,
        (None, _, url) => Some(url.to_string()),
    };
    let rss_before_kib = status_value("VmRSS:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry).expect("metrics");
    let started = Instant::now();
    let deadline = started + o.duration;

    let (shared, slots, tasks) = runtime.block_on(async {
        let mut policy = RetryPolicy::new(RetryConfig::AGGRESSIVE)
            .expect("preset")
            .with_metrics(metrics.clone())
            .with_attempt_timeout(Duration::from_secs(2));
        if let Some(url) = &redis_url {
            let conn =
                RedisConnection::open(&RedisSettings::single(url.clone()).with_key_prefix("soak:"))
                    .expect("redis settings");
            policy = policy
                .with_coordinator(Arc::new(
                    RedisCoordinator::new(conn.clone()).with_metrics(metrics.clone()),
                ))
                .with_idempotency_store(Arc::new(RedisIdempotencyStore::new(conn)));
        }
        let shared = Arc::new(Shared {
            policy,
            options: IdempotencyOptions {
                lease: Duration::from_secs(2),
                wait: Duration::from_secs(30),
                ..IdempotencyOptions::default()
            },
            pool: Pool::new(service.http, o.connections),
            tally: Tally::default(),
            pairs: (0..o.tasks / 2).map(|_| Mutex::default()).collect(),
            notes: Mutex::new(std::io::BufWriter::new(
                tempfile::tempfile().expect("a temporary file for the notes"),
            )),
            deadline,
            think_ms: o.think_ms,
        });
        let mut tasks = tokio::task::JoinSet::new();
        let mut slots = Vec::new();
        let probe = Arc::new(Slot {
            pair: 0,
            role: 0,
            next_seq: AtomicU64::new(0),
            in_call: AtomicBool::new(false),
            abort: Mutex::new(None),
        });
        TASK_BYTES.store(
            std::mem::size_of_val(&worker(shared.clone(), probe)) as u64,
            Ordering::Relaxed,
        );
        for t in 0..(o.tasks / 2) * 2 {
            let slot = Arc::new(Slot {
                pair: t / 2,
                role: t % 2,
                next_seq: AtomicU64::new(0),
                in_call: AtomicBool::new(false),
                abort: Mutex::new(None),
            });
            let handle = tasks.spawn(worker(shared.clone(), slot.clone()));
            *slot.abort.lock().unwrap() = Some(handle);
            slots.push(slot);
        }
        (shared, slots, Arc::new(Mutex::new(tasks)))
    });
    eprintln!(
        "soak: {} tasks for {}s · redis {} · faults {} · service {}",
        slots.len(),
        o.duration.as_secs(),
        redis_url.as_deref().unwrap_or("none (in-memory)"),
        if o.faults { "on" } else { "off" },
        service.http
    );

    // Faults on their own thread; holder kills on the runtime.
    let marks: Arc<Mutex<Vec<(String, f64, f64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU64::new(0));
    let (fault_thread, mut redis) = match (o.faults, redis) {
        (true, Some(redis)) => {
            let (marks, stop, http) = (marks.clone(), stop.clone(), service.http);
            let rounds = o.fault_rounds;
            let thread =
                std::thread::spawn(move || run_faults(rounds, redis, http, started, marks, stop));
            (Some(thread), None)
        }
        (_, redis) => (None, redis),
    };
    let killer = o.faults.then(|| {
        runtime.spawn(kill_holders(
            shared.clone(),
            slots.clone(),
            tasks.clone(),
            killed.clone(),
        ))
    });

    // Sample while it runs.
    let mut snapshots = vec![snapshot(&shared, &registry, started)];
    let mut rss_max_kib = 0;
    let mut series_at_10s = None;
    let mut calls_per_s = Vec::new();
    let mut live_heap_kib = Vec::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        rss_max_kib = rss_max_kib.max(status_value("VmRSS:"));
        let s = snapshot(&shared, &registry, started);
        calls_per_s.push(s.calls_done - snapshots.last().map_or(0, |p| p.calls_done));
        snapshots.push(s);
        if series_at_10s.is_none() && started.elapsed() >= Duration::from_secs(10) {
            series_at_10s = Some(series_count(&registry));
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed.is_multiple_of(10) {
            let live_kib = LIVE_BYTES.load(Ordering::Relaxed) / 1024;
            live_heap_kib.push(live_kib);
            eprintln!(
                "  {elapsed:>4}s  calls done {:>8}  failures {:>5}  unguarded {:>5}  RSS {} KiB  live heap {live_kib} KiB",
                s.calls_done, s.failures, s.unguarded, status_value("VmRSS:")
            );
        }
    }

    // Shutdown: the tasks finish the call they are in; nothing is cancelled.
    stop.store(true, Ordering::Relaxed);
    let drain_started = Instant::now();
    let (unfinished, drain) = runtime.block_on(async {
        if let Some(k) = killer {
            let _ = k.await;
        }
        let mut set = std::mem::take(&mut *tasks.lock().unwrap());
        let drain = tokio::time::timeout(Duration::from_secs(120), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        (set.len(), drain.is_ok())
    });
    let drain_s = drain_started.elapsed().as_secs_f64();
    if let Some(thread) = fault_thread {
        redis = Some(thread.join().expect("fault thread"));
    }
    let end = snapshot(&shared, &registry, started);
    snapshots.push(end);
    let series_end = series_count(&registry);
    let hwm_kib = status_value("VmHWM:");
    let live_end_kib = LIVE_BYTES.load(Ordering::Relaxed) / 1024;
    let live_peak_kib = PEAK_LIVE_BYTES.load(Ordering::Relaxed) / 1024;
    let elapsed = started.elapsed().as_secs_f64();

    // Release everything the run holds, then see what is left on the runtime.
    let tally_calls = shared.tally.calls.load(Ordering::Relaxed);
    let (ran, replayed, unguarded, unrecorded, attempts) = (
        shared.tally.ran.load(Ordering::Relaxed),
        shared.tally.replayed.load(Ordering::Relaxed),
        shared.tally.unguarded.load(Ordering::Relaxed),
        shared.tally.unrecorded.load(Ordering::Relaxed),
        shared.tally.attempts.load(Ordering::Relaxed),
    );
    let failures = shared.tally.failures.lock().unwrap().clone();
    let mut notes = {
        let mut writer = shared.notes.lock().unwrap();
        writer.flush().expect("flush the notes");
        writer.get_ref().try_clone().expect("the notes file")
    };
    let pairs: Vec<Pair> = shared
        .pairs
        .iter()
        .map(|p| std::mem::take(&mut *p.lock().unwrap()))
        .collect();
    let abandoned = shared.tally.abandoned.load(Ordering::Relaxed);
    let calls_left_open = tally_calls - end.calls_done - abandoned;
    // What the harness itself keeps (included in the RSS and heap figures): the pair ledgers
    // and the explanations, approximated from their capacities.
    let ledger_bytes: usize = pairs
        .iter()
        .map(|p| {
            std::mem::size_of::<Mutex<Pair>>()
                + p.first.capacity() * (8 + 16 + 1)
                + p.succeeded.capacity() * 8
        })
        .sum::<usize>();
    let widest_gap = pairs.iter().map(|p| p.first.len()).max().unwrap_or(0);
    drop(slots);
    let shared_refs = Arc::strong_count(&shared);
    drop(shared);
    let alive_tasks = runtime.block_on(async {
        // Connection tasks end once their senders are gone; give them a moment to notice.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    });
    let threads_running = status_value("Threads:");
    runtime.shutdown_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let threads_after = status_value("Threads:");

    // The service's count of 200s per operation, against what the callers saw.
    let served = service.get("/__report");
    drop(service);
    if let Some(r) = redis.as_mut() {
        r.kill9();
    }
    let mut explained: HashMap<u64, Why> = HashMap::new();
    let mut diverged = Vec::new();
    {
        use std::io::Seek;
        notes.rewind().expect("rewind the notes");
        for line in BufReader::new(notes).lines() {
            let line = line.expect("read the notes");
            let f: Vec<u64> = line[2..]
                .split(' ')
                .map(|v| v.parse().expect("a note"))
                .collect();
            if line.starts_with('E') {
                explained.entry(f[0]).or_insert(Why::from(f[1]));
            } else {
                diverged.push((f[0], f[1], f[2]));
            }
        }
    }
    diverged.retain(|(key, _, _)| !explained.contains_key(key));
    let mut served_ops = 0u64;
    let mut duplicated_explained: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut duplicated_unexplained = Vec::new();
    let mut ran_but_failed_explained = 0u64;
    let mut ran_but_failed_unexplained = Vec::new();
    let mut seen_ok: HashSet<u64> = HashSet::new();
    for line in served.lines() {
        let mut parts = line.split_whitespace();
        let (Some(op), Some(count)) = (parts.next(), parts.next()) else {
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        let Some((pair, seq)) = op.split_once('/') else {
            continue;
        };
        let (pair, seq): (u64, u64) = (pair.parse().unwrap(), seq.parse().unwrap());
        let key = key_id(pair, seq);
        served_ops += 1;
        seen_ok.insert(key);
        let why = explained.get(&key).copied();
        if count > 1 {
            match why {
                Some(why) => *duplicated_explained.entry(why.text()).or_default() += 1,
                None => duplicated_unexplained.push(format!("{pair}/{seq} ×{count}")),
            }
        }
        if !pairs[pair as usize].succeeded(seq) {
            match why {
                Some(_) => ran_but_failed_explained += 1,
                None => ran_but_failed_unexplained.push(format!("{pair}/{seq}")),
            }
        }
    }
    let mut succeeded_ops = 0u64;
    let mut phantom = Vec::new();
    for (pair, p) in pairs.iter().enumerate() {
        for (w, word) in p.succeeded.iter().enumerate() {
            for bit in 0..64 {
                if word & (1 << bit) != 0 {
                    succeeded_ops += 1;
                    let seq = (w * 64 + bit) as u64;
                    if !seen_ok.contains(&key_id(pair as u64, seq)) {
                        phantom.push(format!("{pair}/{seq}"));
                    }
                }
            }
        }
    }
    let from_ricochet: u64 = failures
        .iter()
        .filter(|(k, _)| k.starts_with("ricochet"))
        .map(|(_, v)| v)
        .sum();
    let clean = from_ricochet == 0
        && calls_left_open == 0
        && unfinished == 0
        && drain
        && duplicated_unexplained.is_empty()
        && ran_but_failed_unexplained.is_empty()
        && phantom.is_empty()
        && diverged.is_empty()
        && alive_tasks == 0;

    // The report.
    let mut t = String::new();
    let w = &mut t;
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "soak: {} tasks, {:.0} s ({:.1} s with the drain), redis {}, faults {}",
        (o.tasks / 2) * 2,
        o.duration.as_secs_f64(),
        elapsed,
        if redis_url.is_some() {
            if o.faults {
                "spawned, through the fault proxy"
            } else {
                "yes"
            }
        } else {
            "no (in-memory)"
        },
        if o.faults { "on" } else { "off" }
    );
    let done = end.calls_done;
    let _ = writeln!(
        w,
        "calls completed       {done} ({:.0}/s); ran {ran}, replayed {replayed}, unguarded {unguarded}, unrecorded {unrecorded}, failed {}",
        done as f64 / o.duration.as_secs_f64(),
        end.failures
    );
    let _ = writeln!(w, "attempts (HTTP)       {attempts}");
    let _ = writeln!(
        w,
        "operations            {succeeded_ops} succeeded (callers), {served_ops} answered 200 by the service"
    );
    let _ = writeln!(w, "failures by reason");
    for (reason, n) in &failures {
        let _ = writeln!(w, "  {n:>8}  {reason}");
    }
    let _ = writeln!(w, "failures from ricochet {from_ricochet}");
    let _ = writeln!(
        w,
        "calls never finished  {calls_left_open} (tasks unfinished after the drain: {unfinished}; drain {drain_s:.1} s)"
    );
    let _ = writeln!(
        w,
        "duplicated ops        {} explained {:?}, {} unexplained {:?}",
        duplicated_explained.values().sum::<u64>(),
        duplicated_explained,
        duplicated_unexplained.len(),
        duplicated_unexplained.iter().take(5).collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "ran but all failed    {ran_but_failed_explained} explained, {} unexplained {:?}",
        ran_but_failed_unexplained.len(),
        ran_but_failed_unexplained
            .iter()
            .take(5)
            .collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "answered, never ran   {} {:?}",
        phantom.len(),
        phantom.iter().take(5).collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "callers disagreeing   {} {:?}",
        diverged.len(),
        diverged.iter().take(5).collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "holders killed        {} ({abandoned} inside a call, each redone by a replacement)",
        killed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        w,
        "RSS                   before {} KiB, max sampled {rss_max_kib} KiB, peak (VmHWM) {hwm_kib} KiB = {:.1} MiB",
        rss_before_kib,
        hwm_kib as f64 / 1024.0
    );
    let _ = writeln!(
        w,
        "live heap             {} KiB at 10 s, {} KiB at the last sample, {live_end_kib} KiB after the drain, peak {live_peak_kib} KiB",
        live_heap_kib.first().copied().unwrap_or(0),
        live_heap_kib.last().copied().unwrap_or(0)
    );
    let _ = writeln!(
        w,
        "harness ledgers       about {} KiB of the above (widest gap between a pair's two tasks: {widest_gap} operations)",
        ledger_bytes / 1024
    );
    let _ = writeln!(
        w,
        "one task's future     {} bytes",
        TASK_BYTES.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        w,
        "after shutdown        alive tokio tasks {alive_tasks}; threads {threads_running} with the runtime, {threads_after} after it; other refs to the run's state {}",
        shared_refs - 1
    );
    let _ = writeln!(
        w,
        "prometheus series     {} at 10 s, {series_end} at the end",
        series_at_10s.map_or("-".to_string(), |s| s.to_string())
    );
    let marks = marks.lock().unwrap().clone();
    if !marks.is_empty() {
        let _ = writeln!(w, "faults (window = the fault and the 5 s after it)");
        let _ = writeln!(
            w,
            "  {:<38} {:>7} {:>7} {:>8} {:>9} {:>10} {:>9} {:>9}",
            "fault", "from s", "to s", "calls", "failures", "unguarded", "coord fb", "idem fb"
        );
        for (name, from, to) in &marks {
            let at = |time: f64| {
                snapshots
                    .iter()
                    .rev()
                    .find(|s| s.at <= time)
                    .copied()
                    .unwrap_or_default()
            };
            let (a, b) = (at(*from), at(to + 5.0));
            let _ = writeln!(
                w,
                "  {name:<38} {from:>7.1} {to:>7.1} {:>8} {:>9} {:>10} {:>9} {:>9}",
                b.calls_done - a.calls_done,
                b.failures - a.failures,
                b.unguarded - a.unguarded,
                b.coordination_fallbacks - a.coordination_fallbacks,
                b.idempotency_fallbacks - a.idempotency_fallbacks
            );
        }
    }
    let _ = writeln!(
        w,
        "verdict               {}",
        if clean { "CLEAN" } else { "NOT CLEAN" }
    );
    let json = serde_json::json!({
        "tasks": (o.tasks / 2) * 2,
        "duration_s": o.duration.as_secs(),
        "faults": o.faults,
        "redis": redis_url.is_some(),
        "calls_completed": done,
        "ran": ran, "replayed": replayed, "unguarded": unguarded, "unrecorded": unrecorded,
        "attempts": attempts,
        "failures": failures,
        "failures_from_ricochet": from_ricochet,
        "calls_never_finished": calls_left_open,
        "duplicated_explained": duplicated_explained,
        "duplicated_unexplained": duplicated_unexplained.len(),
        "ran_but_failed_unexplained": ran_but_failed_unexplained.len(),
        "phantom": phantom.len(),
        "diverged": diverged.len(),
        "holders_killed": killed.load(Ordering::Relaxed),
        "calls_abandoned_by_kills": abandoned,
        "rss_peak_kib": hwm_kib,
        "task_future_bytes": TASK_BYTES.load(Ordering::Relaxed),
        "live_heap_kib_every_10s": live_heap_kib,
        "live_heap_peak_kib": live_peak_kib,
        "harness_ledger_kib": ledger_bytes / 1024,
        "rss_max_sampled_kib": rss_max_kib,
        "alive_tasks_after": alive_tasks,
        "threads_after": threads_after,
        "series_at_10s": series_at_10s,
        "series_end": series_end,
        "calls_per_s": calls_per_s,
        "clean": clean,
    });
    Report {
        text: t,
        json,
        clean,
    }
}
