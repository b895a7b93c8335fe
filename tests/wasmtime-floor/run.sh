#!/usr/bin/env bash
# Builds and runs the bare-crossing bench (README.md here) on the policy component the workspace
# built. Needs Debian's rustc/cargo 1.96 (apt-get install rustc-web cargo-web): wasmtime 49
# needs rustc 1.96. Outputs go to target/wasmtime-floor, never the workspace's own target/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET RUSTC
[ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] \
    || { echo "needs Debian's rustc-web and cargo-web (rustc 1.96)" >&2; exit 1; }
component=$(ls -t "$repo"/target/release/build/ricochet-test-support-*/out/ricochet_policy.component.wasm 2>/dev/null | head -1 || true)
if [ -z "$component" ]; then
    (cd "$repo" && RICOCHET_REQUIRE_GUESTS=1 cargo build --release -p ricochet-test-support)
    component=$(ls -t "$repo"/target/release/build/ricochet-test-support-*/out/ricochet_policy.component.wasm | head -1)
fi
cd "$here"
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$repo/target/wasmtime-floor" /usr/bin/cargo build --release --quiet
echo "$component"
# The two versions alternate, so a change in the machine's load shows in both.
for round in 1 2 3; do
    for version in 48 49; do
        taskset -c "${CPU:-1}" "$repo/target/wasmtime-floor/release/wasmtime-floor-$version" "$component"
    done
done
