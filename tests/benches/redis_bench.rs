//! Redis throughput and latency, measured against `redis-benchmark` on the same server in the
//! same run.
//!
//! ```text
//! cargo bench -p ricochet-tests --bench redis_bench
//! ```
//!
//! Spawns one `redis-server` (`--save "" --appendonly no`) on a free loopback port and, per
//! round, measures:
//!
//! 1. the baseline, `redis-benchmark -t incr -c 50 -n N -q` (C client, 50 connections);
//! 2. slot acquisitions: `schedule_retry` on a `RedisCoordinator` (the executor's path, one
//!    script round trip each) from 50 concurrent tasks, with p50/p99 latency;
//! 3. the baseline again;
//! 4. idempotency `begin` + `complete` pairs on fresh keys (two round trips each), 50 tasks;
//! 5. the baseline again.
//!
//! Each ratio divides by the mean of the two baselines around it; the table shows medians over
//! rounds. `RICOCHET_BENCH_N` (default 200000) and `RICOCHET_BENCH_ROUNDS` (default 3) scale it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisIdempotencyStore, RedisSettings};
use ricochet_test_support as common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet::coordination::{schedule_retry, Scheduled};
use ricochet::idempotency::{Begin, IdempotencyStore};
use ricochet::RetryConfig;

const TASKS: u64 = 50;

fn redis_benchmark_incr(port: u16, n: u64) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "incr",
            "-c",
            "50",
            "-n",
            &n.to_string(),
            "-q",
        ])
        .output()
        .expect("redis-benchmark (package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "INCR: 123456.79 requests per second, p50=0.199 msec" (after \r-separated progress lines)
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))
        .expect("redis-benchmark output");
    line.split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("rate")
}

/// Runs `n` operations from [`TASKS`] tasks; returns (ops/s, sorted latencies in µs).
async fn drive<F, Fut>(n: u64, op: F) -> (f64, Vec<u32>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity((n / TASKS + 1) as usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return latencies;
                    }
                    let t = Instant::now();
                    op(i).await;
                    latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n as usize);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) runs a quick smoke
    // version.
    let testing = !std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("RICOCHET_BENCH_N", if testing { 2_000 } else { 200_000 });
    let rounds = env("RICOCHET_BENCH_ROUNDS", if testing { 1 } else { 3 }).max(1);
    let server = common::RedisServer::spawn();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = RedisSettings::single(server.url()).with_key_prefix("bench");
    let (coordinator, store) = runtime.block_on(async {
        let connection = RedisConnection::open(&settings).unwrap();
        let coordinator = Arc::new(RedisCoordinator::new(connection.clone()));
        coordinator.calibrate(3).await.unwrap();
        (
            coordinator,
            Arc::new(RedisIdempotencyStore::new(connection)),
        )
    });
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    // Warm-up: connection, script cache.
    runtime.block_on(slot_acquisitions(
        coordinator.clone(),
        policy,
        2_000,
        "warm",
    ));
    runtime.block_on(idempotency_pairs(store.clone(), 1_000, u64::MAX / 2));

    // Each measurement sits between two baseline runs, and each round repeats the sandwich:
    // the machine's load drifts, the ratios should not.
    let mut baselines = Vec::new();
    let (mut slot_ratios, mut pair_ratios) = (Vec::new(), Vec::new());
    let (mut slot_rates, mut pair_rates) = (Vec::new(), Vec::new());
    let (mut slot_latency, mut pair_latency) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let b0 = redis_benchmark_incr(server.port, n);
        let (rate, latency) =
            runtime.block_on(slot_acquisitions(coordinator.clone(), policy, n, "slots"));
        let b1 = redis_benchmark_incr(server.port, n);
        let (pairs, pair_lat) =
            runtime.block_on(idempotency_pairs(store.clone(), n / 2, round * n));
        let b2 = redis_benchmark_incr(server.port, n);
        slot_ratios.push(rate / ((b0 + b1) / 2.0));
        pair_ratios.push(pairs / ((b1 + b2) / 2.0));
        slot_rates.push(rate);
        pair_rates.push(pairs);
        slot_latency.extend(latency);
        pair_latency.extend(pair_lat);
        baselines.extend([b0, b1, b2]);
    }
    slot_latency.sort_unstable();
    pair_latency.sort_unstable();

    println!(
        "redis-server {} on 127.0.0.1:{}; {rounds} round(s) of {n} ops; {TASKS} concurrent tasks; medians over rounds",
        server_version(),
        server.port,
    );
    println!("| measure | result | vs INCR baseline |");
    println!("|---|---|---|");
    println!(
        "| `redis-benchmark -t incr -c 50 -n {n}` | {:.0} req/s (min {:.0}, max {:.0}) | 100 % |",
        median(&baselines),
        baselines.iter().copied().fold(f64::MAX, f64::min),
        baselines.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "| slot acquisitions (`schedule_retry`, 1 script round trip) | {:.0} /s | {:.0} % (target ≥ 80 %) |",
        median(&slot_rates),
        100.0 * median(&slot_ratios)
    );
    println!(
        "| slot acquisition latency p50 / p99 | {:.3} / {:.3} ms | |",
        percentile(&slot_latency, 0.5),
        percentile(&slot_latency, 0.99)
    );
    println!(
        "| idempotency begin + complete pairs (2 round trips) | {:.0} /s | {:.0} % (target ≥ 40 %) |",
        median(&pair_rates),
        100.0 * median(&pair_ratios)
    );
    println!(
        "| begin + complete pair latency p50 / p99 | {:.3} / {:.3} ms | |",
        percentile(&pair_latency, 0.5),
        percentile(&pair_latency, 0.99)
    );
}

async fn slot_acquisitions(
    coordinator: Arc<RedisCoordinator>,
    policy: ricochet_core::Policy,
    n: u64,
    operation: &'static str,
) -> (f64, Vec<u32>) {
    drive(n, move |i| {
        let c = coordinator.clone();
        async move {
            let s = schedule_retry(
                c.as_ref(),
                &policy,
                i,
                1,
                100_000,
                "bench",
                operation,
                Duration::from_secs(1),
                None,
            )
            .await;
            assert!(
                matches!(s, Scheduled::FireIn { fallback: None, .. }),
                "{s:?}"
            );
        }
    })
    .await
}

/// `n` begin + complete pairs on fresh keys numbered from `first`.
async fn idempotency_pairs(
    store: Arc<RedisIdempotencyStore>,
    n: u64,
    first: u64,
) -> (f64, Vec<u32>) {
    drive(n, move |i| {
        let s = store.clone();
        async move {
            let key = format!("bench-{}", first + i);
            match s.begin(&key, "fp", 30_000).await.unwrap() {
                Begin::Started(token) => s
                    .complete(&key, &token, b"{\"ok\":true}", 60_000)
                    .await
                    .unwrap(),
                other => panic!("{other:?}"),
            }
        }
    })
    .await
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn server_version() -> String {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    out.ok()
        .and_then(|v| {
            v.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|w| w.trim_start_matches("v=").to_string())
        })
        .unwrap_or_default()
}
