//! Components of the wrong world are refused at load time, with an error that names the
//! import or export at fault — and loading one does not disturb a good component.
//!
//! The wrong components are made here from WIT text with `wit-component` (a dummy core module
//! for the world, componentized), so each differs from the real world in exactly one way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet_test_support as support;

use ricochet::component::{ComponentError, PolicyComponent, Sandbox};
use ricochet_core::RetryConfig;
use support::guest;
use wit_parser::{ManglingAndAbi, Resolve};

/// The real world's WIT.
const RETRY_WIT: &str = include_str!("../../wit/retry.wit");

/// A component for world `world` of the package in `wit`.
fn component_of(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let package = resolve.push_source("test.wit", wit).unwrap();
    let world = resolve.select_world(&[package], Some(world)).unwrap();
    let mut module = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

fn load(bytes: &[u8]) -> Result<PolicyComponent, ComponentError> {
    PolicyComponent::from_bytes(bytes, Sandbox::default())
}

fn wrong_world(bytes: &[u8]) -> String {
    match load(bytes) {
        Err(ComponentError::WrongWorld(message)) => {
            eprintln!("refused: {message}");
            message
        }
        Err(other) => panic!("expected a wrong-world error, got {other:?}"),
        Ok(_) => panic!("a wrong-world component loaded"),
    }
}

#[test]
fn the_real_world_loads() {
    // The dummy of the real world fits (it would only trap if called).
    load(&component_of(RETRY_WIT, "policy")).unwrap();
}

#[test]
fn an_import_the_host_does_not_provide_is_named() {
    let wit = format!(
        "{RETRY_WIT}\ninterface telemetry {{ send: func(data: list<u8>); }}\nworld greedy {{ include policy; import telemetry; }}\n"
    );
    let message = wrong_world(&component_of(&wit, "greedy"));
    assert!(
        message.contains("ricochet:retry/telemetry@0.2.0") && message.contains("does not provide"),
        "{message}"
    );
}

#[test]
fn a_function_the_host_does_not_provide_is_named() {
    let wit = RETRY_WIT.replace(
        "    now-us: func() -> u64;",
        "    now-us: func() -> u64;\n    /// Not in the real world.\n    sleep-us: func(us: u64);",
    );
    let message = wrong_world(&component_of(&wit, "policy"));
    assert!(
        message.contains("sleep-us") && message.contains("ricochet:retry/clock@0.2.0"),
        "{message}"
    );
}

#[test]
fn a_missing_export_is_named() {
    let wit = format!("{RETRY_WIT}\nworld bystander {{ import clock; }}\n");
    let message = wrong_world(&component_of(&wit, "bystander"));
    assert!(
        message.contains("does not export `ricochet:retry/retry-policy@0.2.0`"),
        "{message}"
    );
}

#[test]
fn a_missing_function_is_named() {
    let wit = "package ricochet:retry@0.2.0;\n\
               interface retry-policy {\n\
                 resource policy { create: static func(max-attempts: u32) -> policy; }\n\
               }\n\
               world policy { export retry-policy; }\n";
    let message = wrong_world(&component_of(wit, "policy"));
    assert!(
        message.contains("does not export the function `[method]policy.next-delay`"),
        "{message}"
    );
}

#[test]
fn a_mismatched_function_type_is_named() {
    let wit = "package ricochet:retry@0.2.0;\n\
               interface retry-policy {\n\
                 resource policy {\n\
                   create: static func(max-attempts: u32) -> policy;\n\
                   next-delay: func() -> u64;\n\
                   plan: func() -> u64;\n\
                   decide: func() -> u64;\n\
                   decide-guarded: func() -> u64;\n\
                   resolve-ticket: func() -> u64;\n\
                   schedule: func() -> u64;\n\
                 }\n\
               }\n\
               world policy { export retry-policy; }\n";
    let message = wrong_world(&component_of(wit, "policy"));
    assert!(message.contains("[static]policy.create"), "{message}");
}

#[test]
fn another_version_of_the_package_is_named() {
    let wit = RETRY_WIT.replace(
        "package ricochet:retry@0.2.0;",
        "package ricochet:retry@0.3.0;",
    );
    let message = wrong_world(&component_of(&wit, "policy"));
    assert!(message.contains("@0.3.0"), "{message}");
}

/// A component built against 0.1.0 (the world as it was: every function took the whole
/// config) is refused with what changed and where its author reads how to migrate.
#[test]
fn a_0_1_component_is_refused_with_the_way_to_migrate() {
    let wit = include_str!("../data/retry-0.1.0.wit");
    let message = wrong_world(&component_of(wit, "policy"));
    assert!(message.contains("ricochet:retry@0.1.0"), "{message}");
    assert!(message.contains("ricochet:retry@0.2.0"), "{message}");
    assert!(message.contains("[static]policy.create"), "{message}");
    assert!(message.contains("Migrating from 0.1"), "{message}");
}

#[test]
fn bytes_that_are_no_component_are_invalid() {
    match load(b"\0asm\x01\0\0\0") {
        Err(ComponentError::Invalid(_)) => {}
        other => panic!("{other:?}"),
    }
    match load(b"not wasm at all") {
        Err(ComponentError::Invalid(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_good_component_is_unaffected_by_refused_ones() {
    let good = load(guest(
        ricochet_test_support::guests::POLICY_COMPONENT,
        "policy",
    ))
    .unwrap();
    let _ = load(&component_of(
        &format!("{RETRY_WIT}\nworld bystander {{ import clock; }}\n"),
        "bystander",
    ));
    assert!(good.validate(&RetryConfig::DEFAULT).unwrap().is_ok());
}
