//! A first-try success through `RetryLayer` against `tower::retry::Retry` with a trivial policy
//! (retry 5xx twice, no delay), on the same inner service, in one criterion run: what every
//! successful HTTP call pays for being retryable, next to what tower's own retry costs.
//!
//! The inner service answers `200` at once, so the figures are the layers' own cost (plus
//! ~200 ns of `block_on`, the same in every bench).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use ricochet::http::ReplayBody;
use ricochet::tower::RetryLayer;
use ricochet::{RetryConfig, RetryPolicy};
use tower::retry::{Policy, RetryLayer as TowerRetryLayer};
use tower::{service_fn, Layer, Service, ServiceExt};

/// tower's retry with the least a useful policy does: clone the request so it can be sent
/// again, retry a 5xx at most twice, at once.
#[derive(Clone)]
struct RetryFiveHundreds {
    left: u32,
}

impl<B: Clone> Policy<Request<B>, Response<Full<Bytes>>, Infallible> for RetryFiveHundreds {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<Full<Bytes>>, Infallible>,
    ) -> Option<Self::Future> {
        match result {
            Ok(r) if r.status().is_server_error() && self.left > 0 => {
                self.left -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get("http://orders.internal/v1/orders/7")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(b"")))
        .expect("a valid request")
}

fn first_try_success(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = |_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    };
    let ok_recorded = |_req: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    };
    let policy = || {
        RetryPolicy::new(RetryConfig::default())
            .expect("valid")
            .with_seed(1)
    };
    let registry = prometheus::Registry::new();
    let metrics = ricochet::metrics::RetryMetrics::register(&registry).expect("register");

    let mut group = c.benchmark_group("tower_first_try_success");
    // The floor: the inner service alone (block_on, building the request, the call).
    let alone = service_fn(ok);
    group.bench_function("inner_service_alone", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = alone;
                svc.ready().await?.call(black_box(request())).await
            })
        })
    });
    let tower_retry = TowerRetryLayer::new(RetryFiveHundreds { left: 2 }).layer(service_fn(ok));
    group.bench_function("tower_retry", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = tower_retry.clone();
                svc.ready().await?.call(black_box(request())).await
            })
        })
    });
    let cloned = RetryLayer::new(policy().without_metrics(), "orders")
        .clone_bodies()
        .layer(service_fn(ok));
    group.bench_function("ricochet_layer_without_metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = cloned.clone();
                svc.ready().await?.call(black_box(request())).await
            })
        })
    });
    // A POST without an Idempotency-Key is not retried: the layer's own cost, without the
    // executor and without keeping anything for a retry.
    group.bench_function("ricochet_layer_passthrough_post", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = cloned.clone();
                let mut post = request();
                *post.method_mut() = http::Method::POST;
                svc.ready().await?.call(black_box(post)).await
            })
        })
    });
    let recorded =
        RetryLayer::new(policy().without_metrics(), "orders").layer(service_fn(ok_recorded));
    group.bench_function("ricochet_layer_recorded_body_without_metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = recorded.clone();
                svc.ready().await?.call(black_box(request())).await
            })
        })
    });
    let measured = RetryLayer::new(policy().with_metrics(metrics), "orders")
        .clone_bodies()
        .layer(service_fn(ok));
    group.bench_function("ricochet_layer_with_seed_metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut svc = measured.clone();
                svc.ready().await?.call(black_box(request())).await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, first_try_success);
criterion_main!(benches);
