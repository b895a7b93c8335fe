//! Expected values for the JavaScript package's parity test (`host/js/test/parity.test.js`),
//! computed by the native core in the same test run: one JSON object per line.
//!
//! ```text
//! cargo run -q -p ricochet-core --example parity_vectors > vectors.jsonl
//! ```
//!
//! For each preset (`default`, `aggressive`, `conservative`), each jitter strategy and seeds
//! 0..1000: the plan (base and jittered delays, µs), and the decisions after a fixed sequence of
//! failures (a 503, a 429 whose server delay depends on the seed, a timeout, a connection error,
//! …) until the core gives up. Integers are written as decimal strings, so JavaScript reads u64
//! values exactly.

use std::fmt::Write;

use ricochet_core::{
    Decision, ErrorCategory, Failure, Guards, JitterStrategy, RetryConfig, RetryState,
};

const STRATEGIES: [(&str, JitterStrategy); 5] = [
    ("none", JitterStrategy::None),
    ("proportional", JitterStrategy::Proportional),
    ("full", JitterStrategy::Full),
    ("equal", JitterStrategy::Equal),
    ("decorrelated", JitterStrategy::Decorrelated),
];

/// The failures each sequence feeds the core, in order, as (category, server delay, whether
/// the token was refreshed): an expired credential early enough that every preset retries it.
fn failures(seed: u64) -> [(ErrorCategory, Option<u64>, bool); 6] {
    [
        (ErrorCategory::AuthExpired, None, true),
        (
            ErrorCategory::RateLimited,
            Some((seed % 7) * 250_000),
            false,
        ),
        (ErrorCategory::ServiceUnavailable, None, false),
        (ErrorCategory::Timeout, None, false),
        (ErrorCategory::Connection, None, false),
        (ErrorCategory::ServiceUnavailable, None, false),
    ]
}

const STARTED_US: u64 = 1_800_000_000_000_000;

fn main() {
    let mut out = String::new();
    for preset in ["default", "aggressive", "conservative"] {
        for (strategy_name, strategy) in STRATEGIES {
            let config = RetryConfig {
                strategy,
                ..RetryConfig::preset(preset).expect("a preset")
            };
            let policy = config.validate().expect("presets are valid");
            for seed in 0..1000u64 {
                out.clear();
                let _ = write!(
                    out,
                    "{{\"preset\":\"{preset}\",\"strategy\":\"{strategy_name}\",\"seed\":\"{seed}\",\"plan\":["
                );
                for (i, r) in policy.plan(seed).enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let _ = write!(
                        out,
                        "{sep}[{},\"{}\",\"{}\"]",
                        r.retry, r.base_delay_us, r.delay_us
                    );
                }
                out.push_str("],\"decisions\":[");
                let mut state = RetryState::new(seed, STARTED_US);
                let mut now_us = STARTED_US;
                for (i, (category, server_delay_us, token_refreshed)) in
                    failures(seed).into_iter().enumerate()
                {
                    let failure = Failure {
                        category,
                        server_delay_us,
                        token_refreshed,
                    };
                    let decision = state.on_failure(&policy, failure, now_us, Guards::none());
                    let sep = if i == 0 { "" } else { "," };
                    let server = server_delay_us.map_or("null".to_string(), |d| format!("\"{d}\""));
                    let _ = write!(
                        out,
                        "{sep}{{\"category\":\"{}\",\"server_delay_us\":{server},\"token_refreshed\":{token_refreshed},\"now_us\":\"{now_us}\",",
                        category.snake_name()
                    );
                    // The state after the decision, as every host must keep it.
                    let parts = state.to_parts();
                    let _ = write!(
                        out,
                        "\"state\":{{\"calls\":{},\"prev_delay_us\":\"{}\",\"auth_retried\":{}}},",
                        parts.calls, parts.prev_delay_us, parts.auth_retried
                    );
                    match decision {
                        Decision::Retry { delay_us, .. } => {
                            let _ = write!(out, "\"retry\":true,\"delay_us\":\"{delay_us}\"}}");
                            now_us += delay_us;
                        }
                        Decision::GiveUp { reason } => {
                            let _ =
                                write!(out, "\"retry\":false,\"reason\":\"{}\"}}", reason.name());
                            break;
                        }
                    }
                }
                out.push_str("]}");
                println!("{out}");
            }
        }
    }
}
