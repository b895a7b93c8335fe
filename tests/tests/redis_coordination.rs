//! Coordination on real Redis servers: herd spreading, clock skew, faults (kill -9, SIGSTOP),
//! TLS and AUTH, and secrets kept out of errors and logs. Every server is spawned by the test
//! on a loopback port (the fault tests need their own server even when `REDIS_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ricochet::redis::{RedisConnection, RedisCoordinator, RedisSettings};
use ricochet_test_support as common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{unique_prefix, RedisServer};
use prometheus::Registry;
use ricochet::coordination::{
    schedule_retry, Coordinator, Scheduled, DEFAULT_COORDINATION_DEADLINE,
};
use ricochet::metrics::RetryMetrics;
use ricochet::{RetryConfig, RetryPolicy};

fn coordinator(settings: &RedisSettings) -> RedisCoordinator {
    RedisCoordinator::new(RedisConnection::open(settings).unwrap())
}

fn metrics() -> RetryMetrics {
    RetryMetrics::register(&Registry::new()).unwrap()
}

fn fallbacks(m: &RetryMetrics, service: &str, operation: &str) -> u64 {
    ["timeout", "connection", "backend", "invalid"]
        .iter()
        .map(|r| {
            m.coordination_fallback
                .with_label_values(&[service, operation, r])
                .get()
        })
        .sum()
}

/// A delay that puts `now + delay` at `fraction` of a window on `c`'s clock, at least one
/// window ahead.
fn delay_to_window_fraction(c: &dyn Coordinator, window_us: u64, fraction: f64) -> u64 {
    let now = c.now_us();
    let next_start = (now / window_us + 1) * window_us;
    next_start + (window_us as f64 * fraction) as u64 - now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_1000_spreads_evenly_over_the_slots() {
    let (settings, _server) = common::single();
    for config in [RetryConfig::DEFAULT, RetryConfig::AGGRESSIVE] {
        let policy = config.validate().unwrap();
        let c = Arc::new(coordinator(&settings));
        c.calibrate(3).await.unwrap();
        // Aim at the middle of a window so the whole herd asks for the same one.
        let delay_us = delay_to_window_fraction(c.as_ref(), policy.window_us(), 0.5);
        let m = metrics();
        let tasks: Vec<_> = (0..1000u64)
            .map(|seed| {
                let (c, m) = (c.clone(), m.clone());
                tokio::spawn(async move {
                    // A generous deadline: this test is about spreading, not about latency.
                    let deadline = Duration::from_secs(5);
                    schedule_retry(
                        c.as_ref(),
                        &policy,
                        seed,
                        1,
                        delay_us,
                        "herd",
                        "op",
                        deadline,
                        Some(&m),
                    )
                    .await
                })
            })
            .collect();
        let slot_count = policy.slot_count() as usize;
        let mut per_slot = vec![0u32; slot_count];
        for t in tasks {
            match t.await.unwrap() {
                Scheduled::FireIn {
                    slot,
                    fallback: None,
                    delay_us: d,
                } => {
                    per_slot[slot as usize] += 1;
                    assert!(
                        d + 50_000 >= delay_us,
                        "fires after its backoff delay: {d} < {delay_us}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let bound = 1000u32.div_ceil(slot_count as u32) + 1;
        assert!(
            per_slot.iter().all(|&n| n <= bound),
            "slots {per_slot:?} exceed {bound}"
        );
        assert_eq!(per_slot.iter().sum::<u32>(), 1000);
        assert_eq!(fallbacks(&m, "herd", "op"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_with_clocks_300_ms_apart_share_one_window() {
    let (settings, _server) = common::single();
    let m = metrics();
    let on_time = coordinator(&settings).with_metrics(m.clone());
    let late = coordinator(&settings).with_local_clock_skew_us(-300_000);
    on_time.calibrate(5).await.unwrap();
    late.calibrate(5).await.unwrap();
    // Each estimates its own offset to the server, so both agree on the server's clock.
    let skew = late.clock_offset_us() - on_time.clock_offset_us();
    assert!((skew - 300_000).abs() < 10_000, "estimated skew {skew} µs");
    assert!(on_time.now_us().abs_diff(late.now_us()) < 10_000);
    assert!(
        (m.clock_offset.get() - on_time.clock_offset_us() as f64 / 1e6).abs() < 1e-9,
        "gauge"
    );

    // Aim 10% into a 1 s window on the server's clock: by its own clock the late host would
    // be in the previous window, so only server-side windows put both in the same one.
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let window_us = policy.window_us();
    let delay_us = delay_to_window_fraction(&on_time, window_us, 0.1);
    let a = on_time
        .acquire_slot("skew", "op", delay_us, window_us)
        .await
        .unwrap();
    let b = late
        .acquire_slot("skew", "op", delay_us, window_us)
        .await
        .unwrap();
    assert_eq!(a.window, b.window, "same herd window");
    assert_eq!((a.ticket, b.ticket), (0, 1));
    let late_local_window = (b.earliest_us - 300_000) / window_us;
    assert_ne!(
        late_local_window, b.window,
        "the late host's own clock would have split the herd"
    );

    // Through schedule_retry the fire times, taken as delays from each host's now, land in the
    // same real window.
    let t0 = Instant::now();
    let fire = |s: Scheduled| match s {
        Scheduled::FireIn {
            delay_us,
            fallback: None,
            ..
        } => delay_us,
        other => panic!("{other:?}"),
    };
    let deadline = Duration::from_secs(1);
    let da = fire(
        schedule_retry(
            &on_time, &policy, 1, 1, delay_us, "skew2", "op", deadline, None,
        )
        .await,
    );
    let da = da + t0.elapsed().as_micros() as u64;
    let db = fire(
        schedule_retry(
            &late, &policy, 2, 1, delay_us, "skew2", "op", deadline, None,
        )
        .await,
    );
    let db = db + t0.elapsed().as_micros() as u64;
    assert!(
        da.abs_diff(db) < window_us,
        "fire times {da} and {db} µs from t0"
    );
}

#[derive(Debug)]
struct Flaky(io::Error);

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ricochet::Classify for Flaky {
    fn classify(&self) -> ricochet::Classification {
        self.0.classify()
    }
}

/// 500 operations that each fail three times, then succeed, all coordinated on one Redis.
async fn run_operations(policy: &Arc<RetryPolicy>, n: usize, operation: &'static str) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let policy = policy.clone();
            tokio::spawn(async move {
                let calls = AtomicU32::new(0);
                policy
                    .execute_with_retry(
                        || {
                            let call = calls.fetch_add(1, Ordering::Relaxed);
                            async move {
                                if call < 3 {
                                    Err(Flaky(io::Error::from(io::ErrorKind::ConnectionRefused)))
                                } else {
                                    Ok(call)
                                }
                            }
                        },
                        "faults",
                        operation,
                    )
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            succeeded += 1;
        }
    }
    succeeded
}

fn fault_policy(
    server: &RedisServer,
    m: &RetryMetrics,
) -> (Arc<RetryPolicy>, Arc<RedisCoordinator>) {
    let config = RetryConfig {
        max_attempts: 6,
        initial_delay: 0.05,
        max_delay: 0.5,
        slot_count: 10,
        slot_width: 0.02,
        ..RetryConfig::DEFAULT
    };
    let c = Arc::new(coordinator(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ));
    let policy = RetryPolicy::new(config)
        .unwrap()
        .with_coordinator(c.clone())
        .with_metrics(m.clone());
    (Arc::new(policy), c)
}

/// Waits until one coordination succeeds (coordination resumed by itself).
async fn until_coordinated(c: &RedisCoordinator, limit: Duration) -> Duration {
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let started = Instant::now();
    loop {
        let s = schedule_retry(
            c,
            &policy,
            0,
            1,
            0,
            "probe",
            "op",
            DEFAULT_COORDINATION_DEADLINE,
            None,
        )
        .await;
        if matches!(s, Scheduled::FireIn { fallback: None, .. }) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "coordination did not resume within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flight_loses_no_operation_and_coordination_resumes_after_restart() {
    let mut server = RedisServer::spawn();
    let m = metrics();
    let (policy, c) = fault_policy(&server, &m);
    c.calibrate(1).await.unwrap();

    let runner = {
        let policy = policy.clone();
        tokio::spawn(async move { run_operations(&policy, 500, "op").await })
    };
    // Let the herd's first retries coordinate, then pull the plug.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let coordinated_before = m.attempts.with_label_values(&["faults", "op", "2"]).get();
    server.kill9();
    let succeeded = tokio::time::timeout(Duration::from_secs(15), runner)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(succeeded, 500, "every operation that would succeed did");
    let fell_back = fallbacks(&m, "faults", "op");
    assert!(coordinated_before > 0, "some retries ran before the kill");
    assert!(fell_back > 0, "the fallback counter rose");
    assert!(
        fell_back < 1500,
        "only retries after the kill fell back ({fell_back})"
    );

    // Same port, fresh server (no scripts loaded, no keys): coordination resumes by itself.
    server.restart();
    until_coordinated(&c, Duration::from_secs(5)).await;
    let before = fallbacks(&m, "faults", "again");
    assert_eq!(run_operations(&policy, 100, "again").await, 100);
    assert_eq!(
        fallbacks(&m, "faults", "again"),
        before,
        "no fallbacks once Redis is back"
    );
    assert!(
        server
            .cli(&["--scan", "--pattern", "*:slot:*"])
            .lines()
            .count()
            > 0,
        "tickets come from Redis again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_makes_each_call_fall_back_within_its_deadline_and_sigcont_resumes() {
    let server = RedisServer::spawn();
    let c = Arc::new(coordinator(
        &RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
    ));
    until_coordinated(&c, Duration::from_secs(2)).await;
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let m = metrics();

    server.pause();
    let deadline = DEFAULT_COORDINATION_DEADLINE;
    // Sequential calls, then a concurrent burst: none may wait past its deadline.
    let mut worst = Duration::ZERO;
    for seed in 0..10 {
        let started = Instant::now();
        let s = schedule_retry(
            c.as_ref(),
            &policy,
            seed,
            1,
            0,
            "stop",
            "op",
            deadline,
            Some(&m),
        )
        .await;
        worst = worst.max(started.elapsed());
        assert!(
            matches!(
                s,
                Scheduled::FireIn {
                    fallback: Some("timeout"),
                    ..
                }
            ),
            "{s:?}"
        );
    }
    let burst: Vec<_> = (0..50)
        .map(|seed| {
            let (c, m) = (c.clone(), m.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let s = schedule_retry(
                    c.as_ref(),
                    &policy,
                    seed,
                    1,
                    0,
                    "stop",
                    "op",
                    deadline,
                    Some(&m),
                )
                .await;
                (s, started.elapsed())
            })
        })
        .collect();
    for t in burst {
        let (s, took) = t.await.unwrap();
        assert!(
            matches!(
                s,
                Scheduled::FireIn {
                    fallback: Some("timeout"),
                    ..
                }
            ),
            "{s:?}"
        );
        worst = worst.max(took);
    }
    assert!(
        worst < deadline + Duration::from_millis(100),
        "a call took {worst:?} (deadline {deadline:?})"
    );
    assert_eq!(
        m.coordination_fallback
            .with_label_values(&["stop", "op", "timeout"])
            .get(),
        60
    );

    server.resume();
    let took = until_coordinated(&c, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "resumed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_falls_back_then_coordinates_when_it_appears() {
    // Nothing listens on this port yet.
    let port = common::free_port(false);
    let settings =
        RedisSettings::single(format!("redis://127.0.0.1:{port}")).with_key_prefix(unique_prefix());
    let c = coordinator(&settings);
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let m = metrics();
    let s = schedule_retry(
        &c,
        &policy,
        0,
        1,
        0,
        "late",
        "op",
        DEFAULT_COORDINATION_DEADLINE,
        Some(&m),
    )
    .await;
    assert!(
        matches!(
            s,
            Scheduled::FireIn {
                fallback: Some(_),
                ..
            }
        ),
        "{s:?}"
    );
    assert_eq!(fallbacks(&m, "late", "op"), 1);
    assert!(!common::port_open(port));
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn auth_works_and_the_password_never_shows_in_errors_debug_or_logs() {
    const PASSWORD: &str = "pw-Zq81-never-printed";
    let server = RedisServer::spawn_with_password(PASSWORD);
    // An ACL user as well: `redis://user:pass@…` sends AUTH user pass.
    server.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-Zq81-secret",
        "~*",
        "+@all",
    ]);
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    let _guard = tracing::subscriber::set_default(subscriber);

    let policy = RetryConfig::DEFAULT.validate().unwrap();
    for url in [
        server.url(),
        format!("redis://app:app-Zq81-secret@127.0.0.1:{}", server.port),
    ] {
        let c = coordinator(&RedisSettings::single(&url).with_key_prefix(unique_prefix()));
        c.calibrate(1)
            .await
            .unwrap_or_else(|e| panic!("AUTH via {}: {e}", ricochet::redis::redact_url(&url)));
        let s = schedule_retry(
            &c,
            &policy,
            0,
            1,
            0,
            "auth",
            "op",
            Duration::from_secs(1),
            None,
        )
        .await;
        assert!(
            matches!(s, Scheduled::FireIn { fallback: None, .. }),
            "{s:?}"
        );
    }

    // Wrong passwords: errors say what went wrong, never what was sent.
    let mut messages = Vec::new();
    for (url, secret) in [
        (
            format!("redis://:wrong-Zq81-guess@127.0.0.1:{}", server.port),
            "wrong-Zq81-guess",
        ),
        (
            format!("redis://app:bad%40Zq81@127.0.0.1:{}", server.port),
            "bad@Zq81",
        ),
    ] {
        let settings = RedisSettings::single(&url).with_key_prefix(unique_prefix());
        let c = coordinator(&settings);
        let e = c.calibrate(1).await.expect_err("wrong password");
        let m = metrics();
        let s = schedule_retry(
            &c,
            &policy,
            0,
            1,
            0,
            "auth",
            "op",
            Duration::from_secs(1),
            Some(&m),
        )
        .await;
        assert!(
            matches!(
                s,
                Scheduled::FireIn {
                    fallback: Some(_),
                    ..
                }
            ),
            "{s:?}"
        );
        messages.push((
            format!("{e} {e:?} {settings:?} {c:?} {:?}", c.connection()),
            secret,
        ));
    }
    // A URL that does not parse says so without echoing the password.
    let bad = RedisConnection::open(&RedisSettings::single(
        "redis://:pw-Zq81-bad@127.0.0.1:notaport",
    ))
    .expect_err("bad url");
    messages.push((format!("{bad} {bad:?}"), "pw-Zq81-bad"));

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("coordination failed"),
        "the failures were logged: {logged}"
    );
    for (message, secret) in &messages {
        assert!(!message.contains(secret), "secret in: {message}");
        assert!(!logged.contains(secret), "secret in the logs");
        assert!(!message.contains("%40Zq81"), "encoded secret in: {message}");
    }
    for secret in [PASSWORD, "app-Zq81-secret"] {
        assert!(!logged.contains(secret), "secret in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_auth() {
    const PASSWORD: &str = "tls-Zq81-pass";
    let (server, ca_pem) = RedisServer::spawn_tls(Some(PASSWORD));
    assert!(server.url().starts_with("rediss://"));
    let settings = RedisSettings::single(server.url())
        .with_root_ca_pem(ca_pem)
        .with_key_prefix(unique_prefix());
    let connection = RedisConnection::open(&settings).unwrap();
    let c = RedisCoordinator::new(connection.clone());
    c.calibrate(2).await.expect("TLS + AUTH");
    let g1 = c.acquire_slot("tls", "op", 0, 3_600_000_000).await.unwrap();
    let g2 = c.acquire_slot("tls", "op", 0, 3_600_000_000).await.unwrap();
    assert_eq!((g1.ticket, g2.ticket), (0, 1));
    let store = ricochet::redis::RedisIdempotencyStore::new(connection);
    use ricochet::idempotency::{Begin, IdempotencyStore};
    assert!(matches!(
        store.begin("k", "fp", 1000).await.unwrap(),
        Begin::Started(_)
    ));

    // Without the private CA the platform roots do not trust the server: an error, no secret.
    let untrusted =
        coordinator(&RedisSettings::single(server.url()).with_key_prefix(unique_prefix()));
    let e = untrusted
        .calibrate(1)
        .await
        .expect_err("untrusted certificate");
    assert!(!format!("{e} {e:?}").contains(PASSWORD), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_carry_the_prefix_and_the_operation_hash_tag() {
    let server = RedisServer::spawn();
    let settings = RedisSettings::single(server.url()).with_key_prefix("deploy-a");
    let c = coordinator(&settings);
    let g = c
        .acquire_slot("billing", "charge", 0, 1_000_000)
        .await
        .unwrap();
    let keys = server.cli(&["--scan"]);
    let tag = ricochet::redis::operation_tag("billing", "charge");
    assert_eq!(tag.len(), 32);
    assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()), "{tag}");
    assert_eq!(keys.trim(), format!("deploy-a:{{{tag}}}:slot:{}", g.window));
    let ttl_ms: i64 = server.cli(&["PTTL", keys.trim()]).trim().parse().unwrap();
    assert!(
        ttl_ms > 0 && ttl_ms <= 3_000,
        "counter expires after its window (+1): {ttl_ms} ms"
    );
}

/// Issue 14, item 1: a password holding a character that ends a URL's authority (`/`, `?`,
/// `#`) or any other reserved one is still redacted and scrubbed: in the setup error, in
/// `Debug`, in command errors, in the logs and in the metrics. Before the fix the host part was
/// cut at the first `/`, `?` or `#`, so `redis://:left/right@…` printed the password.
#[tokio::test(flavor = "current_thread")]
async fn a_password_with_reserved_characters_never_shows() {
    let server = RedisServer::spawn_with_password("the-real-one");
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _anchor = ricochet_test_support::interest_anchor(); // see its docs
    let _guard = tracing::subscriber::set_default(subscriber);
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    let registry = Registry::new();
    let m = RetryMetrics::register(&registry).unwrap();

    let mut seen = String::new();
    for c in "/?#@:[]!$&'()*+,;=% ".chars() {
        for user in ["", "app", "a/p", "a#p"] {
            let url = format!(
                "redis://{user}:Zq81left{c}rightZq82@127.0.0.1:{}",
                server.port
            );
            let settings = RedisSettings::single(&url).with_key_prefix(unique_prefix());
            seen.push_str(&format!("{settings:?} {:?}\n", settings.redacted_urls()));
            let connection = match RedisConnection::open(&settings) {
                Ok(connection) => connection,
                Err(e) => {
                    seen.push_str(&format!("{e} {e:?}\n"));
                    continue;
                }
            };
            let c = RedisCoordinator::new(connection);
            if let Err(e) = c.calibrate(1).await {
                seen.push_str(&format!("{e} {e:?}\n"));
            }
            let s = schedule_retry(
                &c,
                &policy,
                0,
                1,
                0,
                "reserved",
                "op",
                Duration::from_millis(500),
                Some(&m),
            )
            .await;
            assert!(
                matches!(
                    s,
                    Scheduled::FireIn {
                        fallback: Some(_),
                        ..
                    }
                ),
                "a wrong password is a fallback: {s:?}"
            );
            seen.push_str(&format!("{c:?} {:?}\n", c.connection()));
        }
    }
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let mut exposition = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut exposition)
        .unwrap();
    assert!(
        logged.contains("coordination failed"),
        "failures were logged"
    );
    assert!(seen.contains("***"), "{seen}");
    for (name, text) in [
        ("errors and Debug", &seen),
        ("logs", &logged),
        ("metrics", &exposition),
    ] {
        for fragment in ["Zq81", "Zq82"] {
            assert!(!text.contains(fragment), "password in the {name}: {text}");
        }
    }
}

/// Issue 14, item 6: on a 3-node cluster, names holding braces — which gave an empty or
/// partial hash tag, spreading one operation's keys over slots ("Script attempted to access a
/// non local key") — coordinate like any other, and a key prefix with a `{` is refused at open
/// with an error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_coordinate_on_a_cluster_and_a_braced_prefix_is_refused() {
    let cluster = common::RedisCluster::spawn();
    let c = RedisCoordinator::new(RedisConnection::open(&cluster.settings()).unwrap());
    for (service, operation) in [
        ("}orders", "submit"),
        ("{", "}"),
        ("{}", "{}"),
        ("a}b{c", ""),
    ] {
        for expected in 0..3 {
            let g = c
                .acquire_slot(service, operation, 0, 3_600_000_000)
                .await
                .unwrap_or_else(|e| panic!("{service:?}/{operation:?}: {e}"));
            assert_eq!(g.ticket, expected, "{service:?}/{operation:?}");
        }
    }
    for prefix in ["{}", "ricochet{a}", "x{"] {
        let settings = RedisSettings::cluster(cluster.urls()).with_key_prefix(prefix);
        let e = RedisConnection::open(&settings).expect_err("a braced prefix");
        assert!(
            e.to_string().contains("key prefix") && e.to_string().contains(prefix),
            "{e}"
        );
    }
}

/// Issue 14, item 8: a window of 0 and fire times past 2^53 are refused before the script, so
/// no counter is written (before: a key with no expiry, or a PTTL of 9.2e15 ms, and a wrong
/// window); the script itself refuses them too, for any other caller of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_slot_requests_write_nothing() {
    let server = RedisServer::spawn();
    let c = coordinator(&RedisSettings::single(server.url()).with_key_prefix(unique_prefix()));
    let m = metrics();
    let policy = RetryConfig::DEFAULT.validate().unwrap();
    for (delay_us, window_us) in [(0, 0), (9_007_199_254_740_993, 1), (i64::MAX as u64, 1)] {
        let e = c
            .acquire_slot("bounds", "op", delay_us, window_us)
            .await
            .expect_err("out of range");
        assert_eq!(e.reason(), "invalid", "{e}");
    }
    // Through the executor's path: a local slot, counted with reason `invalid`.
    let s = schedule_retry(
        &c,
        &policy,
        0,
        1,
        i64::MAX as u64,
        "bounds",
        "op",
        DEFAULT_COORDINATION_DEADLINE,
        Some(&m),
    )
    .await;
    assert!(
        matches!(
            s,
            Scheduled::FireIn {
                fallback: Some("invalid"),
                ..
            } | Scheduled::GiveUp(_)
        ),
        "{s:?}"
    );
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0", "no counter written");

    // The script on its own (as another host would load it).
    let script = redis::Script::new(include_str!(
        "../../host/ricochet/src/redis/scripts/slot.lua"
    ));
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (delay_us, window_us) in [(0u64, 0u64), (9_007_199_254_740_993, 1)] {
        let answer: redis::RedisResult<Vec<i64>> = script
            .key("raw:{t}:slot:")
            .arg(delay_us)
            .arg(window_us)
            .invoke_async(&mut conn)
            .await;
        let e = answer.expect_err("the script refuses");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0", "no counter written");
}

/// Issue 14, item 7: the link to Redis goes silent without closing — a proxy in between stops
/// forwarding and keeps both sockets open, so TCP itself never gives up on it. Before the fix
/// every call fell back, until the kernel gave up on the connection (~15 min, here never).
/// Now, after 3 calls in a row unanswered over 1 s, the connection opens a fresh link, which
/// reaches the (healthy) server, and coordination resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_replaced_and_coordination_resumes() {
    let server = RedisServer::spawn();
    let proxy = common::TcpProxy::start(server.port);
    let c = coordinator(
        &RedisSettings::single(format!("redis://127.0.0.1:{}", proxy.port))
            .with_key_prefix(unique_prefix()),
    );
    until_coordinated(&c, Duration::from_secs(2)).await;
    assert_eq!(proxy.links(), 1);

    proxy.black_hole();
    let took = until_coordinated(&c, Duration::from_secs(5)).await;
    assert!(
        took >= ricochet::redis::RECONNECT_AFTER_SILENCE,
        "resumed after {took:?}, before the link was replaced"
    );
    assert_eq!(c.connection().reconnects(), 1);
    assert_eq!(proxy.links(), 2, "a second link was opened");
    println!("coordination resumed {took:?} after the link went silent");
}
