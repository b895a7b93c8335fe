//! Hostile components that attack the sandbox itself: a table grown call after call (or
//! declared huge), function names that carry terminal escapes and fake backtrace lines, a
//! config error that does the same, and a loop started after the epoch ticker went idle.
//!
//! Rust cannot emit `table.grow` or choose a name section, so those guests are written here in
//! WAT — a core module with the functions of `retry-policy`'s `policy` resource, in the
//! canonical ABI's core signatures (see `hostile/mod.rs`) — and made components with
//! `wit-component`, as a reviewer would. What they do
//! runs through the real host: wasmtime, the sandbox's limits, the error path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use std::time::{Duration, Instant};

use ricochet::component::{ComponentError, PolicyComponent, Sandbox, TableCapExceeded};
use ricochet::engine::{EngineError, PolicyEngine};
use ricochet_core::RetryConfig;
use support::guest;

mod hostile;
use hostile::{component, policy_module, wat_bytes};

/// `next-delay` for retry `elements` grows the table by that many elements: the guest's policy
/// is made once per instance, so every call after the first is this one method call.
fn grow_by(hostile: &PolicyComponent, elements: u32) -> Result<u64, ComponentError> {
    hostile
        .next_delay(&RetryConfig::DEFAULT, elements, 0, 0)
        .map(|answer| answer.unwrap())
}

/// `next-delay` grows the table by `retry` elements and answers 0: the instance goes back to
/// the pool with its bigger table, and the next call grows it again.
fn table_grower() -> PolicyComponent {
    let wat = policy_module(
        1,
        "",
        &[(
            "next-delay",
            "(drop (table.grow $t (ref.null func) (local.get $retry))) (i64.const 0)",
        )],
    );
    PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap()
}

#[test]
fn a_table_grown_call_after_call_hits_its_cap_not_the_hosts_memory() {
    let limit = Sandbox::DEFAULT_MAX_TABLE_ELEMENTS;
    // The reviewer's attack grew the table by 9.9 M elements per call: 789 MB of RSS in ten
    // calls. Now each such call is a typed error and its instance is dropped.
    let hostile = table_grower();
    for _ in 0..10 {
        let error = grow_by(&hostile, 1_000_000).unwrap_err();
        assert_eq!(
            error,
            ComponentError::TableLimit(TableCapExceeded {
                requested_elements: 1_000_001,
                limit_elements: limit,
            })
        );
        assert_eq!(error.reason(), "table");
    }
    // Growth within the cap is a guest's own business; on a pooled instance it adds up, and
    // reaches the cap rather than the host's memory.
    let hostile = table_grower();
    let step = 1_000;
    let mut grown = 1;
    let error = loop {
        match grow_by(&hostile, step) {
            Ok(_) => {
                grown += step as usize;
                assert!(grown <= limit, "grew to {grown} elements, past the cap");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        error,
        ComponentError::TableLimit(TableCapExceeded {
            requested_elements: grown + step as usize,
            limit_elements: limit,
        })
    );
    // The failed instance is gone; the next call starts from a fresh, small table.
    grow_by(&hostile, step).unwrap();
}

#[test]
fn a_table_declared_past_the_cap_is_refused_at_load() {
    let wat = policy_module(10_000_000, "", &[]);
    match PolicyComponent::from_bytes(&component(&wat), Sandbox::default()) {
        Err(ComponentError::TableLimit(t)) => {
            assert_eq!(t.requested_elements, 10_000_000);
            assert_eq!(t.limit_elements, Sandbox::DEFAULT_MAX_TABLE_ELEMENTS);
        }
        Err(other) => panic!("expected the table cap, got {other:?}"),
        Ok(_) => panic!("a component with a 10-million-element table loaded"),
    }
    // A host that wants bigger tables says so.
    let roomy = Sandbox::default().with_max_table_elements(10_000_000);
    PolicyComponent::from_bytes(&component(&wat), roomy).unwrap();
}

/// What a name section may say: a newline and a made-up backtrace frame, a terminal escape
/// that turns the rest red, a right-to-left override.
const FORGED_NAME: &str =
    "evil\n    1: 0xdead - core::panicking::fake_frame\u{1b}[31m\u{202e}exe.txt";

fn assert_fit_for_a_log_line(message: &str) {
    assert!(
        !message
            .chars()
            .any(|c| c.is_control() || ('\u{202A}'..='\u{202E}').contains(&c)),
        "a raw control character reached the message: {message:?}"
    );
    assert!(
        message.len() <= 1024 + 64,
        "{} bytes of guest text",
        message.len()
    );
}

#[test]
fn a_trap_cannot_print_raw_control_characters_or_fake_backtrace_lines() {
    // And 5 000 bytes of padding.
    let name = format!("{FORGED_NAME}{}", "A".repeat(5_000));
    let extra = format!(
        "(func $evil (@name \"{}\") unreachable)",
        wat_bytes(name.as_bytes())
    );
    let wat = policy_module(1, &extra, &[("plan", "(call $evil) (i32.const 16)")]);
    let hostile = PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap();
    let error = hostile.plan(&RetryConfig::DEFAULT, 1).unwrap_err();
    let ComponentError::Trap(message) = &error else {
        panic!("expected a trap, got {error:?}");
    };
    eprintln!("trap message: {message}");
    assert_fit_for_a_log_line(message);
    // The name is still there to read, escaped: one line, no colour.
    assert!(message.contains("evil\\n    1: 0xdead"), "{message}");
    assert!(message.contains("\\u{1b}[31m"), "{message}");
    assert!(message.contains("\\u{202e}"), "{message}");
    assert_fit_for_a_log_line(&error.to_string());
}

#[test]
fn a_config_error_cannot_print_raw_control_characters() {
    // `create` answers `err(config-error { field, message })` with hostile text: the
    // result's discriminant 1 at 16, then the two strings as (pointer, length) from 20.
    let field = "max_attempts\u{1b}[2J";
    let message = "looks fine\n{\"level\":\"INFO\",\"forged\":true}";
    let mut result = vec![1, 0, 0, 0];
    for (at, text) in [(512u32, field), (768, message)] {
        result.extend_from_slice(&at.to_le_bytes());
        result.extend_from_slice(&(text.len() as u32).to_le_bytes());
    }
    let extra = format!(
        "(data (i32.const 16) \"{}\") (data (i32.const 512) \"{}\") (data (i32.const 768) \"{}\")",
        wat_bytes(&result),
        wat_bytes(field.as_bytes()),
        wat_bytes(message.as_bytes())
    );
    let wat = policy_module(1, &extra, &[("create", "(i32.const 16)")]);
    let hostile = PolicyComponent::from_bytes(&component(&wat), Sandbox::default()).unwrap();
    let error = PolicyEngine::validate(&hostile, &RetryConfig::DEFAULT).unwrap_err();
    let EngineError::Config { field, message } = &error else {
        panic!("expected a config error, got {error:?}");
    };
    eprintln!("config error: field {field:?}, message {message:?}");
    assert_fit_for_a_log_line(field);
    assert_fit_for_a_log_line(message);
    assert_eq!(field, "max_attempts\\u{1b}[2J");
    assert!(message.starts_with("looks fine\\n{"), "{message}");
    assert_fit_for_a_log_line(&error.to_string());
}

/// The first call after the epoch ticker went idle is stopped by its time budget, like any
/// other. (The ticker now sleeps until a metered call wakes it: were the wake lost, this loop
/// would never be interrupted, so each call runs on a thread the test can give up on.)
#[test]
fn the_first_call_after_idle_is_stopped_by_its_time_budget() {
    let budget = Duration::from_millis(5);
    let bytes = guest(
        ricochet_test_support::guests::HOSTILE_SPIN_COMPONENT,
        "hostile spin",
    );
    let hostile =
        PolicyComponent::from_bytes(bytes, Sandbox::unmetered().with_time_per_call(budget))
            .unwrap();
    for _ in 0..3 {
        // Longer than the ticker's idle threshold (200 ms); no other test of this binary
        // meters time.
        std::thread::sleep(Duration::from_millis(300));
        let c = hostile.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            let error = c.plan(&RetryConfig::DEFAULT, 7).unwrap_err();
            let _ = tx.send((error, started.elapsed()));
        });
        let (error, took) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a loop started after idle was never interrupted");
        assert_eq!(error, ComponentError::TimedOut { budget });
        assert!(took <= Duration::from_millis(100), "stopped after {took:?}");
    }
}
