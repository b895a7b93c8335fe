//! The bad-input table: malformed policy files, each with the error it must get — never a panic,
//! a hang, or a silent default. RELIABILITY.md lists the same rows (checked below).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use ricochet::config_file::PolicyFile;

/// (row name, file name, content, substrings the error must contain)
fn rows() -> Vec<(&'static str, &'static str, Vec<u8>, Vec<&'static str>)> {
    let policy = |body: &str| format!("retry_policies:\n  default:\n{body}").into_bytes();
    let deep = format!(
        "retry_policies: {}{}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    )
    .into_bytes();
    let mut huge = b"retry_policies:\n  default:\n    max_attempts: 3\n".to_vec();
    huge.extend(std::iter::repeat_n(b'#', 10 << 20));
    vec![
        ("wrong type", "p.yaml", policy("    max_attempts: three\n"), vec!["p.yaml:3:", "max_attempts", "invalid type"]),
        ("NaN", "p.yaml", policy("    initial_delay: .nan\n"), vec!["p.yaml:3:5", "initial_delay", "NaN"]),
        ("infinity", "p.yaml", policy("    max_delay: .inf\n"), vec!["p.yaml:3:5", "max_delay", "inf"]),
        ("negative delay", "p.yaml", policy("    max_delay: -1\n"), vec!["p.yaml:3:5", "max_delay must not be negative, got -1.0"]),
        ("zero attempts", "p.yaml", policy("    max_attempts: 0\n"), vec!["max_attempts must be at least 1, got 0"]),
        ("too many attempts", "p.yaml", policy("    max_attempts: 5000\n"), vec!["max_attempts", "5000"]),
        ("integer overflow", "p.yaml", policy("    max_attempts: 99999999999999999999\n"), vec!["p.yaml:3:", "max_attempts"]),
        ("huge delay", "p.yaml", policy("    max_delay: 1e300\n"), vec!["max_delay must be within", "1e300"]),
        ("initial above max", "p.yaml", policy("    initial_delay: 20\n"), vec!["initial_delay must not exceed max_delay", "20.0"]),
        ("base below one", "p.yaml", policy("    exponential_base: 0.5\n"), vec!["exponential_base must be at least 1.0, got 0.5"]),
        ("jitter factor out of range", "p.yaml", policy("    jitter_factor: 1.5\n"), vec!["jitter_factor must be within [0.0, 1.0], got 1.5"]),
        ("zero slots with coordination", "p.yaml", policy("    slot_count: 0\n"), vec!["slot_count must be at least 1 when coordination_enabled is true, got 0"]),
        ("unknown field", "p.yaml", policy("    max_atempts: 3\n"), vec!["p.yaml:3:", "unknown field `max_atempts`", "max_attempts"]),
        ("unknown strategy", "p.yaml", policy("    strategy: random\n"), vec!["p.yaml:3:", "unknown variant `random`", "decorrelated"]),
        ("unknown error category", "p.yaml", policy("    retry_on: [ConnectionError, Teapot]\n"), vec!["p.yaml:3:", "unknown error category `Teapot`"]),
        ("breaker rate out of range", "p.yaml", policy("    circuit_breaker: {failure_threshold: 5, failure_rate: 2, minimum_calls: 10, window: 10, cool_down: 5, half_open_probes: 1}\n"), vec!["circuit_breaker.failure_rate must be within [0, 1], got 2"]),
        ("budget of zero tokens", "p.yaml", policy("    retry_budget: {max_tokens: 0, token_ratio: 0.1}\n"), vec!["retry_budget.max_tokens must be within [1, 1000], got 0"]),
        ("extends cycle", "p.yaml", b"retry_policies:\n  a:\n    extends: b\n  b:\n    extends: a\n".to_vec(), vec!["extends: cycle a -> b -> a"]),
        ("extends unknown", "p.yaml", b"retry_policies:\n  a:\n    extends: nowhere\n".to_vec(), vec!["p.yaml:3:5", "unknown policy `nowhere`"]),
        ("empty policy name", "p.yaml", b"retry_policies:\n  \"\": {max_attempts: 3}\n".to_vec(), vec!["p.yaml:2:", "policy name \"\" is empty"]),
        ("policy name of spaces", "p.yaml", b"retry_policies:\n  \"  \": {max_attempts: 3}\n".to_vec(), vec!["policy name \"  \" is empty"]),
        ("policy name with a control character", "p.yaml", b"retry_policies:\n  \"a\\u001b[31mb\": {max_attempts: 3}\n".to_vec(), vec!["contains a control character"]),
        ("extends a name over 64 bytes", "p.yaml", format!("retry_policies:\n  a:\n    extends: {}\n", "x".repeat(65)).into_bytes(), vec!["a policy name may be at most 64 bytes long, got 65"]),
        ("empty file", "p.yaml", Vec::new(), vec!["empty file"]),
        ("binary garbage", "p.yaml", vec![0x00, 0xff, 0xfe, 0x13, 0x37, 0x80, 0x81], vec!["not UTF-8"]),
        ("deeply nested YAML", "p.yaml", deep, vec!["p.yaml:1:17", "invalid type: sequence, expected a map"]),
        ("10 MB file", "p.yaml", huge, vec!["file too large: 10485807 bytes"]),
        ("not a map at the top", "p.yaml", b"- default\n- aggressive\n".to_vec(), vec!["invalid type: sequence"]),
        ("missing retry_policies", "p.yaml", b"policies:\n  default: {}\n".to_vec(), vec!["unknown field `policies`"]),
        ("policy is not a map", "p.yaml", b"retry_policies:\n  default: 5\n".to_vec(), vec!["p.yaml:2:", "invalid type: integer `5`"]),
        ("YAML syntax error", "p.yaml", b"retry_policies:\n  default:\n    max_attempts: [3\n".to_vec(), vec!["p.yaml:"]),
        ("JSON trailing comma", "p.json", b"{\"retry_policies\": {\"default\": {\"max_attempts\": 3,}}}".to_vec(), vec!["p.json:1:", "trailing comma"]),
    ]
}

#[test]
fn every_bad_input_gets_its_error() {
    let dir = std::env::temp_dir().join(format!("ricochet-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = rows();
    assert!(rows.len() >= 20);
    for (name, file, content, expected) in &rows {
        let path: PathBuf = dir.join(file);
        std::fs::write(&path, content).unwrap();
        let err = match PolicyFile::load(&path) {
            Ok(f) => panic!("row `{name}` was accepted: {:?}", f.policies()),
            Err(e) => e.to_string(),
        };
        for needle in expected {
            assert!(
                err.contains(needle),
                "row `{name}`: expected `{needle}` in:\n{err}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reliability_md_lists_every_row() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../RELIABILITY.md"))
        .unwrap();
    for (name, ..) in rows() {
        assert!(
            doc.contains(&format!("| {name} |")),
            "RELIABILITY.md has no row `{name}`"
        );
    }
}
