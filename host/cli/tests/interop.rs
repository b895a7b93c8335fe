//! `ricochet import` and `ricochet export`, run as a real process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ricochet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ricochet"));
    for var in ricochet::config_file::ENV_VARS {
        c.env_remove(var);
    }
    c.env_remove("REDIS_URL");
    c
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(args: &[&str]) -> Output {
    ricochet().args(args).output().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ricochet-interop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn import_envoy_writes_a_policy_file_that_check_accepts() {
    let dir = temp_dir("envoy");
    let out = dir.join("policies.yaml");
    let file = data("envoy/bootstrap.yaml");
    let o = run(&[
        "import",
        "envoy",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("wrote 4 policies"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("note: "), "notes on stderr");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("retry_policies:"), "{written}");
    assert!(written.contains("# note: "), "notes in the file");
    let check = run(&["check", out.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("api/orders: ok (max_attempts 5"),
        "{}",
        text(&check.stdout)
    );
    // The imported file is a policy file like any other: `plan` runs it.
    let plan = run(&[
        "plan",
        "--config",
        out.to_str().unwrap(),
        "--policy",
        "api/orders",
        "--seed",
        "1",
    ]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn import_grpc_to_stdout() {
    let file = data("grpc/a6-service-config.json");
    let o = run(&["import", "grpc", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("EchoService/Echo:"), "{out}");
    assert!(out.contains("max_attempts: 4"), "{out}");
    assert!(out.contains("retry_budget:"), "{out}");
}

#[test]
fn unsupported_fields_exit_2_with_file_and_line() {
    let file = data("envoy/unsupported.yaml");
    let o = run(&["import", "envoy", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("unsupported.yaml:14: "), "{err}");
    assert!(err.contains("retry_host_predicate"), "{err}");
    assert!(err.contains("hedge_policy"), "{err}");
    assert!(o.stdout.is_empty(), "no half-written file");
}

#[test]
fn strict_refuses_a_translation_with_notes() {
    let file = data("envoy/retry-policy.yaml");
    let o = run(&["import", "envoy", file.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("not exact: per_try_timeout"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = temp_dir("bad");
    let binary = dir.join("junk.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let o = run(&["import", "envoy", binary.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("not UTF-8"), "{}", text(&o.stderr));
    let o = run(&["import", "grpc", dir.join("missing.json").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("cannot read"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn export_envoy_writes_a_retry_policy_that_imports_back() {
    let o = run(&[
        "export",
        "envoy",
        "--policy",
        "aggressive",
        "--attempt-timeout",
        "750ms",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let value: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rp = &value["retry_policy"];
    assert_eq!(rp["num_retries"], 4, "aggressive: 5 attempts");
    assert_eq!(rp["per_try_timeout"], "0.75s");
    assert!(
        text(&o.stderr).contains("exponential_base"),
        "1.5 is a note: {}",
        text(&o.stderr)
    );

    let dir = temp_dir("export");
    let exported = dir.join("retry.json");
    std::fs::write(&exported, serde_json::to_vec(rp).unwrap()).unwrap();
    let back = run(&["import", "envoy", exported.to_str().unwrap()]);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert!(
        text(&back.stdout).contains("max_attempts: 5"),
        "{}",
        text(&back.stdout)
    );

    let yaml = run(&["export", "envoy"]);
    assert!(yaml.status.success());
    assert!(text(&yaml.stdout).starts_with("# ricochet policy `default`"));
    assert!(text(&yaml.stdout).contains("retry_policy:"));
    let strict = run(&["export", "envoy", "--strict"]);
    assert_eq!(
        strict.status.code(),
        Some(2),
        "the default policy's slots are a note"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_endless_input_is_refused_after_a_megabyte() {
    // `ricochet import envoy -` fed without end (or given /dev/zero) must stop reading at the
    // document cap, not read until memory runs out: 64 MiB are offered, and the import has
    // refused (closing its end of the pipe) long before they are all written.
    use std::io::Write;
    use std::process::Stdio;
    let mut child = ricochet()
        .args(["import", "envoy", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = [b'#'; 1024];
    let written = (0..64 * 1024)
        .take_while(|_| stdin.write_all(&line).is_ok())
        .count();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("more than 1048576 bytes"), "{err}");
    assert!(written < 64 * 1024, "all 64 MiB were read");
    if Path::new("/dev/zero").exists() {
        let o = run(&["import", "grpc", "/dev/zero"]);
        assert!(!o.status.success());
        assert!(text(&o.stderr).contains("more than 1048576 bytes"));
    }
}
