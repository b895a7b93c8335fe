//! `execute_with_retry` around an operation that succeeds the first time, against backon's
//! `Retry` future around the same operation, in one criterion run. This is the overhead every
//! successful call pays for being retryable.

use std::hint::black_box;

use backon::{ExponentialBuilder, Retryable};
use criterion::{criterion_group, criterion_main, Criterion};
use ricochet::{RetryConfig, RetryPolicy};

async fn op() -> Result<u64, std::io::Error> {
    Ok(black_box(42))
}

fn first_try_success(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("first_try_success");
    let bare = RetryPolicy::new(RetryConfig::default())
        .expect("valid")
        .without_metrics();
    let registry = prometheus::Registry::new();
    let metrics = ricochet::metrics::RetryMetrics::register(&registry).expect("register");
    let measured = RetryPolicy::new(RetryConfig::default())
        .expect("valid")
        .with_metrics(metrics);
    group.bench_function("backon", |b| {
        b.iter(|| {
            rt.block_on(async { op.retry(ExponentialBuilder::default().with_jitter()).await })
        })
    });
    group.bench_function("ricochet_without_metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                bare.execute_with_retry(op, black_box("lake"), black_box("fetch"))
                    .await
            })
        })
    });
    group.bench_function("ricochet_with_seed_metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                measured
                    .execute_with_retry(op, black_box("lake"), black_box("fetch"))
                    .await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, first_try_success);
criterion_main!(benches);
