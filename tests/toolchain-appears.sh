#!/usr/bin/env bash
# Installing a wasm toolchain after a first build and running `cargo build` again embeds the policy
# component (issue: the build script used to ignore a toolchain installed after the first build).
#
# The CLI's build script watches the paths it probes. This script moves the probe for Debian's
# route (/usr/bin/cargo, /usr/bin/rustc) under an empty root with RICOCHET_WASM_PROBE_ROOT, builds
# (no toolchain: the binary says how to get one), "installs" the toolchain by linking Debian's
# cargo and rustc into that root, and runs the same `cargo build` again: the binary must now run
# `plan --engine wasm`. A third build must not run the build script again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/cargo ] || [ ! -x /usr/bin/rustc ]; then
    echo "toolchain-appears: Debian's rustc-web/cargo-web are not installed; nothing to install into the probe root" >&2
    exit 1
fi
sysroot=$(rustc --print sysroot)
if [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
    echo "toolchain-appears: skipped — the rustup wasm32 target is installed, and it wins over the probed route"
    exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
export RICOCHET_WASM_PROBE_ROOT="$root"
unset RICOCHET_REQUIRE_GUESTS

build() { cargo build -p ricochet-cli --bin ricochet 2>&1; }
bin="${CARGO_TARGET_DIR:-target}/debug/ricochet"

echo "1. build with no wasm toolchain"
build | grep -E "warning: .*not embedded|Finished" || true
if "$bin" plan --engine wasm --seed 1 >/dev/null 2>"$root.err"; then
    echo "FAIL: a build without a toolchain ran --engine wasm" >&2
    exit 1
fi
grep -q "built without the policy component" "$root.err" || { cat "$root.err" >&2; exit 1; }
echo "   ok: $(head -c 120 "$root.err")…"

echo "2. install the toolchain (link Debian's cargo and rustc into the probe root), cargo build again"
mkdir -p "$root/usr/bin"
ln -s /usr/bin/cargo /usr/bin/rustc "$root/usr/bin/"
out=$(build)
echo "$out" | grep -q "Compiling ricochet-cli" || { echo "$out" >&2; echo "FAIL: the build script did not run again" >&2; exit 1; }
"$bin" plan --engine wasm --seed 1 >/dev/null
echo "   ok: plan --engine wasm runs"

echo "3. build again with nothing changed: the build script stays quiet"
out=$(build)
if echo "$out" | grep -q "Compiling ricochet-cli"; then
    echo "$out" >&2
    echo "FAIL: nothing changed, yet the CLI was rebuilt" >&2
    exit 1
fi
echo "   ok"
rm -f "$root.err"
