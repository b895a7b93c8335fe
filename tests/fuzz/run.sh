#!/usr/bin/env bash
# Runs ricochet's fuzz targets for a fixed number of executions each and prints, per target,
# the executions run, executions per second and the outcome. Not part of CI (tests/run-all.sh):
# ten million executions a target take tens of minutes. Inputs that ever found a bug are
# regression tests in the normal suite instead (core/tests/fuzz_regressions.rs,
# host/ricochet/tests/fuzz_regressions.rs).
#
#   tests/fuzz/run.sh                           every target, 10 000 000 executions each
#   tests/fuzz/run.sh -runs=100000 decision     one target, 100 000 executions
#   tests/fuzz/run.sh component -max_total_time=600   other libFuzzer flags are passed through
#
# Targets: config_yaml config_json server_delay decision component (see tests/fuzz/Cargo.toml).
#
# Needs the rustup nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer is
# built with the system C++ compiler. Builds land in target/fuzz (CARGO_TARGET_DIR overrides).
# The targets are built without a sanitizer (`-s none`: the code under test is safe Rust, so
# AddressSanitizer would halve the speed and find nothing) and with debug assertions, which
# turn integer overflow into a panic. One fuzzer process at a time (no -jobs/-workers): the
# machines running this are shared. The corpus grows in tests/fuzz/corpus/<target> (not
# committed); tests/fuzz/seeds/<target> (hand-written starting points) and
# tests/fuzz/regressions/<target> (inputs that once failed) are read first, with the target's
# dictionary from tests/fuzz/dicts. A crashing input is written to tests/fuzz/artifacts/<target>/:
# replay it with `cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none -a TARGET FILE`.
set -euo pipefail
cd "$(dirname "$0")/../.."

all_targets=(config_yaml config_json server_delay decision component)
runs=10000000
targets=()
passthrough=()
for arg in "$@"; do
    case $arg in
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -runs=*) runs=${arg#-runs=} ;;
        -*) passthrough+=("$arg") ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
fuzz_flags=(--fuzz-dir tests/fuzz --sanitizer none --debug-assertions)
for target in "${targets[@]}"; do
    cargo +nightly fuzz build "${fuzz_flags[@]}" "$target"
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
summary=()
failed=0
for target in "${targets[@]}"; do
    corpus=tests/fuzz/corpus/$target
    mkdir -p "$corpus"
    dirs=("$corpus")
    # Read-only inputs, run first: the committed seeds, and every input that once failed.
    for extra in seeds regressions; do
        [ -d "tests/fuzz/$extra/$target" ] && dirs+=("tests/fuzz/$extra/$target")
    done
    flags=(-runs="$runs" -print_final_stats=1 -timeout=10)
    [ -f "tests/fuzz/dicts/$target.dict" ] && flags+=(-dict="tests/fuzz/dicts/$target.dict")
    printf '\n== %s: %s executions\n' "$target" "$runs"
    log=$logs/$target.log
    start=$(date +%s)
    # Progress: libFuzzer's power-of-two "pulse" lines, the end, and any crash report.
    set +e
    cargo +nightly fuzz run "${fuzz_flags[@]}" "$target" "${dirs[@]}" -- \
        "${flags[@]}" "${passthrough[@]}" 2>&1 | tee "$log" |
        grep --line-buffered -E '^(#[0-9]+[[:space:]]+(pulse|DONE)|==[0-9]+==|INFO: seed|Done |SUMMARY)|panicked'
    fuzz_status=${PIPESTATUS[0]}
    set -e
    status=ok
    if [ "$fuzz_status" != 0 ]; then
        status="FAILED (exit $fuzz_status): the input is in tests/fuzz/artifacts/$target/"
        failed=1
    fi
    seconds=$(($(date +%s) - start))
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    summary+=("$(printf '%-13s %12s %10s %8s  %s' "$target" "${executions:-?}" "${per_second:-?}" "$seconds" "$status")")
done

printf '\n%-13s %12s %10s %8s  %s\n' target executions exec/s seconds result
printf '%s\n' "${summary[@]}"
exit $failed
