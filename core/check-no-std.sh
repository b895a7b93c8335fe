#!/usr/bin/env bash
# Proves that ricochet-core needs neither std nor alloc: builds it for targets that have no
# std at all, with only `core` (and compiler_builtins) built from source. If ricochet-core or
# any dependency (libm, heapless, serde) reaches for `alloc` or `std`, the build fails with
# "can't find crate for `alloc`" and so does this script.
#
# rustup cannot download targets on these machines, so this uses Debian's toolchain:
#   apt-get install rustc-web cargo-web rust-web-src
# (rustc/cargo in /usr/bin, the standard library's source under /usr/lib/rustlib/src).
#
# Usage: core/check-no-std.sh [TARGET...]   (default: x86_64-unknown-none wasm32v1-none)
# Artifacts go to target/no-std at the repository root.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rustc=/usr/bin/rustc
cargo=/usr/bin/cargo
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(x86_64-unknown-none wasm32v1-none)
fi

fail() {
    echo "check-no-std: $*" >&2
    exit 1
}

missing=()
[[ -x $rustc ]] || missing+=("$rustc (package rustc-web)")
[[ -x $cargo ]] || missing+=("$cargo (package cargo-web)")
if [[ -x $rustc ]]; then
    core_src="$("$rustc" --print sysroot)/lib/rustlib/src/rust/library/core"
    [[ -f $core_src/Cargo.toml ]] || missing+=("$core_src (package rust-web-src)")
fi
if ((${#missing[@]})); then
    printf 'check-no-std: the Debian Rust toolchain is missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install it with: apt-get update && apt-get install -y rustc-web cargo-web rust-web-src\n' >&2
    exit 1
fi

known_targets="$("$rustc" --print target-list)"
for target in "${targets[@]}"; do
    grep -qx -- "$target" <<<"$known_targets" || fail "$rustc does not know the target $target"
done

# Nothing from an outer build may leak in: this toolchain, this target dir, no wrappers or flags.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET
export RUSTC="$rustc" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/no-std"

build() { # target, extra cargo args...
    local target=$1
    shift
    "$cargo" build --release --target "$target" -Zbuild-std=core "$@"
}

# The check must be able to fail: a crate that links alloc must not build this way.
canary="$CARGO_TARGET_DIR/alloc-canary"
mkdir -p "$canary/src"
printf '[package]\nname = "alloc-canary"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n' \
    >"$canary/Cargo.toml"
printf '#![no_std]\nextern crate alloc;\npub fn f() -> alloc::vec::Vec<u8> { alloc::vec::Vec::new() }\n' \
    >"$canary/src/lib.rs"
echo "check-no-std: canary (a crate using alloc) must fail to build for ${targets[0]}"
if (cd "$canary" && build "${targets[0]}" --quiet) 2>"$canary/build.log"; then
    fail "a crate using alloc built with -Zbuild-std=core: this check would prove nothing"
fi
grep -q "can't find crate for \`alloc\`" "$canary/build.log" ||
    fail "the canary failed for another reason than missing alloc; see $canary/build.log"

cd "$root"
log="$CARGO_TARGET_DIR/ricochet-core-build.log"
for target in "${targets[@]}"; do
    for features in "" serde; do
        what="ricochet-core for $target${features:+ with features $features}"
        echo "check-no-std: $what"
        # pipefail (set above) makes the pipeline fail when the build does.
        if ! build "$target" -p ricochet-core ${features:+--features "$features"} 2>&1 | tee "$log"; then
            if grep -q "can't find crate for \`\(alloc\|std\)\`" "$log"; then
                fail "$what needs more than core: something in its dependency graph uses alloc or std (see above)"
            fi
            fail "$what did not build (see above)"
        fi
    done
done
echo "check-no-std: ok: ricochet-core builds with core only for ${targets[*]}"
