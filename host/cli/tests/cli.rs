//! The `ricochet` binary, run as a real process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn ricochet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ricochet"));
    for var in ricochet::config_file::ENV_VARS {
        c.env_remove(var);
    }
    c.env_remove("REDIS_URL");
    c
}

fn fast(mut c: Command) -> Command {
    c.env("RETRY_INITIAL_DELAY", "0.001")
        .env("RETRY_COORDINATION_ENABLED", "false");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ricochet-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plan_json_is_identical_native_and_wasm() {
    let native = ricochet()
        .args([
            "plan", "--policy", "default", "--seed", "7", "--format", "json",
        ])
        .output()
        .unwrap();
    let wasm = ricochet()
        .args([
            "plan", "--policy", "default", "--seed", "7", "--format", "json", "--engine", "wasm",
        ])
        .output()
        .unwrap();
    assert!(
        native.status.success() && wasm.status.success(),
        "{}{}",
        stderr(&native),
        stderr(&wasm)
    );
    let n: serde_json::Value = serde_json::from_str(stdout(&native).trim()).unwrap();
    let w: serde_json::Value = serde_json::from_str(stdout(&wasm).trim()).unwrap();
    assert_eq!(n["delays_us"], w["delays_us"]);
    assert_eq!(n["delays_us"].as_array().unwrap().len(), 2);
    assert_eq!(
        (n["engine"].as_str(), w["engine"].as_str()),
        (Some("native"), Some("wasm"))
    );
    for key in ["policy", "seed", "engine", "delays_us"] {
        assert!(n.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn plan_shows_each_strategy() {
    let mut seen = std::collections::BTreeSet::new();
    for strategy in ["none", "proportional", "full", "equal", "decorrelated"] {
        let o = ricochet()
            .args([
                "plan",
                "--policy",
                "aggressive",
                "--seed",
                "1",
                "--format",
                "json",
                "--strategy",
                strategy,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["strategy"], strategy);
        seen.insert(v["delays_us"].to_string());
    }
    assert_eq!(seen.len(), 5, "every strategy gives its own schedule");
    let table = ricochet()
        .args(["plan", "--policy", "aggressive", "--seed", "7"])
        .output()
        .unwrap();
    assert!(stdout(&table).contains("0.168750"), "{}", stdout(&table));
}

#[test]
fn a_bad_config_names_the_field_and_value() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "retry_policies:\n  default:\n    jitter_factor: 1.5\n",
    )
    .unwrap();
    let o = ricochet()
        .args(["plan", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("jitter_factor") && err.contains("1.5"),
        "{err}"
    );
    let o = ricochet()
        .args(["plan", "--policy", "reckless"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("reckless"),
        "{}",
        stderr(&o)
    );
    let o = ricochet()
        .args(["plan", "--seed", "seven"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("--seed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_accepts_the_seed_and_reports_every_mistake() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/seed-policies.yaml"
    );
    let o = ricochet().args(["check", seed]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    let dir = temp_dir("check");
    let bad = dir.join("three.yaml");
    std::fs::write(
        &bad,
        "retry_policies:\n  default:\n    max_attempts: 0\n    jitter_factor: 2\n  aggressive:\n    exponential_base: 0.5\n",
    )
    .unwrap();
    let o = ricochet().args(["check"]).arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for needle in [
        "three.yaml:3:5",
        "max_attempts",
        "three.yaml:4:5",
        "jitter_factor",
        "three.yaml:6:5",
        "exponential_base",
        "3 error(s)",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
}

#[test]
fn run_retries_then_exits_with_the_last_status() {
    let dir = temp_dir("run");
    let count = dir.join("count");
    let script = format!("echo x >> {}; exit 3", count.display());
    let o = fast(ricochet())
        .args(["run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        3,
        "default max_attempts is 3"
    );
    // ricochet's JSON log lines are on stderr, the command's output passes through.
    let logs: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(logs.iter().any(|l| l["level"] == "ERROR"), "{}", stderr(&o));
    let o = fast(ricochet())
        .args(["run", "--quiet", "--", "sh", "-c", "echo hello; exit 0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(stderr(&o), "");
}

#[test]
fn run_exits_at_once_for_codes_not_retried() {
    let dir = temp_dir("once");
    let count = dir.join("count");
    let script = format!("echo x >> {}; exit 1", count.display());
    let o = fast(ricochet())
        .args(["run", "--retry-on-exit", "2", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    let o = fast(ricochet())
        .args(["run", "--retry-on-exit", "2", "--", "false"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let o = fast(ricochet())
        .args(["run", "--retry-on-exit", "two", "--", "false"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("two"), "{}", stderr(&o));
    let o = fast(ricochet())
        .args(["run", "--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
}

#[test]
fn run_exits_124_when_the_last_attempt_timed_out() {
    let started = std::time::Instant::now();
    let o = fast(ricochet())
        .args(["run", "--attempt-timeout", "100ms", "--", "sleep", "5"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the sleeps were killed"
    );
}

#[test]
fn run_with_an_idempotency_key_runs_once() {
    let dir = temp_dir("idem");
    let count = dir.join("count");
    let script = format!("echo x >> {}; exit 0", count.display());
    // In memory the store lives and dies with the process, so this only shows the flag runs the
    // command once; cross-process dedup is the Redis tests' job.
    let o = fast(ricochet())
        .args([
            "run",
            "--idempotency-key",
            "job-1",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
}

#[test]
fn demo_runs_and_its_summary_adds_up() {
    let o = ricochet()
        .args([
            "demo",
            "--clients",
            "50",
            "--duration",
            "2s",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let value = |label: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{out}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (calls, successes, gave_up) =
        (value("logical calls"), value("successes"), value("gave up"));
    assert!(calls > 100, "{out}");
    assert_eq!(successes + gave_up, calls, "{out}");
    assert!(value("retries") > 0, "the service is flaky: {out}");
    assert!(
        value("duplicates prevented") > 0,
        "resends are deduplicated: {out}"
    );
    // An attempt that times out before its request is written never reaches the service.
    let (seen, sent) = (
        value("requests seen by the service"),
        value("attempts sent (incl. retries)"),
    );
    assert!(
        seen <= sent && seen * 100 >= sent * 95,
        "seen {seen} of {sent} attempts:\n{out}"
    );
}

#[test]
fn wrong_flags_get_clear_errors() {
    let o = ricochet()
        .args(["demo", "--clients", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--clients"), "{}", stderr(&o));
    let o = ricochet()
        .args(["demo", "--duration", "forever"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("forever"), "{}", stderr(&o));
    let o = ricochet()
        .args(["plan", "--engine", "jvm"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("jvm"), "{}", stderr(&o));
    let o = ricochet().args(["run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

use ricochet_test_support as common;

#[test]
fn simulate_ranks_strategies_like_the_aws_study_and_plots_them() {
    let dir = temp_dir("sim");
    let svg = dir.join("herd.svg");
    let o = ricochet()
        .args([
            "simulate",
            "--clients",
            "300",
            "--strategy",
            "all",
            "--model",
            "occ",
            "--format",
            "json",
            "--plot",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    let get = |name: &str, key: &str| -> f64 {
        rows.iter().find(|r| r["strategy"] == name).unwrap()[key]
            .as_f64()
            .unwrap()
    };
    for r in &rows {
        for key in [
            "strategy",
            "clients",
            "calls",
            "completion_s",
            "peak_per_slot",
            "gave_up",
        ] {
            assert!(r.get(key).is_some(), "{r}: missing {key}");
        }
    }
    let most_calls = rows
        .iter()
        .map(|r| r["calls"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(
        get("exponential", "calls"),
        most_calls,
        "no-jitter exponential makes the most calls"
    );
    assert!(get("full", "calls") < get("exponential", "calls"));
    let lowest_peak = rows
        .iter()
        .map(|r| r["peak_per_slot"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(
        get("slots", "peak_per_slot"),
        lowest_peak,
        "slots have the lowest peak"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "{}",
        &text[..40.min(text.len())]
    );
    for name in [
        "exponential",
        "proportional",
        "full",
        "equal",
        "decorrelated",
        "slots",
    ] {
        assert!(text.contains(name), "the plot names {name}");
    }
    let o = ricochet()
        .args(["simulate", "--strategy", "sideways"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sideways"), "{}", stderr(&o));
}

#[test]
fn demo_and_run_use_redis_when_given() {
    let server = common::RedisServer::spawn();
    let url = server.url();
    // Every command the server runs, as it runs it: slot keys expire a window or two after their
    // retries, so on a busy machine a scan after the demo may find none left.
    let monitor_out = temp_dir("redis-monitor").join("monitor.log");
    let mut monitor = Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "monitor"])
        .stdout(std::fs::File::create(&monitor_out).unwrap())
        .spawn()
        .unwrap();
    let o = ricochet()
        .args([
            "demo",
            "--clients",
            "20",
            "--duration",
            "1s",
            "--metrics-addr",
            "off",
            "--redis-prefix",
            "clidemo",
            "--redis",
        ])
        .arg(&url)
        .output()
        .unwrap();
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("redis coordination"), "{}", stdout(&o));
    let commands = std::fs::read_to_string(&monitor_out).unwrap();
    assert!(
        commands
            .lines()
            .any(|c| c.contains("\"clidemo:{") && c.contains(":slot:")),
        "slot tickets were taken in Redis under the prefix: {} command lines",
        commands.lines().count()
    );
    assert!(
        commands.lines().any(|c| c.contains("\"clidemo:idem:")),
        "idempotency keys were written under the prefix"
    );

    // Two processes, one key: the second run replays the first's status without running.
    let dir = temp_dir("redis-run");
    let count = dir.join("count");
    let script = format!("echo x >> {}; exit 0", count.display());
    for _ in 0..2 {
        let o = fast(ricochet())
            .args([
                "run",
                "--quiet",
                "--idempotency-key",
                "nightly-1",
                "--redis",
            ])
            .arg(&url)
            .args(["--", "sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "ran once across two processes"
    );
}

/// A run killed mid-command — the whole process group, as when its host dies — leaves its claim
/// behind: the next run with the key waits for the lease to end, takes over and runs the command;
/// a third run replays that result without running anything.
#[test]
fn a_killed_run_is_taken_over_after_its_lease_and_then_replayed() {
    use std::os::unix::process::CommandExt;
    let server = common::RedisServer::spawn();
    let url = server.url();
    let dir = temp_dir("killed-holder");
    let (log, marker) = (dir.join("log"), dir.join("marker"));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&marker);
    // One command line for all three runs (it is the payload fingerprint): the first run hangs,
    // later ones finish at once.
    let script = format!(
        "echo run >> {log}; if [ ! -e {marker} ]; then touch {marker}; sleep 30; fi; exit 0",
        log = log.display(),
        marker = marker.display()
    );
    let run = || {
        let mut c = fast(ricochet());
        c.args([
            "run",
            "--quiet",
            "--idempotency-key",
            "batch-7",
            "--lease",
            "1s",
            "--redis",
        ])
        .arg(&url)
        .args(["--", "sh", "-c", &script]);
        c
    };
    let lines = || {
        std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };

    let mut first = run().process_group(0).spawn().unwrap();
    let waiting = std::time::Instant::now();
    while lines() == 0 {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(20),
            "the first run never started its command"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let killed = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-9", "--", &format!("-{}", first.id())])
        .status()
        .unwrap();
    assert!(status.success());
    first.wait().unwrap();

    let o = run().output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        killed.elapsed() >= std::time::Duration::from_millis(500),
        "took over before the killed run's 1 s lease ended ({:?})",
        killed.elapsed()
    );
    assert_eq!(lines(), 2, "the second run ran the command once more");

    let o = run().output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(lines(), 2, "the third run replayed the stored status");
}
