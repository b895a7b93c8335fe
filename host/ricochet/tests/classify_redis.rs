//! Redis errors as a real `redis-server` returns them, classified (feature `redis`).
//!
//! Before issue 15: `NOAUTH`, `WRONGPASS` and `NOPERM` were `BusinessLogic` (they are
//! credentials the server refused: `Authentication`), `BUSY` was not retried, and an I/O
//! `PermissionDenied` was retried as a connection error.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ricochet::{Classify, ErrorCategory};

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn spawn(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, userinfo: &str) -> String {
        format!("redis://{userinfo}127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error of `GET k` on a connection to `url` (or of making the connection).
fn get_error(url: &str) -> redis::RedisError {
    let result = redis::Client::open(url).and_then(|c| {
        let mut conn = c.get_connection()?;
        redis::cmd("GET")
            .arg("k")
            .query::<Option<String>>(&mut conn)
    });
    result.expect_err("the server refuses")
}

#[test]
fn refused_credentials_are_authentication_errors() {
    let server = Server::spawn(&["--requirepass", "s3cret"]);
    let noauth = get_error(&server.url(""));
    assert_eq!(noauth.code(), Some("NOAUTH"), "{noauth}");
    assert_eq!(noauth.classify().category, ErrorCategory::Authentication);
    let wrongpass = get_error(&server.url(":wrong@"));
    assert!(
        wrongpass.to_string().contains("WRONGPASS")
            || wrongpass.kind() == redis::ErrorKind::AuthenticationFailed,
        "{wrongpass}"
    );
    assert_eq!(wrongpass.classify().category, ErrorCategory::Authentication);

    // A user the ACL does not allow GET.
    let mut admin = redis::Client::open(server.url(":s3cret@"))
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "~*", "+@all", "-get"][..])
        .query::<()>(&mut admin)
        .unwrap();
    let noperm = get_error(&server.url("reader:pw@"));
    assert_eq!(noperm.code(), Some("NOPERM"), "{noperm}");
    assert_eq!(noperm.classify().category, ErrorCategory::Authentication);
}

#[test]
fn a_busy_server_is_unavailable_and_retried() {
    // A script that never ends: after 50 ms every other client is told BUSY.
    let server = Server::spawn(&["--busy-reply-threshold", "50"]);
    let url = server.url("");
    let script_url = url.clone();
    let script = std::thread::spawn(move || {
        let mut conn = redis::Client::open(script_url)
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<()>(&mut conn)
    });
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let started = Instant::now();
    let busy = loop {
        match redis::cmd("PING").query::<String>(&mut conn) {
            Err(e) if e.code() == Some("BUSY") => break e,
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never BUSY: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(busy.classify().category, ErrorCategory::ServiceUnavailable);
    assert!(ricochet_core_retryable(busy.classify().category));
    redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<()>(&mut conn)
        .unwrap();
    let killed = script.join().unwrap().unwrap_err();
    // The script's own error is the server's answer about a script, not about its health.
    assert_eq!(
        killed.classify().category,
        ErrorCategory::BusinessLogic,
        "{killed}"
    );
}

#[test]
fn io_failures_by_kind() {
    // redis-rs keeps an I/O failure behind its error; PermissionDenied is not a flaky network.
    let denied = redis::RedisError::from(io::Error::from(io::ErrorKind::PermissionDenied));
    assert_eq!(denied.classify().category, ErrorCategory::Authentication);
    let refused = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert_eq!(refused.classify().category, ErrorCategory::Connection);
    let timed_out = redis::RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
    assert_eq!(timed_out.classify().category, ErrorCategory::Timeout);
    // A real refused connection: nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = get_error(&format!("redis://127.0.0.1:{port}/"));
    assert_eq!(e.classify().category, ErrorCategory::Connection, "{e}");
    // And through an io::Error that wraps it, as an application may.
    let wrapped = io::Error::other(redis::RedisError::from(io::Error::from(
        io::ErrorKind::PermissionDenied,
    )));
    assert_eq!(wrapped.classify().category, ErrorCategory::Authentication);
}

fn ricochet_core_retryable(category: ErrorCategory) -> bool {
    ricochet::RetryConfig::default().retry_on.contains(category)
}
