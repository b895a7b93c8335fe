//! The policy component itself: valid, self-contained, small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

fn bytes() -> &'static [u8] {
    ricochet_host::guests::POLICY_COMPONENT.expect(
        "the policy component was not built: install a wasm32 toolchain (see README) and rebuild",
    )
}

#[test]
fn component_is_at_most_64_kib() {
    let size = bytes().len();
    assert!(size <= 64 * 1024, "policy component is {size} bytes");
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
    assert_eq!(exports, ["ricochet:retry/retry-policy@0.1.0"]);
}
