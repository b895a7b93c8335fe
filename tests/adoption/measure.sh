#!/usr/bin/env bash
# What a service pays to adopt ricochet, against backon: two throwaway service crates outside the
# workspace, each with one retried async function in the decorator form and one direct call,
# built from a cold target directory one after the other (so the ratio holds on a noisy machine).
#
#   tests/adoption/measure.sh                 # ricochet (default features) vs backon + tokio
#   tests/adoption/measure.sh --rounds 3      # alternate the two builds 3 times; medians and ratio
#   tests/adoption/measure.sh --all           # also ricochet with --features redis and --features component
#
# Prints: cold debug build seconds, crates in `cargo tree -e normal` (the service itself
# included), debug binary size, and the ratios to backon. Targets: build ≤ 3× backon's,
# crates ≤ 40. Registry sources already downloaded count as warm for both sides.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
all=0
rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
        --all) all=1 ;;
        --rounds) rounds="$2"; shift ;;
        *) echo "usage: $0 [--rounds N] [--all]" >&2; exit 2 ;;
    esac
    shift
done

service() { # name, [dependencies] lines, main.rs
    mkdir -p "$work/$1/src"
    printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n%s\n\n[workspace]\n' "$1" "$2" > "$work/$1/Cargo.toml"
    printf '%s\n' "$3" > "$work/$1/src/main.rs"
    # The versions the workspace tests with; cargo drops what this service does not use.
    cp "$here/Cargo.lock" "$work/$1/Cargo.lock"
}

service svc-ricochet "ricochet = { path = \"$here/host/ricochet\" }
tokio = { version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }" '
use ricochet::{with_retry, RetryConfig, RetryPolicy};

#[with_retry(retry_config = RetryConfig { max_attempts: 3, ..RetryConfig::default() },
             retry_on = (std::io::Error,), service_name = "lake")]
async fn call_service() -> Result<String, std::io::Error> {
    Ok("data".to_string())
}

#[tokio::main]
async fn main() {
    let policy = RetryPolicy::new(RetryConfig::default()).expect("valid preset");
    let direct = policy
        .execute_with_retry(|| async { Ok::<_, std::io::Error>("data") }, "stream", "data_fetch")
        .await;
    println!("{:?} {:?}", call_service().await.ok(), direct.ok());
}'

service svc-backon 'backon = "1"
tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }' '
use backon::{ExponentialBuilder, Retryable};

async fn fetch() -> Result<String, std::io::Error> {
    Ok("data".to_string())
}

async fn call_service() -> Result<String, std::io::Error> {
    fetch.retry(ExponentialBuilder::default().with_max_times(2).with_jitter()).await
}

#[tokio::main]
async fn main() {
    let direct = (|| async { Ok::<_, std::io::Error>("data") })
        .retry(ExponentialBuilder::default().with_max_times(2).with_jitter())
        .await;
    println!("{:?} {:?}", call_service().await.ok(), direct.ok());
}'

measure() { # dir, label
    local dir="$work/$1" label="$2"
    (cd "$dir" && cargo fetch -q >/dev/null 2>&1 || true)
    local start end secs crates size
    start=$(date +%s.%N)
    (cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build -q 2>"$dir/build.log") || {
        cat "$dir/build.log" >&2
        echo "build of $label failed" >&2
        exit 1
    }
    end=$(date +%s.%N)
    secs=$(echo "$end - $start" | bc)
    crates=$(cd "$dir" && cargo tree -e normal --prefix none 2>/dev/null | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u | grep -c .)
    size=$(stat -c %s "$dir/target/debug/$1")
    heavy=$(cd "$dir" && cargo tree -e normal --prefix none 2>/dev/null | awk '{print $1}' | { grep -E '^(wasmtime|cranelift-codegen|clap|plotters|hyper|redis|wit-component)$' || true; } | sort -u | tr '\n' ' ')
    printf '%-34s %8.1f s %6d crates %8.1f MiB  %s\n' "$label" "$secs" "$crates" "$(echo "$size / 1048576" | bc -l)" "${heavy:+heavy: $heavy}"
    echo "$secs $crates $size" > "$work/$1.result"
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

echo "cold debug builds on $(nproc) cores, $(date -u +%Y-%m-%d), $rounds round(s) each, alternating"
: > "$work/r.times"; : > "$work/b.times"
for round in $(seq "$rounds"); do
    rm -rf "$work/svc-ricochet/target" "$work/svc-backon/target"
    measure svc-ricochet "ricochet (default features) #$round"
    read -r secs r_crates r_size < "$work/svc-ricochet.result"; echo "$secs" >> "$work/r.times"
    measure svc-backon "backon + tokio #$round"
    read -r secs b_crates b_size < "$work/svc-backon.result"; echo "$secs" >> "$work/b.times"
done
r_secs=$(median < "$work/r.times"); b_secs=$(median < "$work/b.times")
printf '\nmedian cold build: ricochet %.1f s, backon %.1f s\n' "$r_secs" "$b_secs"
printf 'ratios ricochet / backon: build %.2f×, crates %d / %d = %.2f×, binary %.2f×\n' \
    "$(echo "$r_secs / $b_secs" | bc -l)" "$r_crates" "$b_crates" "$(echo "$r_crates / $b_crates" | bc -l)" "$(echo "$r_size / $b_size" | bc -l)"
printf 'targets: build ≤ 3× (%s), crates ≤ 40 (%s)\n' \
    "$([ "$(echo "$r_secs <= 3 * $b_secs" | bc)" = 1 ] && echo met || echo MISSED)" \
    "$([ "$r_crates" -le 40 ] && echo met || echo MISSED)"

if [ "$all" = 1 ]; then
    echo
    for f in redis component; do
        rm -rf "$work/svc-ricochet/target"
        sed -i "s|^ricochet = .*|ricochet = { path = \"$here/host/ricochet\", features = [\"$f\"] }|" "$work/svc-ricochet/Cargo.toml"
        measure svc-ricochet "ricochet --features $f"
    done
fi
