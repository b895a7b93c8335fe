//! Embeds the policy component (`ricochet-core` as a `ricochet:retry` component) in the
//! `ricochet` binary, for `--engine wasm`. Without a wasm toolchain the binary still builds and
//! says how to get one; installing one and running `cargo build` again embeds it.

use std::path::Path;

use ricochet_guest_build::{embed, Guest};

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    embed(
        &workspace,
        &[Guest {
            package: "ricochet-policy",
            dir: "policy",
            feature: None,
            const_name: "POLICY_COMPONENT",
            doc: "`ricochet-core` as a `ricochet:retry` policy component",
        }],
    );
}
