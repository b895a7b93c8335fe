//! The policy component itself: valid, self-contained, small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

fn bytes() -> &'static [u8] {
    ricochet_test_support::guests::POLICY_COMPONENT.expect(
        "the policy component was not built: install a wasm32 toolchain (see README) and rebuild",
    )
}

#[test]
fn component_is_at_most_80_kib() {
    // 0.2.0 added the `http` interface (the core's Retry-After, RateLimit and status parsers)
    // and the `policy` resource's glue.
    let size = bytes().len();
    assert!(size <= 80 * 1024, "policy component is {size} bytes");
}

#[test]
fn component_validates_and_imports_only_ricochet_retry() {
    let engine = Engine::new(&Config::new()).unwrap();
    let component = Component::new(&engine, bytes()).unwrap();
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        !imports.is_empty(),
        "the guest uses the host's clock, coordinator, metrics and log"
    );
    for name in &imports {
        assert!(
            name.starts_with("ricochet:retry/"),
            "unexpected import {name}"
        );
    }
    let exports: Vec<String> = ty
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(
        exports,
        [
            "ricochet:retry/http@0.2.0",
            "ricochet:retry/probe@0.2.0",
            "ricochet:retry/retry-policy@0.2.0",
        ]
    );
}

/// Every embedded guest — the policy, the third-party linear policy, the hostile test guests —
/// is a small component of the world: imports only from `ricochet:retry`, exports
/// `retry-policy` (and, for the policy, the `engine` world's `http` and `probe`).
#[test]
fn every_guest_is_a_small_component_of_the_world() {
    use ricochet_test_support::guests;
    let all = [
        ("policy", guests::POLICY_COMPONENT),
        ("linear-policy", guests::LINEAR_POLICY_COMPONENT),
        ("hostile spin", guests::HOSTILE_SPIN_COMPONENT),
        ("hostile hog", guests::HOSTILE_HOG_COMPONENT),
        ("hostile trap", guests::HOSTILE_TRAP_COMPONENT),
    ];
    let engine = Engine::new(&Config::new()).unwrap();
    for (name, bytes) in all {
        let bytes = bytes.unwrap_or_else(|| panic!("the {name} component was not built"));
        assert!(bytes.len() <= 80 * 1024, "{name} is {} bytes", bytes.len());
        let ty = Component::new(&engine, bytes).unwrap().component_type();
        for (import, _) in ty.imports(&engine) {
            assert!(
                import.starts_with("ricochet:retry/"),
                "{name} imports {import}"
            );
        }
        let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
        assert!(
            exports.contains(&"ricochet:retry/retry-policy@0.2.0".to_string()),
            "{name} exports {exports:?}"
        );
        assert!(
            exports.iter().all(|e| [
                "ricochet:retry/retry-policy@0.2.0",
                "ricochet:retry/http@0.2.0",
                "ricochet:retry/probe@0.2.0"
            ]
            .contains(&e.as_str())),
            "{name} exports {exports:?}"
        );
    }
}
