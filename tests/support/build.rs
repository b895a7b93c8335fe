//! Builds every guest the tests run: the policy, the third-party linear policy, and one hostile
//! policy per misbehaviour (the same crate with a different feature each time). Test guests live
//! here, with the tests — never in a crate a user ships.

use std::path::Path;

use ricochet_guest_build::{embed, Guest};

const fn hostile(feature: &'static str, const_name: &'static str, doc: &'static str) -> Guest {
    Guest {
        package: "ricochet-hostile-policy",
        dir: "hostile",
        feature: Some(feature),
        const_name,
        doc,
    }
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    embed(
        &workspace,
        &[
            Guest {
                package: "ricochet-policy",
                dir: "policy",
                feature: None,
                const_name: "POLICY_COMPONENT",
                doc: "`ricochet-core` as a `ricochet:retry` policy component",
            },
            Guest {
                package: "ricochet-linear-policy",
                dir: "linear-policy",
                feature: None,
                const_name: "LINEAR_POLICY_COMPONENT",
                doc: "A third-party policy of the same world: linear backoff, written without `ricochet-core`",
            },
            hostile("spin", "HOSTILE_SPIN_COMPONENT", "Test guest: every export loops forever"),
            hostile("hog", "HOSTILE_HOG_COMPONENT", "Test guest: every export allocates until memory runs out"),
            hostile("trap", "HOSTILE_TRAP_COMPONENT", "Test guest: every export executes `unreachable`"),
            hostile("forger", "HOSTILE_FORGER_COMPONENT", "Test guest: `decide` breaks the contract (forged guards, delays and retries past the config), the lie chosen by `state.seed`"),
            hostile("intruder", "HOSTILE_INTRUDER_COMPONENT", "Test guest: `decide` and `schedule` abuse the imports (foreign names, store floods, huge logs), the attack chosen by `state.seed`"),
        ],
    );
}
