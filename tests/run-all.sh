#!/usr/bin/env bash
# The test command: what a person runs and what CI runs (.ci/run calls exactly this).
#
# On a fresh machine it first installs what the tests need and is missing: a wasm32 toolchain
# (the rustup target where it can be added, else Debian's rustc-web route), redis-server,
# promtool, python3-venv, and Node with npm. Then: rustfmt, clippy (warnings are errors), every
# test in the workspace (guests must build: RICOCHET_REQUIRE_GUESTS=1), a soak smoke, a wasm
# toolchain installed after a first build, `cargo package` and `cargo doc` of the library
# crates, the no-alloc build of core, the Envoy filter in a proxy-wasm host, the Python package
# (host/python/test.sh: a virtualenv, maturin, pytest), the JavaScript package (host/js/test.sh:
# npm dependencies, Node and workerd) and the Prometheus alert-rule unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

apt_ready=0
apt_install() {
    if [ "$apt_ready" = 0 ]; then
        apt-get update -qq
        apt_ready=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

say "toolchains and services"
sysroot=$(rustc --print sysroot)
if [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
    echo "wasm32: rustup target"
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && [ -x /usr/bin/cargo ]; then
    echo "wasm32: Debian rustc-web route"
elif command -v apt-get >/dev/null; then
    # These machines' rustup cannot download targets: Debian's route is the verified one.
    echo "wasm32: installing Debian's rustc-web, cargo-web, rust-web-src"
    apt_install rustc-web cargo-web rust-web-src
else
    echo "wasm32: adding the rustup target"
    timeout 300 rustup target add wasm32-unknown-unknown
fi
command -v redis-server >/dev/null || { echo "installing redis-server"; apt_install redis-server; }
command -v openssl >/dev/null || { echo "installing openssl (TLS test certificates)"; apt_install openssl; }
command -v promtool >/dev/null || { echo "installing promtool (Debian's prometheus package)"; apt_install prometheus; }
# host/python/test.sh makes a virtualenv: Debian splits venv and ensurepip out of python3.
python3 -c 'import venv, ensurepip' 2>/dev/null || { echo "installing python3-venv"; apt_install python3 python3-venv; }
command -v npm >/dev/null || { echo "installing Node and npm (the JavaScript package)"; apt_install nodejs npm; }

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy"
export RICOCHET_REQUIRE_GUESTS=1
cargo clippy --workspace --all-targets -- -D warnings
# The library alone, in the feature sets a service may pick (the workspace build unifies them all).
for features in "--no-default-features" "--features prometheus" \
    "--no-default-features --features yaml,anyhow,opentelemetry" "--no-default-features --features redis" \
    "--no-default-features --features redis-layout" "--no-default-features --features component" \
    "--no-default-features --features tower" \
    "--no-default-features --features reqwest" "--no-default-features --features tonic" \
    "--no-default-features --features interop"; do
    echo "ricochet $features"
    cargo clippy -p ricochet $features -- -D warnings
done

say "cargo test"
cargo test --workspace

# A short soak (the full 10 000-task runs and the fault runs are in RELIABILITY.md): exits non-zero
# unless every failure came from the service and no operation was lost or duplicated.
say "soak smoke: 200 tasks, 10 s, Redis coordination and idempotency"
cargo test -p ricochet-cli --bench soak -- --tasks 200 --duration 10 --think-ms 200..600

say "a wasm toolchain installed after a first build is picked up by the next cargo build"
tests/toolchain-appears.sh

say "the library crates package and document cleanly"
cargo package -p ricochet-core -p ricochet-macros -p ricochet --allow-dirty --quiet
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p ricochet-core -p ricochet-macros -p ricochet --all-features --quiet

if [ -x core/check-no-std.sh ]; then
    say "core builds without std and alloc"
    core/check-no-std.sh
fi

if [ -x guests/envoy-filter/test.sh ]; then
    say "Envoy filter in a proxy-wasm host"
    guests/envoy-filter/test.sh
fi

say "Python binding"
host/python/test.sh
say "JavaScript package"
host/js/test.sh

if [ -d host/ricochet/alerts ]; then
    say "promtool test rules"
    promtool check rules host/ricochet/alerts/*.rules.yaml
    promtool test rules host/ricochet/alerts/*.test.yaml
fi

say "all tests passed"
