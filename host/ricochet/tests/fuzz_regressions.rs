//! Policy files that once broke `PolicyFile::parse`, found while fuzzing it (`tests/fuzz`,
//! targets `config_yaml` and `config_json`; see RELIABILITY.md, "Fuzzing"). Each must now get its
//! errors quickly and without a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ricochet::config_file::{
    FileError, PolicyFile, MAX_EXTENDS_DEPTH, MAX_FILE_BYTES, MAX_LOCATED_ERRORS,
};

/// Far above what these files take now (well under a second in a release build) and far below
/// what they took before the fixes (a crash, or minutes).
const QUICK: Duration = Duration::from_secs(60);

/// Entries `p0` … `p{last}`, each extending the next, one per line (`p{last}` extends nothing).
fn chain_yaml(last: usize) -> String {
    let mut text = String::from("retry_policies:\n");
    for i in 0..last {
        writeln!(text, "  p{i}: {{extends: p{}}}", i + 1).unwrap();
    }
    writeln!(text, "  p{last}: {{}}").unwrap();
    text
}

/// The same chain as JSON, on one line.
fn chain_json(last: usize) -> String {
    let entries: Vec<String> = (0..last)
        .map(|i| format!("\"p{i}\": {{\"extends\": \"p{}\"}}", i + 1))
        .chain([format!("\"p{last}\": {{}}")])
        .collect();
    format!("{{\"retry_policies\": {{{}}}}}", entries.join(", "))
}

fn refused(path: &str, text: &str) -> Vec<FileError> {
    assert!(
        text.len() as u64 <= MAX_FILE_BYTES,
        "{path} is over the size cap"
    );
    let start = Instant::now();
    let errors = PolicyFile::parse(Path::new(path), text).unwrap_err().0;
    let took = start.elapsed();
    assert!(took < QUICK, "{path}: {took:?}");
    errors
}

/// A chain of 20 000 `extends` (640 KB) overflowed the stack: `resolve` recursed once per link
/// (SIGSEGV in `ricochet check`). One of 2 000 took 27 s: each entry re-walked the chain and
/// searched it for a cycle. Now a chain may be `MAX_EXTENDS_DEPTH` policies long.
#[test]
fn a_long_extends_chain_is_refused_without_overflowing_the_stack() {
    let last = 20_000;
    for (path, text) in [
        ("chain.json", chain_json(last)),
        ("chain.yaml", chain_yaml(last)),
    ] {
        let errors = refused(path, &text);
        // The entries within MAX_EXTENDS_DEPTH of the end resolve; every one above is refused.
        assert_eq!(errors.len(), last + 1 - MAX_EXTENDS_DEPTH, "{path}");
        for e in &errors {
            assert_eq!(e.field.as_deref(), Some("extends"), "{e}");
            assert!(
                e.message
                    .starts_with("extends: a chain may be at most 32 policies long: "),
                "{e}"
            );
        }
    }
}

#[test]
fn a_chain_of_max_extends_depth_policies_still_loads() {
    let file = PolicyFile::parse(Path::new("p.yaml"), &chain_yaml(MAX_EXTENDS_DEPTH - 1)).unwrap();
    assert_eq!(file.policies().len(), MAX_EXTENDS_DEPTH);

    let errors = PolicyFile::parse(Path::new("p.yaml"), &chain_yaml(MAX_EXTENDS_DEPTH))
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    let chain: Vec<String> = (0..=MAX_EXTENDS_DEPTH).map(|i| format!("p{i}")).collect();
    assert_eq!(
        errors[0].to_string(),
        format!(
            "p.yaml:2:3: policy `p0`: extends: a chain may be at most 32 policies long: {} -> …",
            chain.join(" -> ")
        )
    );
}

/// 36 000 invalid policies in 1 MB took two minutes: every error was located by scanning the
/// text from the top. Every error is still reported; the first `MAX_LOCATED_ERRORS` with a
/// position.
#[test]
fn a_megabyte_of_invalid_policies_is_refused_quickly() {
    let mut text = String::from("retry_policies:\n");
    let mut policies = 0;
    while text.len() < 1_000_000 {
        writeln!(text, "  p{policies}: {{max_attempts: 0}}").unwrap();
        policies += 1;
    }
    let errors = refused("many.yaml", &text);
    assert_eq!(errors.len(), policies);
    assert!(errors
        .iter()
        .all(|e| e.message == "max_attempts must be at least 1, got 0"));
    let (located, unlocated) = errors.split_at(MAX_LOCATED_ERRORS);
    assert!(located.iter().all(|e| e.location.is_some()));
    assert!(unlocated.iter().all(|e| e.location.is_none()));
    assert_eq!(
        errors[0].to_string(),
        "many.yaml:2:3: policy `p0`: max_attempts must be at least 1, got 0"
    );
}
