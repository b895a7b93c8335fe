#!/usr/bin/env bash
# Builds the ricochet Envoy filter for wasm32-unknown-unknown, checks that it fits in 256 KiB and
# runs its tests in a real proxy-wasm host (guests/envoy-filter-tests). People and the project's
# test command run this same script. Idempotent; a warm run only re-checks and re-tests.
#
# Toolchains (DESIGN.md, "The WASM toolchain"):
#   build  - rustup's wasm32-unknown-unknown target when installed (`rustup target add
#            wasm32-unknown-unknown`), else Debian's rustc-web/cargo-web/rust-web-src 1.96 with
#            -Zbuild-std, linked by rustup's rust-lld;
#   tests  - Debian's cargo 1.96 (proxy-wasm-host 0.2 needs wasmtime 49, so rustc >= 1.96).
# Build outputs go to target/envoy-filter and target/envoy-filter-tests (never target/ itself,
# so this never waits on, or disturbs, the workspace's own build).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
filter_target="$repo/target/envoy-filter"
tests_target="$repo/target/envoy-filter-tests"
wasm="$filter_target/wasm32-unknown-unknown/release/ricochet_envoy_filter.wasm"
max_bytes=$((256 * 1024))

debian_rustc=/usr/bin/rustc
debian_cargo=/usr/bin/cargo
debian_std_src=/usr/lib/rustlib/src/rust/library
install_hint="either rustup's target (rustup target add wasm32-unknown-unknown) or Debian's
toolchain (apt-get update && apt-get install rustc-web cargo-web rust-web-src, plus rustup's
stable toolchain for its rust-lld linker)"

fail() {
    echo "envoy-filter/test.sh: $*" >&2
    exit 1
}

# Nothing from an outer cargo may leak into ours.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_TARGET_DIR \
    CARGO_BUILD_TARGET RUSTC RUSTDOC RUSTC_BOOTSTRAP CARGO_MAKEFLAGS

# --- 1. build the filter -------------------------------------------------------------------------
sysroot=""
if command -v rustc >/dev/null 2>&1; then
    sysroot="$(rustc --print sysroot)"
fi
if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ]; then
    echo "envoy-filter: building with $(rustc --version) and its wasm32-unknown-unknown target"
    (cd "$here" && CARGO_TARGET_DIR="$filter_target" \
        cargo build --release --target wasm32-unknown-unknown)
elif [ -x "$debian_cargo" ] && [ -x "$debian_rustc" ] && [ -d "$debian_std_src" ]; then
    linker="${sysroot:+$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld}"
    if [ -z "$linker" ] || [ ! -x "$linker" ]; then
        linker="$(command -v rust-lld || command -v wasm-ld || true)"
    fi
    [ -n "$linker" ] || fail "no wasm linker: rustup's rust-lld is missing. Install $install_hint"
    echo "envoy-filter: building with Debian's $("$debian_rustc" --version) and -Zbuild-std"
    (cd "$here" && CARGO_TARGET_DIR="$filter_target" RUSTC="$debian_rustc" RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
        "$debian_cargo" build --release --target wasm32-unknown-unknown \
        -Zbuild-std=std,panic_abort)
else
    fail "cannot build for wasm32-unknown-unknown: neither install is present. Install $install_hint"
fi
[ -f "$wasm" ] || fail "the build left no $wasm"

# --- 2. size budget ------------------------------------------------------------------------------
size="$(stat -c %s "$wasm")"
echo "envoy-filter: $wasm is $size bytes ($((size / 1024)) KiB; budget $((max_bytes / 1024)) KiB)"
[ "$size" -le "$max_bytes" ] || fail "the filter is $size bytes, over the $max_bytes-byte budget"

# --- 3. tests in proxy-wasm-host -----------------------------------------------------------------
[ -x "$debian_cargo" ] && [ -x "$debian_rustc" ] ||
    fail "the tests need Debian's cargo 1.96 (apt-get install rustc-web cargo-web): missing $debian_cargo"
(cd "$here/../envoy-filter-tests" && CARGO_TARGET_DIR="$tests_target" RUSTC="$debian_rustc" \
    RICOCHET_ENVOY_FILTER_WASM="$wasm" "$debian_cargo" test)
