#!/usr/bin/env bash
# What a service pays to adopt ricochet, against backon: two throwaway service crates outside the
# workspace, each with one retried async function in the decorator form and one direct call,
# built from a cold target directory one after the other (so the ratio holds on a noisy machine).
#
#   tests/adoption/measure.sh            # ricochet (default features) vs backon + tokio
#   tests/adoption/measure.sh --all      # also ricochet with --features redis and --features component
#
# Prints: cold debug build seconds, crates in `cargo tree -e normal` (the service itself
# included), debug binary size, and the ratios to backon. Targets: build ≤ 3× backon's,
# crates ≤ 40. Registry sources already downloaded count as warm for both sides.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
all=0
[ "${1:-}" = "--all" ] && all=1

service() { # name, [dependencies] lines, main.rs
    mkdir -p "$work/$1/src"
    printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n%s\n\n[workspace]\n' "$1" "$2" > "$work/$1/Cargo.toml"
    printf '%s\n' "$3" > "$work/$1/src/main.rs"
    # The versions the workspace tests with; cargo drops what this service does not use.
    cp "$here/Cargo.lock" "$work/$1/Cargo.lock"
}

service svc-ricochet "ricochet = { path = \"$here/host/ricochet\" FEATURES }
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

measure() { # dir, features, label
    local dir="$work/$1" features="$2" label="$3"
    sed -i "s|FEATURES|$features|" "$dir/Cargo.toml"
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
    heavy=$(cd "$dir" && cargo tree -e normal --prefix none 2>/dev/null | awk '{print $1}' | grep -E '^(wasmtime|cranelift-codegen|clap|plotters|hyper|redis|wit-component)$' | sort -u | tr '\n' ' ')
    printf '%-34s %8.1f s %6d crates %8.1f MiB  %s\n' "$label" "$secs" "$crates" "$(echo "$size / 1048576" | bc -l)" "${heavy:+heavy: $heavy}"
    echo "$secs $crates $size" > "$work/$1.result"
}

echo "cold debug builds on $(nproc) cores, $(date -u +%Y-%m-%d)"
measure svc-ricochet "" "ricochet (default features)"
read -r r_secs r_crates r_size < "$work/svc-ricochet.result"
measure svc-backon "" "backon + tokio"
read -r b_secs b_crates b_size < "$work/svc-backon.result"
printf '\nratios ricochet / backon: build %.2f×, crates %.2f×, binary %.2f×\n' \
    "$(echo "$r_secs / $b_secs" | bc -l)" "$(echo "$r_crates / $b_crates" | bc -l)" "$(echo "$r_size / $b_size" | bc -l)"
printf 'targets: build ≤ 3× (%s), crates ≤ 40 (%s)\n' \
    "$([ "$(echo "$r_secs <= 3 * $b_secs" | bc)" = 1 ] && echo met || echo MISSED)" \
    "$([ "$r_crates" -le 40 ] && echo met || echo MISSED)"

if [ "$all" = 1 ]; then
    echo
    for f in redis component; do
        rm -rf "$work/svc-ricochet/target"
        sed -i "s|^ricochet = .*|ricochet = { path = \"$here/host/ricochet\", features = [\"$f\"] }|" "$work/svc-ricochet/Cargo.toml"
        sed -i "s|FEATURES||" "$work/svc-ricochet/Cargo.toml"
        measure svc-ricochet "" "ricochet --features $f"
    done
fi
