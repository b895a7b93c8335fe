//! The conformance suites: one contract, run against memory, a single Redis and a cluster.
//!
//! Each suite runs every case in sequence against one backend and names the case in any
//! failure. Cases use their own service/operation names and keys, so they never see each
//! other's state.

use std::sync::Arc;
use std::time::Duration;

use ricochet::coordination::{wall_clock_us, Coordinator};
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
}
