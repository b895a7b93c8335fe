//! The conformance suites: one contract, run against memory, a single Redis and a cluster.
//!
//! Each suite runs every case in sequence against one backend and names the case in any
//! failure. Cases use their own service/operation names and keys, so they never see each
//! other's state.

use std::sync::Arc;
use std::time::Duration;

use ricochet::coordination::{wall_clock_us, CoordinationError, Coordinator};
use ricochet::idempotency::{Begin, HolderToken, IdempotencyStore, StoreError};

/// A window so long that no case straddles a boundary by accident (1 hour).
const LONG_WINDOW_US: u64 = 3_600_000_000;

/// Runs every coordinator case against `c`.
pub async fn coordinator_suite(c: Arc<dyn Coordinator>) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let svc = |case: &str| format!("svc-{case}-{tag}");

    // Tickets count up from 0 within one window of one operation.
    let s = svc("count");
    for expected in 0..20 {
        let g = c
            .acquire_slot(&s, "op", 0, LONG_WINDOW_US)
            .await
            .expect("count: acquire");
        assert_eq!(g.ticket, expected, "count: tickets are 0, 1, 2, …");
    }

    // Operations, services and windows have separate counters.
    let s = svc("separate");
    assert_eq!(
        c.acquire_slot(&s, "a", 0, LONG_WINDOW_US)
            .await
            .unwrap()
            .ticket,
        0,
        "separate: op a"
    );
    assert_eq!(
        c.acquire_slot(&s, "b", 0, LONG_WINDOW_US)
            .await
            .unwrap()
            .ticket,
        0,
        "separate: op b"
    );
    assert_eq!(
        c.acquire_slot(&s, "a", 0, LONG_WINDOW_US)
            .await
            .unwrap()
            .ticket,
        1,
        "separate: op a again"
    );
    assert_eq!(
        c.acquire_slot(&format!("{s}-2"), "a", 0, LONG_WINDOW_US)
            .await
            .unwrap()
            .ticket,
        0,
        "separate: service"
    );
    let later = c
        .acquire_slot(&s, "a", LONG_WINDOW_US, LONG_WINDOW_US)
        .await
        .unwrap();
    assert_eq!(later.ticket, 0, "separate: the next window starts at 0");

    // The grant is consistent: earliest = now + delay, window = earliest / window_us, and the
    // coordinator's clock is the one `now_us` reports.
    let s = svc("grant");
    let before = c.now_us();
    let g = c.acquire_slot(&s, "op", 250_000, 1_000_000).await.unwrap();
    let after = c.now_us();
    assert_eq!(
        g.earliest_us,
        g.now_us + 250_000,
        "grant: earliest = now + delay"
    );
    assert_eq!(g.window, g.earliest_us / 1_000_000, "grant: window index");
    assert!(
        g.now_us + 20_000 >= before && g.now_us <= after + 20_000,
        "grant: now_us {} outside [{before}, {after}] ± 20 ms",
        g.now_us
    );
    let local = wall_clock_us();
    assert!(
        c.now_us().abs_diff(local) < 1_000_000,
        "grant: clock within 1 s of the local one"
    );

    // Concurrent acquisitions get distinct tickets: exactly 0..n.
    let s = svc("concurrent");
    let n = 200u64;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            let s = s.clone();
            tokio::spawn(async move {
                c.acquire_slot(&s, "op", 0, LONG_WINDOW_US)
                    .await
                    .unwrap()
                    .ticket
            })
        })
        .collect();
    let mut tickets = Vec::new();
    for t in tasks {
        tickets.push(t.await.unwrap());
    }
    tickets.sort_unstable();
    assert_eq!(
        tickets,
        (0..n).collect::<Vec<_>>(),
        "concurrent: every ticket exactly once"
    );

    // Tiny windows still work (1 µs: every microsecond is its own window).
    let s = svc("tiny");
    let g = c.acquire_slot(&s, "op", 0, 1).await.unwrap();
    assert_eq!(g.window, g.earliest_us, "tiny: 1 µs windows");

    // Issue 14, item 5: a window far ahead keeps counting while 16 nearer ones open (memory
    // kept 16 windows and evicted the first inserted: ticket 0 twice where Redis said 0, 1).
    let s = svc("far");
    let far = |c: Arc<dyn Coordinator>, s: String| async move {
        c.acquire_slot(&s, "op", 19 * LONG_WINDOW_US, LONG_WINDOW_US)
            .await
            .expect("far: acquire")
    };
    let first = far(c.clone(), s.clone()).await;
    assert_eq!(first.ticket, 0, "far: first ticket");
    for k in 0..16 {
        c.acquire_slot(&s, "op", k * LONG_WINDOW_US, LONG_WINDOW_US)
            .await
            .expect("far: nearer windows");
    }
    let again = far(c.clone(), s.clone()).await;
    if again.window == first.window {
        assert_eq!(
            again.ticket, 1,
            "far: the window 19 ahead was not forgotten"
        );
    }

    // Issue 14, item 6: names are kept apart however they are spelled — joined with `:` they
    // would be alike, and braces must not break the Cluster hash tag.
    let s = svc("names");
    let ab_c = c
        .acquire_slot(&format!("{s}:b"), "c", 0, LONG_WINDOW_US)
        .await;
    let a_bc = c.acquire_slot(&s, "b:c", 0, LONG_WINDOW_US).await;
    assert_eq!(
        (
            ab_c.expect("names: a:b/c").ticket,
            a_bc.expect("names: a/b:c").ticket
        ),
        (0, 0),
        "names: (a:b, c) and (a, b:c) are two operations"
    );
    for (service, operation) in [
        (format!("}}{s}"), "op".to_string()),
        (format!("{{{s}"), "}".to_string()),
        (format!("{{}}{s}"), "{}".to_string()),
        (format!("{s}\u{1f}x"), "y".to_string()),
        (s.clone(), "x\u{1f}y".to_string()),
    ] {
        for expected in 0..3 {
            let g = c
                .acquire_slot(&service, &operation, 0, LONG_WINDOW_US)
                .await
                .unwrap_or_else(|e| panic!("names: {service:?}/{operation:?}: {e}"));
            assert_eq!(g.ticket, expected, "names: {service:?}/{operation:?}");
        }
    }

    // Issue 14, item 8: requests the script cannot compute exactly are refused before it runs.
    let s = svc("bounds");
    for (delay_us, window_us) in [
        (0, 0),
        (9_007_199_254_740_993, 1),
        (i64::MAX as u64, 1),
        (u64::MAX, 1),
        (0, u64::MAX / 2),
        (9_007_199_254_740_992 - c.now_us(), 1),
    ] {
        match c.acquire_slot(&s, "op", delay_us, window_us).await {
            Err(CoordinationError::Invalid(message)) => assert!(
                message.contains("window_us") && message.contains(&window_us.to_string()),
                "bounds: {message}"
            ),
            other => panic!("bounds: delay {delay_us}, window {window_us}: {other:?}"),
        }
    }
}

async fn started(
    store: &dyn IdempotencyStore,
    key: &str,
    fp: &str,
    lease_ms: u64,
    case: &str,
) -> HolderToken {
    match store.begin(key, fp, lease_ms).await {
        Ok(Begin::Started(token)) => token,
        other => panic!("{case}: expected Started, got {other:?}"),
    }
}

/// Runs every idempotency case against `store`.
pub async fn idempotency_suite(store: Arc<dyn IdempotencyStore>) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let key = |case: &str| format!("key-{case}-{tag}");
    let s = store.as_ref();

    // absent → Started; same fingerprint while held → InProgress; another → Mismatch.
    let k = key("claim");
    let t = started(s, &k, "fp", 10_000, "claim").await;
    match s.begin(&k, "fp", 10_000).await.unwrap() {
        Begin::InProgress { lease_remaining_ms } => {
            assert!(
                lease_remaining_ms > 5_000 && lease_remaining_ms <= 10_000,
                "claim: lease left {lease_remaining_ms}"
            )
        }
        other => panic!("claim: expected InProgress, got {other:?}"),
    }
    assert_eq!(
        s.begin(&k, "other", 10_000).await.unwrap(),
        Begin::Mismatch,
        "claim: other fingerprint"
    );

    // complete → duplicates get the stored bytes; another fingerprint is still a mismatch.
    s.complete(&k, &t, b"{\"v\":42}", 60_000)
        .await
        .expect("complete");
    assert_eq!(
        s.begin(&k, "fp", 10_000).await.unwrap(),
        Begin::Completed(b"{\"v\":42}".to_vec()),
        "complete: replay"
    );
    assert_eq!(
        s.begin(&k, "other", 10_000).await.unwrap(),
        Begin::Mismatch,
        "complete: other fingerprint"
    );
    assert_eq!(
        s.complete(&k, &t, b"again", 60_000).await,
        Err(StoreError::NotHolder),
        "complete: only once"
    );
    assert_eq!(
        s.fail(&k, &t).await,
        Err(StoreError::NotHolder),
        "complete: a completed key is not released"
    );

    // fail releases the key: the next caller runs it.
    let k = key("fail");
    let t = started(s, &k, "fp", 10_000, "fail").await;
    s.fail(&k, &t).await.expect("fail");
    let t2 = started(s, &k, "fp", 10_000, "fail: retry runs").await;
    assert_ne!(t, t2, "fail: a new claim has a new token");
    s.fail(&k, &t)
        .await
        .expect_err("fail: the old token cannot release the new claim");
    assert!(
        matches!(
            s.begin(&k, "fp", 10_000).await.unwrap(),
            Begin::InProgress { .. }
        ),
        "fail: new claim kept"
    );

    // An expired lease is taken over; the old holder can neither complete nor release it.
    let k = key("takeover");
    let old = started(s, &k, "fp", 100, "takeover").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = started(s, &k, "fp", 10_000, "takeover: after the lease").await;
    assert_eq!(
        s.complete(&k, &old, b"stale", 60_000).await,
        Err(StoreError::NotHolder),
        "takeover: old complete"
    );
    assert_eq!(
        s.fail(&k, &old).await,
        Err(StoreError::NotHolder),
        "takeover: old fail"
    );
    assert_eq!(
        s.renew(&k, &old, 10_000).await,
        Err(StoreError::NotHolder),
        "takeover: old renew"
    );
    s.complete(&k, &new, b"fresh", 60_000)
        .await
        .expect("takeover: new complete");
    assert_eq!(
        s.begin(&k, "fp", 100).await.unwrap(),
        Begin::Completed(b"fresh".to_vec()),
        "takeover: result"
    );

    // A lease that ran out with nobody taking over: the late result is still stored.
    let k = key("late");
    let t = started(s, &k, "fp", 100, "late").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.complete(&k, &t, b"late", 60_000)
        .await
        .expect("late: complete after the lease");
    assert_eq!(
        s.begin(&k, "fp", 100).await.unwrap(),
        Begin::Completed(b"late".to_vec()),
        "late: result"
    );
    assert_eq!(
        s.begin(&k, "other", 100).await.unwrap(),
        Begin::Mismatch,
        "late: fingerprint kept"
    );

    // renew keeps a working holder's claim past its first lease.
    let k = key("renew");
    let t = started(s, &k, "fp", 150, "renew").await;
    s.renew(&k, &t, 10_000).await.expect("renew");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(
            s.begin(&k, "fp", 100).await.unwrap(),
            Begin::InProgress { .. }
        ),
        "renew: still held"
    );
    s.complete(&k, &t, b"", 60_000)
        .await
        .expect("renew: complete");
    assert_eq!(
        s.begin(&k, "fp", 100).await.unwrap(),
        Begin::Completed(Vec::new()),
        "renew: empty result"
    );

    // Completed records expire after their TTL.
    let k = key("ttl");
    let t = started(s, &k, "fp", 10_000, "ttl").await;
    s.complete(&k, &t, b"x", 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    started(s, &k, "other-fp", 10_000, "ttl: expired record is gone").await;

    // Any bytes round-trip.
    let k = key("binary");
    let t = started(s, &k, "fp", 10_000, "binary").await;
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    s.complete(&k, &t, &bytes, 60_000).await.unwrap();
    assert_eq!(
        s.begin(&k, "fp", 10_000).await.unwrap(),
        Begin::Completed(bytes),
        "binary"
    );

    // Keys and fingerprints are arbitrary strings.
    let k = format!("{} ünïcødé {{brace}} : * ? \u{0}", key("odd"));
    let t = started(s, &k, "f p\u{0}{}", 10_000, "odd").await;
    s.complete(&k, &t, b"ok", 60_000).await.unwrap();
    assert_eq!(
        s.begin(&k, "f p\u{0}{}", 10_000).await.unwrap(),
        Begin::Completed(b"ok".to_vec()),
        "odd"
    );

    // 100 concurrent claims of one key: exactly one starts.
    let k = key("race");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move { store.begin(&k, "fp", 10_000).await.unwrap() })
        })
        .collect();
    let mut started_count = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started(_) => started_count += 1,
            Begin::InProgress { .. } => {}
            other => panic!("race: {other:?}"),
        }
    }
    assert_eq!(started_count, 1, "race: exactly one claim");

    // Absurd leases and TTLs are clamped, never refused half way (issue 14, item 9: Redis
    // answered `invalid expire time` and the record stayed in progress; memory overflowed).
    let k = key("absurd");
    let t = started(s, &k, "fp", u64::MAX, "absurd: lease u64::MAX").await;
    s.renew(&k, &t, u64::MAX).await.expect("absurd: renew");
    s.complete(&k, &t, b"kept", u64::MAX)
        .await
        .expect("absurd: complete with a TTL of u64::MAX");
    assert_eq!(
        s.begin(&k, "fp", i64::MAX as u64).await.unwrap(),
        Begin::Completed(b"kept".to_vec()),
        "absurd: stored"
    );

    complete_races_a_takeover(store.clone(), &key("complete-race"), 2_000).await;
}

/// Issue 14, item 2: `complete` by a holder whose lease ran out, racing a new caller's
/// `begin`. Either the late result is stored (and the newcomer replays it) or the newcomer
/// holds the key (and the late `complete` is `NotHolder`) — never both, which is what a check
/// and a write under two locks allowed: the takeover was overwritten by the late result.
///
/// The two calls run on two threads released together by a spinning barrier, key after key,
/// the newcomer a little later each time (0 to 2 µs), so its `begin` sweeps the whole of the
/// `complete` — the in-memory store's window between two locks was a few dozen nanoseconds:
/// against it, 2 000 keys found the overwrite in every run tried (first at keys 1 to 1 345).
async fn complete_races_a_takeover(store: Arc<dyn IdempotencyStore>, stem: &str, n: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let keys: Vec<String> = (0..n).map(|i| format!("{stem}-{i}")).collect();
    let mut tokens = Vec::with_capacity(n);
    for k in &keys {
        tokens.push(started(store.as_ref(), k, "fp", 50, "complete-race").await);
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let arrived = Arc::new(AtomicUsize::new(0));
    // Both sides arrive at round `i` (2 i + 2 arrivals), then start at once.
    let meet = |arrived: &AtomicUsize, round: usize| {
        arrived.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        while arrived.load(Ordering::SeqCst) < 2 * round + 2 {
            spins += 1;
            // A busy machine may run the other side on this core: let it, now and then.
            if spins.is_multiple_of(1 << 20) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let runtime = tokio::runtime::Handle::current();
    let late = {
        let (store, keys, arrived, runtime) = (
            store.clone(),
            keys.clone(),
            arrived.clone(),
            runtime.clone(),
        );
        std::thread::spawn(move || {
            let mut stored = Vec::with_capacity(keys.len());
            for (i, (k, t)) in keys.iter().zip(&tokens).enumerate() {
                meet(&arrived, i);
                stored.push(runtime.block_on(store.complete(k, t, b"late", 60_000)));
            }
            stored
        })
    };
    let newcomer = {
        let (store, keys, arrived) = (store.clone(), keys.clone(), arrived.clone());
        std::thread::spawn(move || {
            let mut begun = Vec::with_capacity(keys.len());
            for (i, k) in keys.iter().enumerate() {
                meet(&arrived, i);
                for _ in 0..(i % 64) * 8 {
                    std::hint::spin_loop();
                }
                begun.push(runtime.block_on(store.begin(k, "fp", 60_000)).unwrap());
            }
            begun
        })
    };
    let (stored, begun) = (late.join().unwrap(), newcomer.join().unwrap());
    for ((k, stored), begun) in keys.iter().zip(stored).zip(begun) {
        match (&stored, &begun) {
            (Ok(()), Begin::Completed(v)) => assert_eq!(v, b"late", "complete-race: {k}"),
            (Err(StoreError::NotHolder), Begin::Started(_)) => {
                assert!(
                    matches!(
                        store.begin(k, "fp", 60_000).await.unwrap(),
                        Begin::InProgress { .. }
                    ),
                    "complete-race: {k}: the newcomer's claim was overwritten"
                );
            }
            other => panic!("complete-race: {k}: late complete and takeover both won: {other:?}"),
        }
    }
}

/// Issue 14, item 10: a store whose every record is a claim past its lease (holders that
/// vanished) takes new claims at once. `capacity` is what the store holds at most (an
/// in-memory store built `with_max_records(capacity)`; Redis has no such cap and must behave
/// the same).
pub async fn idempotency_capacity_suite(store: Arc<dyn IdempotencyStore>, capacity: usize) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let s = store.as_ref();
    for i in 0..capacity {
        started(s, &format!("dead-{i}-{tag}"), "fp", 30, "capacity: fill").await;
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    for i in 0..capacity {
        started(
            s,
            &format!("new-{i}-{tag}"),
            "fp",
            10_000,
            "capacity: the expired claims make room",
        )
        .await;
    }
    // Live claims still hold their places: the next claim on a full in-memory store is
    // refused (clearly), on Redis taken.
    match s.begin(&format!("one-more-{tag}"), "fp", 10_000).await {
        Ok(Begin::Started(_)) => {}
        Err(StoreError::Backend(message)) => assert!(message.contains("full"), "{message}"),
        other => panic!("capacity: one more: {other:?}"),
    }
}
