//! `RetryLayer`: ricochet's retries for any tower service of `http::Request`s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use ricochet::tower::RetryLayer;
//! use ricochet::{RetryConfig, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let policy = RetryPolicy::new(RetryConfig::default())?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let mut orders = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy, "orders").attempt_timeout(Duration::from_secs(2)).clone_bodies())
//!     .service(client);
//! let request = http::Request::get("http://orders.internal/v1/orders/7").body(Full::default())?;
//! let response = orders.ready().await?.call(request).await?; // the last response, any status
//! # Ok(()) }
//! ```
//!
//! # Why a layer and not a `tower::retry::Policy`
//!
//! tower's `Retry` leaves every decision to a two-method `Policy` that each team writes
//! (tower-rs/tower#682): which statuses, how long to wait, whether a `POST` may go twice, how to
//! clone a body that cannot be cloned (tower-rs/tower#790). `RetryLayer` is that policy written
//! once, on ricochet's executor: the core's categories and backoff, `Retry-After` and friends
//! parsed by the core, per-attempt timeouts, the breaker, the budget, coordinated retry slots,
//! the seed's metrics and JSON log lines. The rules for requests, responses and bodies are in
//! [`crate::http`].
//!
//! # Bodies: recorded or cloned
//!
//! By default the body is recorded as the first attempt sends it ([`ReplayBody`], up to
//! [`body_limit`](RetryLayer::body_limit), 64 KiB by default), so any body type works and the
//! inner service receives `Request<ReplayBody<B>>`. When the body type is `Clone` (`Full<Bytes>`,
//! `String`, …), [`clone_bodies`](RetryLayer::clone_bodies) keeps the request's own type and
//! clones the body for each attempt instead, whatever its size — what tower's `Retry` does.
//! On a tonic channel use [`RetryLayer::grpc`] (feature `tonic`), which records the body and
//! hands the channel the `tonic::body::Body` it expects.
//!
//! # What it returns
//!
//! The last response, whatever its status (as tower's `Retry` does), or a [`CallError`]: the
//! inner service's last error, an attempt timeout, or an open circuit. The response's body is
//! not part of an attempt: the timeout covers the wait for the response head.
//!
//! # Readiness
//!
//! `poll_ready` passes the inner service's back-pressure on (`Pending` stays pending), but not its
//! errors: a service that cannot become ready (a tonic channel that cannot connect) makes the
//! next call's first attempt fail with that error, classified and retried like any attempt that
//! reached no server. Every retry waits for a fresh clone of the inner service to be ready.
//!
//! # Default
//!
//! - operation name: the request's method ([`OperationName::Method`]);
//! - body limit: 64 KiB, bodies recorded;
//! - `POST` and `PATCH` retried only with an `Idempotency-Key`;
//! - no per-attempt timeout beyond the policy's own (`RetryPolicy::with_attempt_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::executor::RetryPolicy;
use crate::http::{
    classify_response, finish, settle, AttemptClock, BodyTape, CallError, Failed, OperationName,
    ReplayBody, Settings,
};

/// A `tower::Layer` that retries requests by a [`RetryPolicy`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryLayer<R = RecordBodies> {
    settings: Arc<Settings>,
    bodies: R,
}

/// The service [`RetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct RetryService<S, R = RecordBodies> {
    inner: S,
    settings: Arc<Settings>,
    bodies: R,
    /// The inner service failed to become ready: the next call's first attempt tries again
    /// (and fails, and is retried, like any attempt that reaches no server).
    unready: bool,
}

impl RetryLayer<RecordBodies> {
    /// Retries by `policy`; `service` names the upstream in metrics and log lines (and keys its
    /// breaker and budget).
    pub fn new(policy: RetryPolicy, service: impl Into<String>) -> Self {
        Self {
            settings: Arc::new(Settings::new(policy, service)),
            bodies: RecordBodies,
        }
    }
}

impl<R> RetryLayer<R> {
    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// How the metrics and log lines name each request's operation.
    #[must_use]
    pub fn operation(mut self, name: OperationName) -> Self {
        self.settings().operation = name;
        self
    }

    /// Bounds each attempt (until the response head arrives); a timed-out attempt is a
    /// `TimeoutError` and is retried like one.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.settings().attempt_timeout = Some(timeout);
        self
    }

    /// How many bytes of a request body are recorded for retries (default 64 KiB); a longer
    /// body is sent once, unretried. Ignored by [`clone_bodies`](Self::clone_bodies).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.settings().body_limit = bytes;
        self
    }

    /// Retries `POST` and `PATCH` without an `Idempotency-Key` too: for services that are known
    /// to be idempotent.
    #[must_use]
    pub fn retry_non_idempotent(mut self) -> Self {
        self.settings().retry_non_idempotent = true;
        self
    }

    /// Clones each request's body for every attempt instead of recording it: the inner service
    /// keeps the request's own type, which must be `Clone`.
    #[must_use]
    pub fn clone_bodies(self) -> RetryLayer<CloneBodies> {
        RetryLayer {
            settings: self.settings,
            bodies: CloneBodies,
        }
    }

    /// The policy the layer runs.
    pub fn policy(&self) -> &RetryPolicy {
        &self.settings.policy
    }
}

impl<S, R: Clone> Layer<S> for RetryLayer<R> {
    type Service = RetryService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            settings: self.settings.clone(),
            bodies: self.bodies.clone(),
            unready: false,
        }
    }
}

/// How a request body reaches each attempt.
pub trait BodyStrategy<B>: Clone + Send + Sync + 'static {
    /// The body type the inner service receives.
    type Body;
    /// What is kept between attempts to make the next body.
    type Kept: Send + Sync;

    /// The body for a request that is not retried.
    fn once(&self, body: B) -> Self::Body;
    /// The first attempt's body, and what is kept for the next ones.
    fn first(&self, body: B, limit: usize) -> (Self::Body, Self::Kept);
    /// Another attempt's body; `None` when it cannot be made.
    fn again(&self, kept: &Self::Kept) -> Option<Self::Body>;
    /// Whether another attempt's body can be made now.
    fn can_replay(&self, kept: &Self::Kept) -> bool;
}

/// Records bodies as they are sent ([`ReplayBody`]); the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordBodies;

impl<B: http_body::Body + Send + 'static> BodyStrategy<B> for RecordBodies {
    type Body = ReplayBody<B>;
    type Kept = BodyTape;

    fn once(&self, body: B) -> ReplayBody<B> {
        ReplayBody::passthrough(body)
    }
    fn first(&self, body: B, limit: usize) -> (ReplayBody<B>, BodyTape) {
        ReplayBody::record(body, limit)
    }
    fn again(&self, kept: &BodyTape) -> Option<ReplayBody<B>> {
        kept.replay()
    }
    fn can_replay(&self, kept: &BodyTape) -> bool {
        kept.is_complete()
    }
}

/// Clones `Clone` bodies for each attempt, whatever their size.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBodies;

impl<B: Clone + Send + Sync + 'static> BodyStrategy<B> for CloneBodies {
    type Body = B;
    type Kept = B;

    fn once(&self, body: B) -> B {
        body
    }
    fn first(&self, body: B, _limit: usize) -> (B, B) {
        (body.clone(), body)
    }
    fn again(&self, kept: &B) -> Option<B> {
        Some(kept.clone())
    }
    fn can_replay(&self, _kept: &B) -> bool {
        true
    }
}

/// Records bodies and hands the inner service a `tonic::body::Body`: for a tonic `Channel`.
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcBodies;

#[cfg(feature = "tonic")]
impl<B> BodyStrategy<B> for GrpcBodies
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = tonic::body::Body;
    type Kept = BodyTape;

    fn once(&self, body: B) -> tonic::body::Body {
        tonic::body::Body::new(ReplayBody::passthrough(body))
    }
    fn first(&self, body: B, limit: usize) -> (tonic::body::Body, BodyTape) {
        let (body, tape) = ReplayBody::record(body, limit);
        (tonic::body::Body::new(body), tape)
    }
    fn again(&self, kept: &BodyTape) -> Option<tonic::body::Body> {
        kept.replay::<B>().map(tonic::body::Body::new)
    }
    fn can_replay(&self, kept: &BodyTape) -> bool {
        kept.is_complete()
    }
}

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl RetryLayer<GrpcBodies> {
    /// Retries gRPC calls on a tonic `Channel` by `policy` (see [`crate::grpc`]): every call is
    /// retried (gRPC sends all as `POST`; the layer on the channel is the opt-in), operations are
    /// named by the call's path (`/package.Service/Method`), and the channel gets the
    /// `tonic::body::Body` it expects.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use ricochet::tower::RetryLayer;
    /// use ricochet::{RetryConfig, RetryPolicy};
    /// use tonic_health::pb::health_client::HealthClient;
    ///
    /// let channel = tonic::transport::Endpoint::from_static("http://[::1]:50051").connect().await?;
    /// let policy = RetryPolicy::new(RetryConfig::default())?;
    /// let channel = tower::ServiceBuilder::new()
    ///     .layer(RetryLayer::grpc(policy, "health"))
    ///     .service(channel);
    /// let mut client = HealthClient::new(channel);
    /// let answer = client.check(tonic_health::pb::HealthCheckRequest::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn grpc(policy: RetryPolicy, service: impl Into<String>) -> Self {
        let mut settings = Settings::new(policy, service);
        settings.any_method = true;
        settings.operation = OperationName::Path;
        Self {
            settings: Arc::new(settings),
            bodies: GrpcBodies,
        }
    }
}

impl<S, R> RetryService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The future of a [`RetryService`] call.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, CallError<E>>> + Send>>;

impl<S, R, B, ResBody> Service<Request<B>> for RetryService<S, R>
where
    R: BodyStrategy<B>,
    R::Body: Send + 'static,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A readiness error (a channel that cannot connect) is a failed attempt like any other:
        // the call goes ahead and its first attempt asks again, classified and retried. Pending
        // stays pending, so back-pressure reaches the caller.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.unready = result.is_err();
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was made ready goes with this call; a fresh clone waits for the
        // next `poll_ready` (tower's rule for services cloned into their futures).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let is_ready = !std::mem::take(&mut self.unready);
        if !self.settings.retries(request.method(), request.headers()) {
            // Not retried: straight through, in a future of its own (the retrying one is
            // kilobytes, and boxing it is not free).
            let request = request.map(|body| self.bodies.once(body));
            let mut service = ready;
            return Box::pin(async move {
                if !is_ready {
                    std::future::poll_fn(|cx| service.poll_ready(cx))
                        .await
                        .map_err(CallError::Inner)?;
                }
                service.call(request).await.map_err(CallError::Inner)
            });
        }
        let settings = self.settings.clone();
        let bodies = self.bodies.clone();
        Box::pin(send(settings, bodies, ready, is_ready, request))
    }
}

async fn send<S, R, B, ResBody>(
    settings: Arc<Settings>,
    bodies: R,
    service: S,
    is_ready: bool,
    request: Request<B>,
) -> Result<Response<ResBody>, CallError<S::Error>>
where
    R: BodyStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
{
    let (parts, body) = request.into_parts();
    let (first_body, kept) = bodies.first(body, settings.body_limit);
    // An attempt that fails before it can send (its service never became ready) leaves the
    // caller's body here, and the next attempt sends it; a first try that succeeds never
    // touches the lock.
    let unsent: std::sync::Mutex<Option<R::Body>> = std::sync::Mutex::new(None);
    let template = service.clone();
    let mut first = Some((service, first_body));
    let clock = AttemptClock::start(settings.attempt_timeout, settings.policy.policy());
    // The closure owns the services (which need not be `Sync`) and borrows the rest.
    let (parts_ref, kept_ref, bodies_ref, unsent_ref) = (&parts, &kept, &bodies, &unsent);
    let op = move || {
        let (service, is_ready, body) = match first.take() {
            Some((service, body)) => (service, is_ready, Some(body)),
            None => {
                let unsent = unsent_ref.lock().unwrap_or_else(|p| p.into_inner()).take();
                let body = unsent.or_else(|| bodies_ref.again(kept_ref));
                (template.clone(), false, body)
            }
        };
        // Boxed: the executor keeps its attempt future inline in its own (several times, with
        // the per-attempt timeout's), and a large inline one made every call copy kilobytes.
        Box::pin(clock.bound(attempt(
            service,
            is_ready,
            parts_ref.clone(),
            body,
            unsent_ref,
        )))
    };
    let operation = settings.operation(&parts.method, parts.uri.path());
    let service = settings.service.as_str();
    let classify = |failed: &Failed<Response<ResBody>, S::Error>| {
        let unsent = unsent_ref
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let not_retried = (!unsent && !bodies.can_replay(&kept)).then_some(NOT_REPLAYABLE);
        settle(failed.classification(), not_retried, service, operation)
    };
    let outcome = settings
        .policy
        .execute_classified(op, service, operation, classify)
        .await;
    finish(outcome)
}

const NOT_REPLAYABLE: &str =
    "the request body cannot be sent again (over the limit, failed, or not fully sent)";

/// One attempt: wait for the service, send, classify the response head. A body that could
/// not be sent goes back to `unsent`.
async fn attempt<S, Body, ResBody>(
    mut service: S,
    is_ready: bool,
    parts: http::request::Parts,
    body: Option<Body>,
    unsent: &std::sync::Mutex<Option<Body>>,
) -> Result<Response<ResBody>, Failed<Response<ResBody>, S::Error>>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
{
    // `classify` stops retries whose body is not replayable; only a timeout of the policy's
    // own (which skips `classify`) can ask for one.
    let Some(body) = body else {
        return Err(Failed::NotSent(NOT_REPLAYABLE));
    };
    if !is_ready {
        if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
            *unsent.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
            return Err(Failed::Transport(e));
        }
    }
    let response = service
        .call(Request::from_parts(parts, body))
        .await
        .map_err(Failed::Transport)?;
    match classify_response(response.status(), response.headers()) {
        None => Ok(response),
        Some(failure) => Err(Failed::Response { response, failure }),
    }
}
