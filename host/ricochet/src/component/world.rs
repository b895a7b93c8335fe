//! Does a component fit the `ricochet:retry` `policy` world?
//!
//! wasmtime checks a component against the linker when it is pre-instantiated, and the types
//! of exported functions only when they are first looked up, and its errors speak of instances
//! and type mismatches without saying which function. These checks say what a policy author can
//! act on: *which* import the host does not provide, *which* export is missing, *which*
//! exported function has the wrong type. A component may import less than the world offers
//! (wit-component drops unused imports) and export more than `retry-policy`.
//!
//! [`check`] reads the component's type; [`check_functions`] type-checks each export of a
//! probe instance, made once at load.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Instance};
use wasmtime::{Engine, Store};

use super::imports::HostState;
use super::wit;

/// The package and version of the world, as component names spell them.
const PACKAGE: &str = "ricochet:retry";
const VERSION: &str = "0.1.0";

/// What the host provides: interface, functions.
const IMPORTS: &[(&str, &[&str])] = &[
    ("types", &[]),
    ("clock", &["now-us"]),
    (
        "coordination",
        &[
            "acquire-slot",
            "idempotency-begin",
            "idempotency-complete",
            "idempotency-fail",
        ],
    ),
    ("metrics", &["counter-add", "histogram-observe"]),
    ("logging", &["log"]),
];

/// What a policy must export: interface, functions.
const EXPORT: (&str, &[&str]) = (
    "retry-policy",
    &[
        "validate",
        "next-delay",
        "plan",
        "decide",
        "resolve-ticket",
        "schedule",
    ],
);

fn qualified(interface: &str) -> String {
    format!("{PACKAGE}/{interface}@{VERSION}")
}

fn provided() -> String {
    IMPORTS
        .iter()
        .map(|(i, _)| qualified(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Err` names the first import the host does not provide or export the component lacks.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let Some((_, functions)) = IMPORTS.iter().find(|(i, _)| qualified(i) == name) else {
            return Err(format!(
                "it imports `{name}`, which a ricochet:retry host does not provide (it provides {})",
                provided()
            ));
        };
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            return Err(format!(
                "it imports `{name}` as something other than an interface instance"
            ));
        };
        for (function, item) in instance.exports(engine) {
            if matches!(item.ty, ComponentItem::ComponentFunc(_)) && !functions.contains(&function)
            {
                return Err(format!(
                    "it imports function `{function}` from `{name}`, which the host does not provide (it provides {})",
                    functions.join(", ")
                ));
            }
        }
    }
    let (interface, functions) = EXPORT;
    let wanted = qualified(interface);
    let Some(export) = ty.get_export(engine, &wanted) else {
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| format!("`{n}`")).collect();
        return Err(format!(
            "it does not export `{wanted}` (it exports {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ));
    };
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Err(format!(
            "it exports `{wanted}` as something other than an interface instance"
        ));
    };
    for function in functions {
        match instance.get_export(engine, function).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(_)) => {}
            Some(_) => {
                return Err(format!(
                    "its `{wanted}` exports `{function}`, but not as a function"
                ))
            }
            None => {
                return Err(format!(
                    "its `{wanted}` does not export the function `{function}`"
                ))
            }
        }
    }
    Ok(())
}

/// `Err` names the first export of `retry-policy` whose type is not the world's.
pub(crate) fn check_functions(
    store: &mut Store<HostState>,
    instance: &Instance,
) -> Result<(), String> {
    let wanted = qualified(EXPORT.0);
    let interface = instance
        .get_export_index(&mut *store, None, &wanted)
        .ok_or_else(|| format!("it does not export `{wanted}`"))?;
    macro_rules! check {
        ($name:literal, $params:ty, $results:ty) => {{
            let index = instance
                .get_export_index(&mut *store, Some(&interface), $name)
                .ok_or_else(|| {
                    format!("its `{wanted}` does not export the function `{}`", $name)
                })?;
            instance
                .get_typed_func::<$params, $results>(&mut *store, &index)
                .map_err(|e| {
                    format!(
                        "its `{wanted}` exports `{}` with another type than the world's: {e:#}",
                        $name
                    )
                })?;
        }};
    }
    check!(
        "validate",
        (wit::RetryConfig,),
        (Result<(), wit::ConfigError>,)
    );
    check!(
        "next-delay",
        (wit::RetryConfig, u32, u64, u64),
        (Result<u64, wit::ConfigError>,)
    );
    check!(
        "plan",
        (wit::RetryConfig, u64),
        (Result<Vec<wit::PlannedRetry>, wit::ConfigError>,)
    );
    check!(
        "decide",
        (
            wit::RetryConfig,
            wit::RetryState,
            wit::Failure,
            u64,
            wit::Guards
        ),
        (Result<(wit::RetryState, wit::Guards, wit::Decision), wit::ConfigError>,)
    );
    check!(
        "resolve-ticket",
        (wit::RetryConfig, wit::SlotRequest, u64, u64),
        (Result<Option<u64>, wit::ConfigError>,)
    );
    check!(
        "schedule",
        (
            wit::RetryConfig,
            String,
            String,
            wit::RetryState,
            wit::Failure
        ),
        (Result<(wit::RetryState, wit::ScheduleOutcome), wit::ConfigError>,)
    );
    Ok(())
}
