//! A flaky HTTP service on loopback, and a minimal client for it: the demo's target and the
//! integration tests' real server.
//!
//! The server answers each request with whatever its script says for that request number —
//! 200, an error status, 429/503 with a `Retry-After`, or a slow answer that trips a client
//! timeout — and counts what it served, so a test or the demo can check the numbers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use ricochet::classify::HttpError;

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200 with this body.
    Ok(String),
    /// This status, empty body.
    Status(u16),
    /// This status with a `Retry-After` header (seconds or an HTTP-date).
    RetryAfter(u16, String),
    /// Wait, then 200 with this body (a client with a shorter timeout sees a timeout).
    Slow(Duration, String),
}

/// What the server has seen.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// 2xx answers sent.
    pub ok: AtomicU64,
    /// Request arrival times, µs since the server started, with the path (for the demo's slot
    /// histogram and the timing tests). Bounded by the caller's test size.
    pub arrivals: Mutex<Vec<(u64, String)>>,
}

/// A running flaky server; stops when dropped.
pub struct FlakyServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    task: tokio::task::JoinHandle<()>,
}

type Script = dyn Fn(u64, &str) -> Reply + Send + Sync;

impl FlakyServer {
    /// Starts a server on 127.0.0.1 (a free port); `script(n, path)` decides the reply to the
    /// n-th request (0-based, counted across paths).
    pub async fn start(
        script: impl Fn(u64, &str) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start_inner(Arc::new(script), true).await
    }

    /// [`start`](Self::start) without recording arrivals (`stats().arrivals` stays empty): for
    /// long runs, where a list of every request would only grow.
    pub async fn start_unrecorded(
        script: impl Fn(u64, &str) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start_inner(Arc::new(script), false).await
    }

    async fn start_inner(script: Arc<Script>, record_arrivals: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let started = tokio::time::Instant::now();
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (stats, script) = (task_stats.clone(), script.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (stats, script) = (stats.clone(), script.clone());
                            async move {
                                let n = stats.requests.fetch_add(1, Ordering::Relaxed);
                                let path = req.uri().path().to_string();
                                if record_arrivals {
                                    if let Ok(mut a) = stats.arrivals.lock() {
                                        a.push((
                                            started.elapsed().as_micros() as u64,
                                            path.clone(),
                                        ));
                                    }
                                }
                                let reply = script(n, &path);
                                Ok::<_, Infallible>(respond(reply, &stats).await)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, stats, task })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server has seen.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(reply: Reply, stats: &ServerStats) -> Response<Full<Bytes>> {
    let mut builder = Response::builder();
    let (status, body) = match reply {
        Reply::Ok(body) => (200, body),
        Reply::Status(s) => (s, String::new()),
        Reply::RetryAfter(s, value) => {
            builder = builder.header("retry-after", value);
            (s, String::new())
        }
        Reply::Slow(wait, body) => {
            tokio::time::sleep(wait).await;
            (200, body)
        }
    };
    if (200..300).contains(&status) {
        stats.ok.fetch_add(1, Ordering::Relaxed);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    builder
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Why a GET failed: the connection, or a non-2xx answer (classified like any [`HttpError`]).
#[derive(Debug)]
pub enum GetError {
    /// Connecting, sending or reading failed.
    Io(std::io::Error),
    /// The server answered with an error status.
    Http(HttpError),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GetError {}

impl ricochet::classify::Classify for GetError {
    fn classify(&self) -> ricochet::classify::Classification {
        match self {
            Self::Io(e) => e.classify(),
            Self::Http(e) => e.classify(),
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> GetError {
    GetError::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        e.to_string(),
    ))
}

/// GETs `path` from `addr` over a fresh HTTP/1.1 connection; the body of a 2xx answer.
pub fn get(
    addr: SocketAddr,
    path: &str,
) -> impl Future<Output = Result<String, GetError>> + Send + 'static {
    let path = path.to_string();
    async move {
        let stream = TcpStream::connect(addr).await.map_err(GetError::Io)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io_err)?;
        let conn = tokio::spawn(conn);
        let result = send(&mut sender, addr, &path).await;
        conn.abort();
        result
    }
}

/// Sends one GET on `sender` and reads the whole answer: the body of a 2xx answer, or the
/// status with its delay headers.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<String, GetError> {
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(io_err)?;
    let res = sender.send_request(req).await.map_err(io_err)?;
    let status = res.status().as_u16();
    let headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = res.into_body().collect().await.map_err(io_err)?.to_bytes();
    if (200..300).contains(&status) {
        Ok(String::from_utf8_lossy(&body).into_owned())
    } else {
        Err(GetError::Http(HttpError::from_headers(
            status,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )))
    }
}

/// Keep-alive HTTP/1.1 connections to one server, at most `max` of them in use at once (the
/// rest of the callers wait for one): what a service's HTTP client pool does, and what a load
/// test needs so that thousands of callers do not exhaust the ephemeral ports.
///
/// A connection goes back to the pool only after a complete answer; one whose request was
/// cancelled (an attempt timeout drops the future) or failed is closed.
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    /// A pool of at most `max` connections to `addr` (opened on demand).
    pub fn new(addr: SocketAddr, max: usize) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(max.max(1)),
        }
    }

    /// GETs `path` on a pooled connection; the body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<String, GetError> {
        let _permit = self.permits.acquire().await.map_err(io_err)?;
        let pooled = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .filter(|sender| !sender.is_closed());
        let mut sender = match pooled {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(self.addr).await.map_err(GetError::Io)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(io_err)?;
                // Ends by itself once the sender is dropped (the connection is closed then).
                tokio::spawn(conn);
                sender
            }
        };
        let result = send(&mut sender, self.addr, path).await;
        if !matches!(result, Err(GetError::Io(_))) {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(sender);
            }
        }
        result
    }
}
