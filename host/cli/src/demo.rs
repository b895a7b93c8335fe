//! `ricochet demo`: the main job. A herd of clients against a flaky service on loopback, through
//! `execute_idempotent` (retries + coordinated slots + deduplication), with `/metrics` served
//! while it runs and a summary at the end.
//!
//! The service fails in the ways real ones do: 503 bursts (an outage of 600 ms every 4 s),
//! 429 with `Retry-After: 1` on one request in twenty, and one request in thirty-three that
//! answers after 2 s (past the 300 ms attempt timeout). One submission in ten is a duplicate of
//! the client's previous order (a resend), which idempotency must not run twice.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::flaky::{get, FlakyServer, Reply};
use anyhow::Result;
use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ricochet::idempotency::{IdempotencyError, Origin};
use ricochet::logging::{CapturedLines, SeedJsonLayer};
use ricochet::metrics::{render, RetryMetrics};
use ricochet::RetryError;

use crate::cli::{build_policy, Backends, PolicyArgs};

#[derive(Args)]
pub struct DemoArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// How long the clients keep submitting orders, e.g. `10s`, `2s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = crate::run::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Serve Prometheus metrics here while the demo runs (`off` to disable).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: String,
    /// Bound on each attempt.
    #[arg(long, default_value = "300ms", value_parser = crate::run::parse_duration)]
    attempt_timeout: Duration,
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    attempts: AtomicU64,
    successes: AtomicU64,
    duplicates_prevented: AtomicU64,
    unguarded: AtomicU64,
    gave_up: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Vec<u64>>,
}

/// What the demo has done so far, and how fast, for the live progress line.
#[derive(Default)]
struct Progress {
    last: Option<(Duration, u64, usize)>,
}

impl Progress {
    /// `  3.0s  calls 7421 (2480/s)  retries 812 (270/s)  slots used 96, at most 21 retries in one  gave up 12`
    fn line(
        &mut self,
        now: Duration,
        tally: &Tally,
        retries: &[(u64, u64)],
        slot_us: u64,
    ) -> String {
        let calls = tally.calls.load(Ordering::Relaxed);
        let (last_t, last_calls, last_retries) = self.last.unwrap_or_default();
        let dt = (now - last_t).as_secs_f64().max(1e-3);
        let mut per_slot: BTreeMap<u64, u32> = BTreeMap::new();
        for (fire_us, _) in retries {
            *per_slot.entry(fire_us / slot_us).or_insert(0) += 1;
        }
        let gave_up: u64 = tally.gave_up.lock().map(|g| g.values().sum()).unwrap_or(0);
        self.last = Some((now, calls, retries.len()));
        format!(
            "{:>5.1}s  calls {calls} ({:.0}/s)  retries {} ({:.0}/s)  slots used {}, at most {} retries in one  gave up {gave_up}",
            now.as_secs_f64(),
            calls.saturating_sub(last_calls) as f64 / dt,
            retries.len(),
            retries.len().saturating_sub(last_retries) as f64 / dt,
            per_slot.len(),
            per_slot.values().max().copied().unwrap_or(0),
        )
    }
}

fn flaky_script(started: Instant) -> impl Fn(u64, &str) -> Reply + Send + Sync + 'static {
    move |n, _path| {
        let t = started.elapsed().as_millis() % 4000;
        if (1000..1600).contains(&t) {
            Reply::Status(503)
        } else if n % 20 == 7 {
            Reply::RetryAfter(429, "1".into())
        } else if n % 33 == 5 {
            Reply::Slow(Duration::from_secs(2), "late".into())
        } else {
            Reply::Ok(format!("order #{n} accepted"))
        }
    }
}

async fn serve_metrics(
    addr: SocketAddr,
    registry: prometheus::Registry,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    Ok((
        bound,
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let body = render(&registry);
                        async move {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }),
    ))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode> {
    let backends = Backends::from_args(&args.policy)?;
    let registry = prometheus::Registry::new();
    let metrics = RetryMetrics::register(&registry)?;
    let logs = CapturedLines::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(SeedJsonLayer::new(logs.clone())),
        );
    }
    let started = Instant::now();
    // When each retry will hit the service (µs since start): the herd the slots spread out.
    // (with the slot, backoff only): the latter is where the same retries would land unslotted.
    let retry_fires: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let fires = retry_fires.clone();
    let policy = build_policy(&backends, Some(metrics))?
        .with_attempt_timeout(args.attempt_timeout)
        .with_notify(move |e| {
            if let Ok(mut f) = fires.lock() {
                let now = started.elapsed();
                f.push((
                    (now + e.delay).as_micros() as u64,
                    (now + e.backoff).as_micros() as u64,
                ));
            }
        });
    let options = ricochet::idempotency::IdempotencyOptions::default();
    let server = FlakyServer::start(flaky_script(started)).await?;
    let metrics_task = if args.metrics_addr == "off" {
        None
    } else {
        let addr: SocketAddr = args.metrics_addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "--metrics-addr: `{}` is not an address like 127.0.0.1:9464",
                args.metrics_addr
            )
        })?;
        match serve_metrics(addr, registry.clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                eprintln!("warning: --metrics-addr {addr}: {e}; continuing without /metrics");
                None
            }
        }
    };
    let backend_name = if backends.redis.is_some() {
        "redis"
    } else {
        "in-memory"
    };
    eprintln!(
        "ricochet demo: {} clients for {:.1}s against a flaky service on {} · policy {} ({} engine) · coordination {backend_name}{}",
        args.clients,
        args.duration.as_secs_f64(),
        server.addr(),
        args.policy.policy,
        policy.engine_name(),
        match &metrics_task {
            Some((addr, _)) => format!(" · metrics on http://{addr}/metrics"),
            None => String::new(),
        }
    );

    let tally = Arc::new(Tally::default());
    let deadline = started + args.duration;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..args.clients {
        let (policy, options, tally, addr) = (
            policy.clone(),
            options.clone(),
            tally.clone(),
            server.addr(),
        );
        clients.spawn(async move {
            let mut order = 0u64;
            let mut submission = u64::from(client);
            while Instant::now() < deadline {
                // One submission in ten resends the previous order (same key, same payload).
                submission += 1;
                let resend = order > 0 && submission % 10 == 0;
                if !resend {
                    order += 1;
                }
                let key = format!("client-{client}-order-{order}");
                let path = format!("/orders/{client}/{order}");
                let call_started = Instant::now();
                tally.calls.fetch_add(1, Ordering::Relaxed);
                let t = tally.clone();
                let result = policy
                    .execute_idempotent_with(
                        &options,
                        &key,
                        &path,
                        || {
                            t.attempts.fetch_add(1, Ordering::Relaxed);
                            get(addr, &path)
                        },
                        "orders",
                        "submit",
                    )
                    .await;
                let latency = call_started.elapsed().as_micros() as u64;
                if let Ok(mut l) = tally.latencies_us.lock() {
                    l.push(latency);
                }
                // Think time between orders: each client submits about 25 orders a second.
                tokio::time::sleep(Duration::from_millis(40)).await;
                match result {
                    Ok(outcome) => {
                        tally.successes.fetch_add(1, Ordering::Relaxed);
                        match outcome.origin {
                            Origin::Replayed => {
                                tally.duplicates_prevented.fetch_add(1, Ordering::Relaxed);
                            }
                            // Both leave later duplicates free to run it again.
                            Origin::Unguarded | Origin::Unrecorded => {
                                tally.unguarded.fetch_add(1, Ordering::Relaxed);
                            }
                            Origin::Ran => {}
                        }
                    }
                    Err(e) => {
                        let reason = match e {
                            IdempotencyError::Operation(RetryError::MaxRetriesExceeded(m)) => {
                                m.reason.name().to_string()
                            }
                            IdempotencyError::Operation(RetryError::NonRetryable(_)) => {
                                "non_retryable".into()
                            }
                            IdempotencyError::Operation(RetryError::CircuitOpen { .. }) => {
                                "circuit_open".into()
                            }
                            IdempotencyError::InProgress => "in_progress".into(),
                            IdempotencyError::Mismatch => "mismatch".into(),
                            other => other.to_string(),
                        };
                        if let Ok(mut g) = tally.gave_up.lock() {
                            *g.entry(reason).or_insert(0) += 1;
                        }
                    }
                }
            }
        });
    }

    // Live progress: in place on a terminal (5 times a second), one plain line a second
    // otherwise (logs, CI).
    let terminal = std::io::stderr().is_terminal();
    let tick = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let slot_us = backends.config.validate()?.slot_width_us().max(1);
    let mut progress = Progress::default();
    let mut next_tick = tokio::time::Instant::now() + tick;
    while !clients.is_empty() {
        tokio::select! {
            _ = clients.join_next() => {}
            _ = tokio::time::sleep_until(next_tick) => {
                next_tick += tick;
                let retries = retry_fires.lock().map(|f| f.clone()).unwrap_or_default();
                let line = progress.line(started.elapsed(), &tally, &retries, slot_us);
                if terminal {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }
    if terminal {
        eprintln!();
    }
    let wall = started.elapsed();

    // Retries landing per slot window: what coordination spreads out.
    let fires = retry_fires.lock().map(|f| f.clone()).unwrap_or_default();
    let peak_of = |times: &mut dyn Iterator<Item = u64>| -> (u64, f64) {
        let mut per_slot: BTreeMap<u64, u64> = BTreeMap::new();
        let mut n = 0u64;
        for t in times {
            *per_slot.entry(t / slot_us).or_insert(0) += 1;
            n += 1;
        }
        let peak = per_slot.values().copied().max().unwrap_or(0);
        (
            peak,
            if per_slot.is_empty() {
                0.0
            } else {
                n as f64 / per_slot.len() as f64
            },
        )
    };
    let (peak, mean) = peak_of(&mut fires.iter().map(|f| f.0));
    let (peak_unslotted, _) = peak_of(&mut fires.iter().map(|f| f.1));
    let mut latencies = tally
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let calls = tally.calls.load(Ordering::Relaxed);
    let attempts = tally.attempts.load(Ordering::Relaxed);
    let successes = tally.successes.load(Ordering::Relaxed);
    let gave_up = tally.gave_up.lock().map(|g| g.clone()).unwrap_or_default();
    let gave_up_total: u64 = gave_up.values().sum();
    let counted = |name: &str| -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
            .sum::<f64>() as u64
    };
    let fallbacks = counted("retry_coordination_fallback_total");

    println!();
    println!(
        "ricochet demo summary ({:.1}s, {} clients, policy {}, {} engine, {backend_name} coordination)",
        wall.as_secs_f64(),
        args.clients,
        args.policy.policy,
        policy.engine_name()
    );
    println!("  {:<34} {:>10}", "logical calls", calls);
    println!("  {:<34} {:>10}", "attempts sent (incl. retries)", attempts);
    println!(
        "  {:<34} {:>10}",
        "retries",
        attempts.saturating_sub(calls - tally.duplicates_prevented.load(Ordering::Relaxed))
    );
    println!("  {:<34} {:>10}", "successes", successes);
    println!("  {:<34} {:>10}", "gave up", gave_up_total);
    for (reason, n) in &gave_up {
        println!("  {:<34} {:>10}", format!("  · {reason}"), n);
    }
    println!(
        "  {:<34} {:>10}",
        "duplicates prevented",
        tally.duplicates_prevented.load(Ordering::Relaxed)
    );
    println!(
        "  {:<34} {:>10}",
        "not deduplicated (store down)",
        tally.unguarded.load(Ordering::Relaxed)
    );
    println!("  {:<34} {:>10}", "coordination fallbacks", fallbacks);
    if backends.component.is_some() {
        println!(
            "  {:<34} {:>10}",
            "policy fallbacks (to native)",
            counted("retry_policy_fallback_total")
        );
    }
    println!(
        "  {:<34} {:>10}",
        "requests seen by the service",
        server.stats().requests.load(Ordering::Relaxed)
    );
    println!(
        "  {:<34} {:>10}",
        format!("peak retries in one {} ms slot", slot_us / 1000),
        peak
    );
    println!(
        "  {:<34} {:>10}",
        "  same retries without slots", peak_unslotted
    );
    println!(
        "  {:<34} {:>10.1}",
        format!("mean retries per busy {} ms slot", slot_us / 1000),
        mean
    );
    println!(
        "  {:<34} {:>7.1} ms",
        "p50 end-to-end latency",
        percentile(&latencies, 0.50) * 1e3
    );
    println!(
        "  {:<34} {:>7.1} ms",
        "p99 end-to-end latency",
        percentile(&latencies, 0.99) * 1e3
    );
    let lines = logs.lines();
    println!(
        "  {:<34} {:>10}",
        "JSON log lines (seed format)",
        lines.len()
    );
    if let Some(example) = lines.iter().find(|l| l.contains("\"INFO\"")) {
        println!("\nexample log line:\n  {example}");
    }
    let text = render(&registry);
    println!(
        "\nexample metrics (of {} lines on /metrics):",
        text.lines().count()
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with("retry_attempts_total")
                || l.starts_with("retry_failure_total")
                || l.starts_with("retry_success_total")
        })
        .take(8)
    {
        println!("  {line}");
    }
    if let Some((_, task)) = metrics_task {
        task.abort();
    }
    Ok(ExitCode::SUCCESS)
}
