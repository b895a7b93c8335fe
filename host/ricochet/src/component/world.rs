//! Does a component fit the `ricochet:retry` `policy` world?
//!
//! wasmtime checks a component against the linker when it is pre-instantiated, and the types
//! of exported functions only when they are first looked up, and its errors speak of instances
//! and type mismatches without saying which function. These checks say what a policy author can
//! act on: *which* import the host does not provide, *which* export is missing, *which*
//! exported function has the wrong type. A component may import less than the world offers
//! (wit-component drops unused imports) and export more than `retry-policy`. A component of
//! an older version of the package (0.1.0, whose functions took the config on every call) is
//! told what changed and where the migration is described.
//!
//! [`check`] reads the component's type; [`check_functions`] type-checks each export of a
//! probe instance, made once at load.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Instance, ResourceAny};
use wasmtime::{Engine, Store};

use super::bindings::retry_policy as exported;
use super::imports::HostState;
use super::wit;

/// The package and version of the world, as component names spell them.
const PACKAGE: &str = "ricochet:retry";
const VERSION: &str = "0.2.0";

/// Versions of the package this host no longer runs.
const RETIRED_VERSIONS: &[&str] = &["0.1.0"];

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
        "[static]policy.create",
        "[method]policy.next-delay",
        "[method]policy.plan",
        "[method]policy.decide",
        "[method]policy.decide-guarded",
        "[method]policy.resolve-ticket",
        "[method]policy.schedule",
    ],
);

/// The refusal of a component built against a retired version of the package, if it is one.
fn retired(name: &str) -> Option<String> {
    let version = RETIRED_VERSIONS
        .iter()
        .find(|v| name.starts_with(PACKAGE) && name.ends_with(&format!("@{v}")))?;
    Some(format!(
        "it is built against {PACKAGE}@{version} (`{name}`); this host runs {PACKAGE}@{VERSION}, \
         where a `policy` resource is made once from the config (`[static]policy.create`) and its \
         methods no longer take the config: rebuild it against wit/retry.wit {VERSION} (wit/README.md, \
         \"Migrating from 0.1\")"
    ))
}

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
    for name in ty
        .imports(engine)
        .map(|(n, _)| n)
        .chain(ty.exports(engine).map(|(n, _)| n))
    {
        if let Some(refusal) = retired(name) {
            return Err(refusal);
        }
    }
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
        "[static]policy.create",
        (wit::RetryConfig,),
        (Result<ResourceAny, wit::ConfigError>,)
    );
    check!(
        "[method]policy.next-delay",
        (ResourceAny, u32, u64, u64),
        (u64,)
    );
    check!(
        "[method]policy.plan",
        (ResourceAny, u64),
        (Vec<wit::PlannedRetry>,)
    );
    check!(
        "[method]policy.decide",
        (ResourceAny, wit::RetryState, wit::Failure, u64),
        (wit::Decision,)
    );
    check!(
        "[method]policy.decide-guarded",
        (ResourceAny, wit::RetryState, wit::Failure, u64, wit::Guards),
        (exported::GuardedDecision,)
    );
    check!(
        "[method]policy.resolve-ticket",
        (ResourceAny, wit::SlotRequest, u64, u64),
        (Option<u64>,)
    );
    check!(
        "[method]policy.schedule",
        (ResourceAny, String, String, wit::RetryState, wit::Failure),
        (exported::Scheduled,)
    );
    Ok(())
}
