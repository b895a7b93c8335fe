//! Policy components through the `ricochet` binary, as real processes: a third-party component
//! (`--component`) in `plan` and `run`, a hostile one that `run` survives, and `plan --redis`
//! taking real slot tickets from a `redis-server` with either engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ricochet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ricochet"));
    for var in ricochet::config_file::ENV_VARS {
        c.env_remove(var);
    }
    c.env_remove("REDIS_URL");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes an embedded component to a file for `--component`.
fn component_file(bytes: Option<&'static [u8]>, name: &str) -> PathBuf {
    let bytes = bytes.unwrap_or_else(|| panic!("the {name} component was not built"));
    let dir = std::env::temp_dir().join(format!("ricochet-component-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap()
}

fn delays(v: &serde_json::Value, key: &str) -> Vec<u64> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect()
}

#[test]
fn plan_runs_a_third_party_component() {
    let linear = component_file(
        ricochet_test_support::guests::LINEAR_POLICY_COMPONENT,
        "linear",
    );
    let out = ricochet()
        .args([
            "plan",
            "--policy",
            "aggressive",
            "--strategy",
            "none",
            "--seed",
            "1",
        ])
        .args(["--format", "json", "--component"])
        .arg(&linear)
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["engine"], "wasm");
    // Linear steps of initial_delay, where the core would grow by 1.5 each time.
    assert_eq!(delays(&v, "delays_us"), [50_000, 100_000, 150_000, 200_000]);
    let native = ricochet()
        .args([
            "plan",
            "--policy",
            "aggressive",
            "--strategy",
            "none",
            "--seed",
            "1",
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        delays(&json(&native), "delays_us"),
        [50_000, 75_000, 112_500, 168_750]
    );
}

#[test]
fn run_uses_the_component_and_survives_a_hostile_one() {
    let linear = component_file(
        ricochet_test_support::guests::LINEAR_POLICY_COMPONENT,
        "linear",
    );
    let started = Instant::now();
    let out = ricochet()
        .env("RETRY_INITIAL_DELAY", "0.01")
        .env("RETRY_COORDINATION_ENABLED", "false")
        .args(["run", "--policy", "aggressive", "--component"])
        .arg(&linear)
        .args(["--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Five attempts, linear sleeps of 10, 20, 30 and 40 ms in the JSON log.
    let sleeps: Vec<f64> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "INFO")
        .map(|l| l["delay"].as_f64().unwrap())
        .collect();
    assert_eq!(sleeps.len(), 4, "{}", stderr(&out));
    for (n, s) in sleeps.iter().enumerate() {
        let step = 0.01 * (n as f64 + 1.0);
        assert!((step / 2.0..=step + 1e-9).contains(s), "{sleeps:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));

    // A component that traps on every decision: the native policy decides, the command runs.
    let trap = component_file(
        ricochet_test_support::guests::HOSTILE_TRAP_COMPONENT,
        "trap",
    );
    let out = ricochet()
        .env("RETRY_INITIAL_DELAY", "0.001")
        .env("RETRY_COORDINATION_ENABLED", "false")
        .args(["run", "--quiet", "--component"])
        .arg(&trap)
        .args(["--", "sh", "-c", "exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn a_component_that_cannot_be_loaded_is_a_clear_error() {
    let out = ricochet()
        .args(["plan", "--component", "/nonexistent/policy.wasm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/policy.wasm"),
        "{}",
        stderr(&out)
    );
    let not_a_component = component_file(Some(b"\0asm\x01\0\0\0"), "core-module");
    let out = ricochet()
        .args(["run", "--component"])
        .arg(&not_a_component)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot load policy component"),
        "{}",
        stderr(&out)
    );
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let redis = Self { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while redis.command("PING") != "+PONG" {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command; the raw reply (first line for simple replies, everything for
    /// arrays), or "" when the server is not there.
    fn command(&self, command: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let _ = s.write_all(format!("{command}\r\n").as_bytes());
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if !reply.starts_with(b"*") && reply.ends_with(b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&reply).trim_end().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn plan_with_redis_takes_real_tickets_with_either_engine() {
    let redis = Redis::start();
    let linear = component_file(
        ricochet_test_support::guests::LINEAR_POLICY_COMPONENT,
        "linear",
    );
    let engines: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        ("native", vec!["--engine".as_ref(), "native".as_ref()]),
        ("wasm", vec!["--engine".as_ref(), "wasm".as_ref()]),
        ("linear", vec!["--component".as_ref(), linear.as_os_str()]),
    ];
    for (name, engine) in engines {
        let out = ricochet()
            .args([
                "plan",
                "--policy",
                "aggressive",
                "--seed",
                "5",
                "--format",
                "json",
            ])
            .args([
                "--redis",
                &redis.url(),
                "--service",
                name,
                "--operation",
                "sync",
            ])
            .args(engine)
            .output()
            .unwrap();
        let v = json(&out);
        assert_eq!(v["coordinator"], "redis", "{name}");
        assert_eq!(v["coordination_fallback_total"], 0, "{name}");
        // Four retries, one ticket each: slots 0..3 of one window (or a restart in the next).
        let slots = delays(&v, "slots");
        assert_eq!(slots.len(), 4, "{name}: {v}");
        assert!(
            v["fallbacks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f.is_null()),
            "{name}: {v}"
        );
        let tag = ricochet::redis::operation_tag(name, "sync");
        let keys = redis.command(&format!("KEYS ricochet:{{{tag}}}:slot:*"));
        assert!(keys.contains(&format!("{{{tag}}}:slot:")), "{name}: {keys}");
    }
    // The table form names the keys and the source of each slot.
    let out = ricochet()
        .args([
            "plan",
            "--engine",
            "wasm",
            "--redis",
            &redis.url(),
            "--service",
            "table",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let tag = ricochet::redis::operation_tag("table", "plan");
    assert!(
        text.contains(&format!("ricochet:{{{tag}}}:slot:*")),
        "{text}"
    );
    assert!(text.contains("redis"), "{text}");
}
