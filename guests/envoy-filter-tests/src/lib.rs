//! A small Envoy stand-in around `proxy-wasm-host`: it loads the ricochet filter, plays the
//! proxy's part of an HTTP exchange (request headers, then either the filter's local reply or an
//! upstream response) and shows what the filter did to each side.
//!
//! What it controls that a real Envoy does not let a test control:
//! - the clock: [`ManualClock`] answers `proxy_get_current_time_nanoseconds`, so a cool-down
//!   passes by [`Proxy::advance_ms`], not by sleeping;
//! - the workers: [`Proxy::worker`] starts another instance of the filter on the same shared
//!   data and clock, as Envoy starts one per worker thread;
//! - the shared store: any [`SharedServices`] can be put under the filter (the tests use one that
//!   loses a race on purpose).
//!
//! The filter comes from the path in `RICOCHET_ENVOY_FILTER_WASM` (set by
//! `guests/envoy-filter/test.sh`, which builds it); it is compiled once per test process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use proxy_wasm_host::abi::v0_2_1::types::{Action, LogLevel, MapType, Status};
use proxy_wasm_host::abi::v0_2_1::{
    Access, ContextId, Guest, GuestError, Host, InMemoryStore, Invocation, LocalResponse,
    LogContext, LogSink, PluginConfig, SharedServices, Started, StreamState, VmServices,
};
use proxy_wasm_host::{Engine, HeaderMap, HeaderMapExt, Limits, Module, VecHeaderMap};

/// The environment variable that names the built filter.
pub const WASM_ENV: &str = "RICOCHET_ENVOY_FILTER_WASM";

/// The engine, host functions and compiled filter, shared by every test of the process.
struct Compiled {
    host: Host,
    module: Module,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let path = std::env::var(WASM_ENV).unwrap_or_else(|_| {
            panic!(
                "{WASM_ENV} is not set: run guests/envoy-filter/test.sh, which builds the filter \
                 and points {WASM_ENV} at it"
            )
        });
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{WASM_ENV}={path} cannot be read: {e}"));
        let engine = Engine::new().expect("engine");
        let module = Module::new(&engine, &bytes).expect("the filter compiles");
        let host = Host::new(&engine).expect("host functions");
        Compiled { host, module }
    })
}

/// The size of the filter under test, in bytes.
pub fn filter_size() -> u64 {
    let _ = compiled();
    let path = std::env::var(WASM_ENV).expect("checked by compiled()");
    std::fs::metadata(path).expect("filter file").len()
}

/// A settable wall clock, in Unix nanoseconds.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Now, in Unix µs.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / 1_000
    }
    /// Now, in Unix ns.
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    /// Sets the time, in Unix µs.
    pub fn set_us(&self, us: u64) {
        self.0.store(us * 1_000, Ordering::SeqCst);
    }
}

impl proxy_wasm_host::abi::v0_2_1::Clock for ManualClock {
    fn realtime_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn monotonic_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Every line the filter logged, with its level.
#[derive(Debug, Default)]
pub struct Logs(Mutex<Vec<(LogLevel, String)>>);

impl Logs {
    /// The lines so far.
    pub fn lines(&self) -> Vec<(LogLevel, String)> {
        self.0.lock().expect("logs").clone()
    }
}

impl LogSink for Logs {
    fn log(&self, _: LogContext<'_>, level: LogLevel, message: &[u8]) {
        let line = String::from_utf8_lossy(message).into_owned();
        self.0.lock().expect("logs").push((level, line));
    }
}

/// The headers of one side of an exchange, in order, lower-case names.
pub type Headers = Vec<(String, String)>;

/// What the proxy lends the filter for one callback.
#[derive(Default)]
struct Exchange {
    request: VecHeaderMap,
    response: VecHeaderMap,
    local: Option<LocalResponse<'static>>,
}

impl StreamState for Exchange {
    fn header_map(
        &mut self,
        _: Invocation,
        _: Access,
        map: MapType,
    ) -> Result<&mut dyn HeaderMap, Status> {
        match map {
            MapType::HttpRequestHeaders => Ok(&mut self.request),
            MapType::HttpResponseHeaders => Ok(&mut self.response),
            _ => Err(Status::NotFound),
        }
    }

    fn send_local_response(
        &mut self,
        _: Invocation,
        response: LocalResponse<'_>,
    ) -> Result<(), Status> {
        self.local = Some(response.into_owned());
        Ok(())
    }
}

fn header_map(headers: &[(&[u8], &[u8])]) -> VecHeaderMap {
    headers
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn as_bytes<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
    headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect()
}

fn owned(map: &VecHeaderMap) -> Headers {
    map.pairs()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// The value of header `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A local reply the filter sent instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// The status.
    pub status: u32,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: String,
}

/// A request that went through `on_request_headers` and waits for its response.
#[derive(Debug)]
pub struct Pending {
    /// The stream context the proxy created for it.
    pub context: ContextId,
    /// The filter's answer to the request headers.
    pub action: Action,
    /// The request headers as the filter left them (what the router would see).
    pub upstream_request: Headers,
    /// The filter's local reply, if it answered itself.
    pub local_reply: Option<LocalReply>,
    /// The time the request headers arrived, in Unix ns.
    pub started_ns: u64,
}

impl Pending {
    /// Header `name` of the request as the filter left it.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header(&self.upstream_request, name)
    }
}

/// Why the filter refused to start.
#[derive(Debug)]
pub struct Refused {
    /// The error, if the host failed rather than the filter answering false.
    pub error: Option<GuestError>,
    /// Everything the filter logged.
    pub logs: Vec<(LogLevel, String)>,
}

/// One filter instance (one Envoy worker) with its root context configured.
pub struct Proxy {
    guest: Guest,
    root: ContextId,
    /// The clock every worker of this proxy reads.
    pub clock: Arc<ManualClock>,
    /// The shared data every worker of this proxy uses.
    pub shared: Arc<dyn SharedServices>,
    /// What this worker logged.
    pub logs: Arc<Logs>,
    configuration: String,
}

/// The Unix time the tests start at: 2026-11-28T00:00:00Z, in µs.
pub const T0_US: u64 = 1_795_824_000_000_000;

impl Proxy {
    /// Loads the filter with `configuration` on a fresh store, at [`T0_US`].
    pub fn start(configuration: &str) -> Result<Proxy, Refused> {
        let clock = Arc::new(ManualClock::default());
        clock.set_us(T0_US);
        Self::start_on(configuration, clock, Arc::new(InMemoryStore::new()))
    }

    /// Loads the filter with `configuration` on the given clock and store.
    pub fn start_on(
        configuration: &str,
        clock: Arc<ManualClock>,
        shared: Arc<dyn SharedServices>,
    ) -> Result<Proxy, Refused> {
        let c = compiled();
        let logs = Arc::new(Logs::default());
        let services = VmServices::new(logs.clone())
            .with_clock(clock.clone())
            .with_shared(shared.clone())
            .with_log_level(LogLevel::Trace);
        let mut guest =
            Guest::new(&c.host, &c.module, services, &Limits::default()).map_err(|e| Refused {
                error: Some(e),
                logs: logs.lines(),
            })?;
        let plugin = PluginConfig::new()
            .with_name(*b"ricochet")
            .with_configuration(configuration.as_bytes().to_vec());
        match guest.start(plugin) {
            Ok(Started::Serving(root)) => Ok(Proxy {
                guest,
                root,
                clock,
                shared,
                logs,
                configuration: configuration.to_string(),
            }),
            Ok(Started::Refused { .. }) => Err(Refused {
                error: None,
                logs: logs.lines(),
            }),
            Err(e) => Err(Refused {
                error: Some(e),
                logs: logs.lines(),
            }),
        }
    }

    /// Another worker: a new instance of the filter, same configuration, clock and shared data.
    pub fn worker(&self) -> Proxy {
        Self::start_on(&self.configuration, self.clock.clone(), self.shared.clone())
            .expect("a second worker starts like the first")
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.clock.set_us(self.clock.now_us() + ms * 1_000);
    }

    /// Now, in Unix µs.
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Sends request headers through the filter.
    pub fn request(&mut self, headers: &[(&str, &str)]) -> Pending {
        self.request_bytes(&as_bytes(headers))
    }

    /// Sends request headers through the filter, as bytes (not necessarily UTF-8: a client
    /// may send anything).
    pub fn request_bytes(&mut self, headers: &[(&[u8], &[u8])]) -> Pending {
        let started_ns = self.clock.now_ns();
        let mut all: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", b"/charge"),
            (b":authority", b"payments"),
        ];
        all.extend_from_slice(headers);
        let exchange = Exchange {
            request: header_map(&all),
            ..Exchange::default()
        };
        let root = self.root;
        let (answer, exchange) = self.guest.with(exchange, |scope| {
            let context = scope.on_context_create(Some(root))?;
            let action = scope.on_request_headers(context, all.len() as u32, true)?;
            Ok::<_, GuestError>((context, action))
        });
        let (context, action) = answer.expect("on_request_headers runs");
        let local_reply = exchange.local.map(|r| LocalReply {
            status: r.status_code,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
        });
        Pending {
            context,
            action,
            upstream_request: owned(&exchange.request),
            local_reply,
            started_ns,
        }
    }

    /// Delivers the response headers for `pending` through the filter and ends the stream.
    /// For a request the filter answered itself, Envoy runs its local reply through the
    /// encoder filters too: `status` and `headers` are ignored and the local reply goes back
    /// through the filter instead. Returns the response headers as the client gets them.
    pub fn respond(&mut self, pending: Pending, status: u16, headers: &[(&str, &str)]) -> Headers {
        let status = status.to_string();
        let mut all: Vec<(&[u8], &[u8])> = vec![(b":status", status.as_bytes())];
        all.extend(as_bytes(headers));
        self.respond_bytes(pending, &all)
    }

    /// Like [`respond`](Self::respond), with the response headers as bytes, `:status` included
    /// (an upstream may send anything, UTF-8 or not).
    pub fn respond_bytes(&mut self, pending: Pending, headers: &[(&[u8], &[u8])]) -> Headers {
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        if let Some(local) = &pending.local_reply {
            all = vec![(b":status".to_vec(), local.status.to_string().into_bytes())];
            all.extend(
                local
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes())),
            );
        }
        let pairs: Vec<(&[u8], &[u8])> = all
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let exchange = Exchange {
            response: header_map(&pairs),
            ..Exchange::default()
        };
        let context = pending.context;
        let (answer, exchange) = self.guest.with(exchange, |scope| {
            let action = scope.on_response_headers(context, pairs.len() as u32, true)?;
            scope.on_done(context)?;
            scope.on_log(context)?;
            scope.on_delete(context)?;
            Ok::<_, GuestError>(action)
        });
        assert_eq!(answer.expect("on_response_headers runs"), Action::Continue);
        owned(&exchange.response)
    }

    /// Ends `pending` without a response, as when the client goes away first.
    pub fn abandon(&mut self, pending: Pending) {
        let context = pending.context;
        let (answer, _) = self.guest.with(Exchange::default(), |scope| {
            scope.on_done(context)?;
            scope.on_log(context)?;
            scope.on_delete(context)?;
            Ok::<_, GuestError>(())
        });
        answer.expect("the stream ends");
    }

    /// One whole exchange: the request, then (unless the filter answered) an upstream response.
    pub fn call(&mut self, status: u16, headers: &[(&str, &str)]) -> Call {
        let pending = self.request(&[]);
        let upstream_request = pending.upstream_request.clone();
        let local_reply = pending.local_reply.clone();
        let response = self.respond(pending, status, headers);
        Call {
            upstream_request,
            local_reply,
            response,
        }
    }

    /// The shared-data key of this worker's guards, as the filter logged it when it was
    /// configured (`None` when neither guard is configured).
    pub fn guards_key(&self) -> Option<String> {
        self.logs.lines().iter().find_map(|(_, line)| {
            let (_, rest) = line.split_once("shared guards `")?;
            Some(rest.split('`').next()?.to_string())
        })
    }

    /// Writes `bytes` under `key` in the shared data, as another VM (or another version of the
    /// filter) might.
    pub fn set_shared_data(&self, key: &str, bytes: &[u8]) {
        let call = Invocation::new(self.guest.id(), self.root);
        self.shared
            .set_shared_data(call, b"", key.as_bytes(), bytes, None)
            .expect("shared data written");
    }

    /// The bytes the filter keeps in shared data under `key`, if any.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        let call = Invocation::new(self.guest.id(), self.root);
        self.shared
            .get_shared_data(call, b"", key.as_bytes())
            .ok()
            .map(|v| v.bytes)
    }
}

/// What one whole exchange looked like.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request headers as the filter left them.
    pub upstream_request: Headers,
    /// The filter's local reply, if it answered itself.
    pub local_reply: Option<LocalReply>,
    /// The response headers as the client gets them.
    pub response: Headers,
}

impl Call {
    /// Header `name` of the request as the filter left it.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        header(&self.upstream_request, name)
    }
    /// Header `name` of the response the client gets.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        header(&self.response, name)
    }
}

/// Another worker's write, run on the store underneath the filter.
type Interloper = Box<dyn FnOnce(&InMemoryStore, Invocation) + Send>;

/// A shared store that counts lost CAS races and provokes them: it can run another worker's
/// write just before the filter's write number `n`, or pause after every read.
pub struct RacingStore {
    inner: InMemoryStore,
    writes: AtomicU64,
    cas_mismatches: AtomicU64,
    interlopers: Mutex<BTreeMap<u64, Interloper>>,
    read_pause: Option<std::time::Duration>,
}

impl Default for RacingStore {
    fn default() -> Self {
        Self {
            inner: InMemoryStore::new(),
            writes: AtomicU64::new(0),
            cas_mismatches: AtomicU64::new(0),
            interlopers: Mutex::new(BTreeMap::new()),
            read_pause: None,
        }
    }
}

impl RacingStore {
    /// A store that sleeps for `pause` after every read, so that workers on other threads
    /// write in between: a read–modify–write that does not check the CAS token loses updates.
    pub fn with_read_pause(pause: std::time::Duration) -> Self {
        Self {
            read_pause: Some(pause),
            ..Self::default()
        }
    }

    /// Runs `interloper` on the store just before write number `n` (1-based) arrives.
    pub fn before_write(
        &self,
        n: u64,
        interloper: impl FnOnce(&InMemoryStore, Invocation) + Send + 'static,
    ) {
        self.interlopers
            .lock()
            .expect("interlopers")
            .insert(n, Box::new(interloper));
    }

    /// Writes the filter made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Writes refused with `CAS_MISMATCH` so far.
    pub fn cas_mismatches(&self) -> u64 {
        self.cas_mismatches.load(Ordering::SeqCst)
    }
}

impl SharedServices for RacingStore {
    fn get_shared_data(
        &self,
        call: Invocation,
        vm_id: &[u8],
        key: &[u8],
    ) -> Result<proxy_wasm_host::abi::v0_2_1::SharedValue, Status> {
        let answer = self.inner.get_shared_data(call, vm_id, key);
        if let Some(pause) = self.read_pause {
            std::thread::sleep(pause);
        }
        answer
    }

    fn set_shared_data(
        &self,
        call: Invocation,
        vm_id: &[u8],
        key: &[u8],
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), Status> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let interloper = self.interlopers.lock().expect("interlopers").remove(&n);
        if let Some(interloper) = interloper {
            interloper(&self.inner, call);
        }
        let answer = self.inner.set_shared_data(call, vm_id, key, value, cas);
        if answer == Err(Status::CasMismatch) {
            self.cas_mismatches.fetch_add(1, Ordering::SeqCst);
        }
        answer
    }
}
