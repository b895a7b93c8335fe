//! The 1 MiB policy-file cap holds for files whose size says nothing: a device that never
//! ends (`/dev/zero`) and a FIFO fed without end. Before issue 15 the cap was a size check on
//! the metadata (0 for both) followed by an unbounded read: the load never returned and its
//! memory grew until the process was killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ricochet::config_file::{PolicyFile, MAX_FILE_BYTES};

/// Loads `path` on a thread; the error message, or a failure if it takes longer than a bound
/// only an unbounded read would reach.
fn load_error(path: &Path) -> String {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(PolicyFile::load(&path).map(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("an endless file loaded"),
        Err(_) => panic!("the load did not return: the read is not capped"),
    }
}

#[test]
fn dev_zero_is_refused_after_the_cap() {
    let e = load_error(Path::new("/dev/zero"));
    assert!(e.contains("file too large"), "{e}");
    assert!(e.contains(&MAX_FILE_BYTES.to_string()), "{e}");
}

#[test]
fn an_endless_fifo_is_refused_after_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policies.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        f.write_all(b"retry_policies:\n  default:\n    max_attempts: 3\n")
            .unwrap();
        let comment = [b'#'; 64 * 1024];
        // Until the reader hangs up (EPIPE): it must, after a megabyte.
        let mut written = 0u64;
        while f.write_all(&comment).is_ok() {
            written += comment.len() as u64;
            assert!(written < 64 * MAX_FILE_BYTES, "the reader never stopped");
        }
        written
    });
    let e = load_error(&fifo);
    assert!(e.contains("file too large"), "{e}");
    let written = writer.join().unwrap();
    assert!(written <= 2 * MAX_FILE_BYTES, "read {written} bytes");
}

#[test]
fn a_small_fifo_still_loads() {
    // Process substitution (`--file <(envsubst < p.yaml)`) hands over a pipe: it must work.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("p.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .unwrap();
        f.write_all(br#"{"retry_policies": {"default": {"max_attempts": 7}}}"#)
            .unwrap();
    });
    let file = PolicyFile::load(&fifo).unwrap();
    assert_eq!(file.get("default").unwrap().max_attempts, 7);
    writer.join().unwrap();
}
