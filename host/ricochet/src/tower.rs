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
//! # Idempotency keys and a store
//!
//! [`idempotency_store`](RetryLayer::idempotency_store) makes each request's `Idempotency-Key`
//! also key an idempotency store (in memory or on Redis): a duplicate of a request that
//! succeeded gets the stored response without reaching the server; the same key with another
//! request is [`CallError::Idempotency`]. The rules are in [`crate::http::idempotency`]. The
//! service then answers `Response<IdempotentBody<ResBody>>`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc;
//! # use http_body_util::Full;
//! # use bytes::Bytes;
//! # use hyper_util::client::legacy::Client;
//! # use hyper_util::rt::TokioExecutor;
//! # use ricochet::tower::RetryLayer;
//! # use ricochet::idempotency::InMemoryIdempotencyStore;
//! # use ricochet::{RetryConfig, RetryPolicy};
//! # use tower::{Service, ServiceBuilder, ServiceExt};
//! let policy = RetryPolicy::new(RetryConfig::default())?;
//! let client = Client::builder(TokioExecutor::new()).build_http();
//! let mut payments = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy, "payments").idempotency_store(Arc::new(InMemoryIdempotencyStore::new())))
//!     .service(client);
//! let charge = http::Request::post("http://payments.internal/v1/charges")
//!     .header("idempotency-key", "order-7-charge")
//!     .body(Full::new(Bytes::from_static(b"amount=1250")))?;
//! let response = payments.ready().await?.call(charge).await?; // sent once, however often called
//! # Ok(()) }
//! ```
//!
//! # Default
//!
//! - operation name: the request's method ([`OperationName::Method`]);
//! - body limit: 64 KiB, bodies recorded;
//! - `POST` and `PATCH` retried only with an `Idempotency-Key`;
//! - no per-attempt timeout beyond the policy's own (`RetryPolicy::with_attempt_timeout`);
//! - no idempotency store: an `Idempotency-Key` makes a request retryable, nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use bytes::Bytes;
use tracing::Instrument;

use crate::bounded::{EnterSpan, InSpan, Timed};
use crate::coordination::BoxFuture;
use crate::executor::{
    first_attempt_span, retry_span, retry_span_with, CallLabels, FirstFailure, FirstStart,
    RetryPolicy,
};
use crate::http::idempotency::{
    collect, concat, fingerprint, idempotency_key, uri_text, Claim, Collected, Deduplicated,
    StoredResponse,
};
use crate::http::{
    classify_response, finish, settle, AttemptClock, BodyTape, CallError, Failed, IdempotentBody,
    OperationName, ReplayBody, Settings,
};
use crate::idempotency::{IdempotencyOptions, IdempotencyStore};

/// A `tower::Layer` that retries requests by a [`RetryPolicy`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryLayer<R = RecordBodies, D = NoStore> {
    settings: Arc<Settings>,
    bodies: R,
    store: D,
}

/// The service [`RetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct RetryService<S, R = RecordBodies, D = NoStore> {
    inner: S,
    settings: Arc<Settings>,
    bodies: R,
    store: std::marker::PhantomData<fn() -> D>,
    /// The inner service failed to become ready: the next call's first attempt tries again
    /// (and fails, and is retried, like any attempt that reaches no server).
    unready: bool,
}

/// No idempotency store: responses keep their body type (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

/// An idempotency store keyed by `Idempotency-Key`s
/// ([`idempotency_store`](RetryLayer::idempotency_store)): responses come back as
/// `Response<IdempotentBody<ResBody>>`, which a stored response can fill.
#[derive(Debug, Clone, Copy, Default)]
pub struct WithStore;

impl RetryLayer<RecordBodies> {
    /// Retries by `policy`; `service` names the upstream in metrics and log lines (and keys its
    /// breaker and budget).
    pub fn new(policy: RetryPolicy, service: impl Into<String>) -> Self {
        Self {
            settings: Arc::new(Settings::new(policy, service)),
            bodies: RecordBodies,
            store: NoStore,
        }
    }
}

impl<R> RetryLayer<R, NoStore> {
    /// Makes each request's `Idempotency-Key` also key `store` (see the
    /// [module docs](self#idempotency-keys-and-a-store)), with the default
    /// [`IdempotencyOptions`].
    pub fn idempotency_store(
        mut self,
        store: Arc<dyn IdempotencyStore>,
    ) -> RetryLayer<R, WithStore> {
        self.settings().dedup.store = Some(store);
        RetryLayer {
            settings: self.settings,
            bodies: self.bodies,
            store: WithStore,
        }
    }
}

impl<R> RetryLayer<R, WithStore> {
    /// How the store is used: lease, wait for a running duplicate, store deadline, TTL.
    #[must_use]
    pub fn idempotency_options(mut self, options: IdempotencyOptions) -> Self {
        self.settings().dedup.options = options;
        self
    }

    /// The largest stored response, in bytes (default
    /// [`DEFAULT_MAX_STORED_RESPONSE`](crate::http::DEFAULT_MAX_STORED_RESPONSE)); a larger one
    /// is returned but not stored.
    #[must_use]
    pub fn max_stored_response(mut self, bytes: usize) -> Self {
        self.settings().dedup.max_stored = bytes;
        self
    }
}

impl<R, D> RetryLayer<R, D> {
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
    pub fn clone_bodies(self) -> RetryLayer<CloneBodies, D> {
        RetryLayer {
            settings: self.settings,
            bodies: CloneBodies,
            store: self.store,
        }
    }

    /// The policy the layer runs.
    pub fn policy(&self) -> &RetryPolicy {
        &self.settings.policy
    }
}

impl<S, R: Clone, D> Layer<S> for RetryLayer<R, D> {
    type Service = RetryService<S, R, D>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            settings: self.settings.clone(),
            bodies: self.bodies.clone(),
            store: std::marker::PhantomData,
            unready: false,
        }
    }
}

/// A request body read ahead whole, for an idempotency fingerprint.
pub enum ReadAhead<Body, Kept> {
    /// The whole body fit within the limit.
    Whole {
        /// Its bytes.
        chunks: Vec<Bytes>,
        /// The first attempt's body.
        first: Body,
        /// What is kept for the next attempts.
        kept: Kept,
    },
    /// Longer than the limit (or with trailers): the body to send once, not deduplicated.
    SendOnce(Body),
    /// The body failed while it was read: nothing can be sent.
    Failed,
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
    /// Reads the whole body ahead (up to `limit` bytes) for an idempotency fingerprint.
    fn read_ahead(
        &self,
        body: B,
        limit: usize,
    ) -> BoxFuture<'static, ReadAhead<Self::Body, Self::Kept>>;
}

/// A read-ahead body as `ReplayBody`s: whole on a tape, or the part read and the rest.
async fn read_ahead_recorded<B: http_body::Body + Send + 'static>(
    body: B,
    limit: usize,
) -> ReadAhead<ReplayBody<B>, BodyTape> {
    match collect(body, limit).await {
        Collected::Whole(chunks) => {
            let kept = BodyTape::whole(chunks.clone(), limit);
            match kept.replay() {
                Some(first) => ReadAhead::Whole {
                    chunks,
                    first,
                    kept,
                },
                None => ReadAhead::Failed,
            }
        }
        Collected::Partial(read) => {
            let (head, trailers, rest) = read.into_read_ahead();
            ReadAhead::SendOnce(ReplayBody::resumed(head, trailers, rest))
        }
        Collected::Failed(_) => ReadAhead::Failed,
    }
}

/// Records bodies as they are sent ([`ReplayBody`]); the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordBodies;

impl<B> BodyStrategy<B> for RecordBodies
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
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
    fn read_ahead(
        &self,
        body: B,
        limit: usize,
    ) -> BoxFuture<'static, ReadAhead<ReplayBody<B>, BodyTape>> {
        Box::pin(read_ahead_recorded(body, limit))
    }
}

/// Clones `Clone` bodies for each attempt, whatever their size.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBodies;

impl<B> BodyStrategy<B> for CloneBodies
where
    B: http_body::Body + Clone + Send + Sync + 'static,
    B::Data: Send,
    B::Error: Send,
{
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
    fn read_ahead(&self, body: B, limit: usize) -> BoxFuture<'static, ReadAhead<B, B>> {
        let copy = body.clone();
        Box::pin(async move {
            match collect(copy, limit).await {
                Collected::Whole(chunks) => ReadAhead::Whole {
                    chunks,
                    first: body.clone(),
                    kept: body,
                },
                Collected::Partial(_) => ReadAhead::SendOnce(body),
                Collected::Failed(_) => ReadAhead::Failed,
            }
        })
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
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
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
    fn read_ahead(
        &self,
        body: B,
        limit: usize,
    ) -> BoxFuture<'static, ReadAhead<tonic::body::Body, BodyTape>> {
        Box::pin(async move {
            match read_ahead_recorded(body, limit).await {
                ReadAhead::Whole {
                    chunks,
                    first,
                    kept,
                } => ReadAhead::Whole {
                    chunks,
                    first: tonic::body::Body::new(first),
                    kept,
                },
                ReadAhead::SendOnce(body) => ReadAhead::SendOnce(tonic::body::Body::new(body)),
                ReadAhead::Failed => ReadAhead::Failed,
            }
        })
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
            store: NoStore,
        }
    }
}

impl<S, R, D> RetryService<S, R, D> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The future of a [`RetryService`] call with an idempotency store.
pub type BoxResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, CallError<E>>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of a [`RetryService`] call without an idempotency store.
    ///
    /// When the inner service was ready, `call` sends the request to it, as tower's services
    /// do, and the first attempt is polled in place — no allocation unless a limit bounds it:
    /// a retried request's (after the breaker's admission, within its time, in its `attempt`
    /// span), or the call of a request that is not retried. Only when a retried request's
    /// first attempt fails does the call move to the retry loop, on the heap; a call whose
    /// service must first be made ready takes the heap at once, and so does a call within a
    /// limit made outside a tokio runtime (its timers are made when it is first polled).
    pub struct ResponseFuture<S, R, B>
    where
        S: Service<Request<R::Body>>,
        R: BodyStrategy<B>,
    {
        // What the end of the first attempt needs, and the retries after it.
        call: Option<FirstCall<S, R, B>>,
        #[pin]
        state: State<S::Future, S::Response, S::Error>,
    }
}

/// A retried request as its first attempt leaves it, for the retries.
struct FirstCall<S, R, B>
where
    S: Service<Request<R::Body>>,
    R: BodyStrategy<B>,
{
    settings: Arc<Settings>,
    bodies: R,
    /// The ready service: the first attempt calls it, the retries clone it.
    service: S,
    head: RequestHead,
    kept: R::Kept,
}

/// A retried request's head as it is kept for the retries, its headers in one allocation (a
/// `HeaderMap`'s copy takes two, and its own size is four times a `Vec`'s): the first attempt
/// sends the request's own head, and each retry gets a `HeaderMap` rebuilt from this copy.
struct RequestHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    extensions: http::Extensions,
}

impl RequestHead {
    /// A copy of `parts` for the retries.
    fn keep(parts: &http::request::Parts) -> Self {
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            headers.push((name.clone(), value.clone()));
        }
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers,
            extensions: parts.extensions.clone(),
        }
    }

    /// The head of another attempt: the same method, URI, version, headers (every value, in
    /// their order) and extensions.
    fn parts(&self) -> http::request::Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = self.uri.clone();
        parts.version = self.version;
        parts.headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            parts.headers.append(name.clone(), value.clone());
        }
        parts.extensions = self.extensions.clone();
        parts
    }
}

/// A call's `retry` span and its first `attempt` span, as its first attempt keeps them: on the
/// heap when either of them records anything (a subscriber wants it, or `tracing`'s `log`
/// feature logs it), else nothing. Two spans that record nothing are 80 bytes that every call's
/// future would carry, and move at each of its caller's moves; one that records pays far more
/// for being recorded than for the allocation.
#[derive(Default)]
struct FirstSpans(Option<Box<[tracing::Span; 2]>>);

impl FirstSpans {
    /// The spans of a call in `retry`: it, and its first `attempt` span.
    #[inline]
    fn new(retry: tracing::Span) -> Self {
        let attempt = first_attempt_span(&retry);
        if retry.is_none() && attempt.is_none() {
            return Self(None);
        }
        Self(Some(Box::new([retry, attempt])))
    }

    /// The `retry` span, for the retries (the first `attempt` span closes).
    fn into_retry(self) -> tracing::Span {
        match self.0 {
            Some(spans) => {
                let [retry, _first_attempt] = *spans;
                retry
            }
            None => tracing::Span::none(),
        }
    }
}

impl EnterSpan for FirstSpans {
    /// The first `attempt` span.
    #[inline]
    fn enter_span(&self) -> Option<tracing::span::Entered<'_>> {
        self.0.as_ref().map(|spans| spans[1].enter())
    }
}

/// A first attempt under way: when the call started, when anything reads it (see
/// `RetryPolicy::reads_call_start`: the metrics, a `max_elapsed` deadline, a policy engine),
/// and what the end of the attempt and the retries need.
struct Started {
    at: Option<tokio::time::Instant>,
    start: FirstStart,
}

pin_project_lite::pin_project! {
    /// Where a call is: a retried request's first attempt (in place, or boxed with its timers
    /// when a limit bounds it); a request that is not retried, on its way; or the heap (the
    /// retry loop, or a service that must first be made ready).
    #[project = StateProjection]
    #[project_replace = StateReplaced]
    enum State<F, Res, E> {
        /// Sent, with no limit: the inner service's future in its `attempt` span.
        Running {
            #[pin]
            attempt: InSpan<F, FirstSpans>,
            started: Started,
        },
        /// Sent, within the layer's limit (inside the span) and the policy's (outside it):
        /// the timers and the call together, in one allocation.
        Limited {
            attempt: Pin<Box<LimitedFirst<F>>>,
            started: Started,
        },
        /// A request that is not retried, sent to a ready service: its call, nothing more.
        Once {
            #[pin]
            call: F,
        },
        /// The retry loop, a request that is not retried, or a first attempt that waits.
        Boxed { future: BoxResponseFuture<Res, E> },
        /// Over.
        Done,
    }
}

pin_project_lite::pin_project! {
    /// A first attempt within a limit (the policy's outside its `attempt` span, the layer's
    /// inside it), and its call's `retry` span.
    struct LimitedFirst<F> {
        #[pin]
        attempt: Timed<InSpan<Timed<F>>>,
        retry_span: tracing::Span,
    }
}

impl<F: Future> Future for LimitedFirst<F> {
    type Output = Result<Result<F::Output, Duration>, Duration>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().attempt.poll(cx)
    }
}

/// The state of a call to `S` with bodies by `R`.
type CallState<S, R, B> = State<
    <S as Service<Request<<R as BodyStrategy<B>>::Body>>>::Future,
    <S as Service<Request<<R as BodyStrategy<B>>::Body>>>::Response,
    <S as Service<Request<<R as BodyStrategy<B>>::Body>>>::Error,
>;

impl<S, R, B> std::fmt::Debug for ResponseFuture<S, R, B>
where
    S: Service<Request<R::Body>>,
    R: BodyStrategy<B>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field(
                "first_attempt",
                &matches!(self.state, State::Running { .. } | State::Limited { .. }),
            )
            .field("boxed", &matches!(self.state, State::Boxed { .. }))
            .finish_non_exhaustive()
    }
}

impl<S, R, B> ResponseFuture<S, R, B>
where
    S: Service<Request<R::Body>>,
    R: BodyStrategy<B>,
{
    fn boxed(future: BoxResponseFuture<S::Response, S::Error>) -> Self {
        Self {
            call: None,
            state: State::Boxed { future },
        }
    }
}

impl<S, R, B, ResBody> Future for ResponseFuture<S, R, B>
where
    R: BodyStrategy<B>,
    R::Body: Send + 'static,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Output = Result<Response<ResBody>, CallError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let outcome = match this.state.as_mut().project() {
            StateProjection::Running {
                mut attempt,
                started,
            } => {
                let Poll::Ready(answer) = attempt.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                let failure = match &answer {
                    Ok(response) => classify_response(response.status(), response.headers()),
                    Err(_) => None,
                };
                // The common case, a response that is a success, takes the shortest way out:
                // nothing around it, nothing moved but the response. The attempt's future is
                // dropped now, in its span; the rest of the call (its spans, the request kept
                // for a retry) when this future is, as tower's `Retry` keeps its request.
                if failure.is_none() && answer.is_ok() {
                    if let Some(call) = this.call.as_ref() {
                        let service = call.settings.service.as_str();
                        let policy = &call.settings.policy;
                        let at = started.at;
                        let start = || at.unwrap_or_else(tokio::time::Instant::now);
                        policy.first_succeeded(service, start, &started.start);
                    }
                    attempt.finish();
                    return Poll::Ready(answer.map_err(CallError::Inner));
                }
                match answer {
                    Ok(response) => Ok(Err(Failed::Response {
                        response,
                        failure: failure.expect("a success left above"),
                    })),
                    Err(e) => Ok(Err(Failed::Transport(e))),
                }
            }
            StateProjection::Limited { attempt, .. } => {
                match std::task::ready!(attempt.as_mut().poll(cx)) {
                    Ok(Ok(answer)) => Ok(classified(answer)),
                    // The layer's own limit: a failed attempt the classifier sees.
                    Ok(Err(limit)) => Ok(Err(Failed::TimedOut(limit))),
                    // The policy's limit: the executor's timeout.
                    Err(limit) => Err(limit),
                }
            }
            StateProjection::Once { call } => return call.poll(cx).map_err(CallError::Inner),
            StateProjection::Boxed { future } => return future.as_mut().poll(cx),
            StateProjection::Done => {
                panic!("ResponseFuture polled after completion")
            }
        };
        end_first(this.call, this.state, outcome, cx)
    }
}

/// A first attempt that did not end in a success response (or that ran within a limit): a
/// success, or the retry loop built on the heap and polled.
#[inline(never)]
#[allow(
    clippy::result_large_err,
    reason = "a failed response is returned to the caller when it is the last: it is the error"
)]
fn end_first<S, R, B, ResBody>(
    call: &mut Option<FirstCall<S, R, B>>,
    mut state: Pin<&mut CallState<S, R, B>>,
    outcome: Result<AttemptOutcome<ResBody, S::Error>, Duration>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResBody>, CallError<S::Error>>>
where
    R: BodyStrategy<B>,
    R::Body: Send + 'static,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    let span = match state.as_mut().project() {
        StateProjection::Running { attempt, .. } => attempt.finish_and_take().into_retry(),
        StateProjection::Limited { attempt, .. } => {
            std::mem::replace(attempt.as_mut().project().retry_span, tracing::Span::none())
        }
        _ => unreachable!("the first attempt was running"),
    };
    let started = match state.as_mut().project_replace(State::Done) {
        StateReplaced::Running { started, .. } | StateReplaced::Limited { started, .. } => started,
        _ => unreachable!("the first attempt was running"),
    };
    let Some(FirstCall {
        settings,
        bodies,
        service,
        head,
        kept,
    }) = call.take()
    else {
        unreachable!("the call was started");
    };
    let policy = &settings.policy;
    let operation = settings.operation(&head.method, head.uri.path());
    // A call whose start nothing read starts now, as far as its retries know.
    let at = started.at.unwrap_or_else(tokio::time::Instant::now);
    let labels = policy.call_labels_since(settings.service.as_str(), operation, at);
    let failure = match policy.end_first(&labels, started.start, outcome) {
        Ok(done) => return Poll::Ready(finish(done)),
        Err(failure) => failure,
    };
    let clock = AttemptClock::since(settings.attempt_timeout, policy.policy(), Some(at));
    let mut retries: BoxResponseFuture<S::Response, S::Error> = Box::pin(async move {
        let parts = head.parts();
        let policy = &settings.policy;
        let operation = settings.operation(&parts.method, parts.uri.path());
        let labels = policy.call_labels_since(settings.service.as_str(), operation, at);
        let unsent = std::sync::Mutex::new(None);
        let after = After {
            settings: &settings,
            bodies: &bodies,
            template: service,
            parts: &parts,
            kept,
            clock,
            unsent: &unsent,
        };
        after.retry(&labels, span, failure).await
    });
    let polled = retries.as_mut().poll(cx);
    state.set(State::Boxed { future: retries });
    polled
}

/// A retried request sent to a ready service: what `retry` does before its first attempt —
/// the breaker's admission, the first-try metric, the spans, the limits — then the call, sent
/// (as tower's services send theirs: in `call`, its limits' timers made there too).
fn start_first<S, R, B, ResBody>(
    settings: Arc<Settings>,
    bodies: R,
    mut service: S,
    parts: http::request::Parts,
    body: R::Body,
    kept: R::Kept,
) -> ResponseFuture<S, R, B>
where
    R: BodyStrategy<B>,
    R::Body: Send + 'static,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    let at = settings
        .policy
        .reads_call_start()
        .then(tokio::time::Instant::now);
    let clock = AttemptClock::since(settings.attempt_timeout, settings.policy.policy(), at);
    let limits = (clock.limit(), settings.policy.first_limit());
    if limits != (None, None) && tokio::runtime::Handle::try_current().is_err() {
        // No runtime on this thread to make the limits' timers in: they are made at the first
        // poll, on the general path, as the caller's runtime polls it.
        return ResponseFuture::boxed(Box::pin(async move {
            retry(&settings, &bodies, service, true, &parts, body, kept).await
        }));
    }
    let policy = &settings.policy;
    // The operation's name is only needed by the breaker, the metrics and an enabled span.
    let operation = || settings.operation_with(&parts.method, || parts.uri.path());
    let service_name = settings.service.as_str();
    let first_try = |metrics: &_, service: &_, operation: &_| {
        settings.first_try(metrics, &parts.method, service, operation)
    };
    let started = || at.unwrap_or_else(tokio::time::Instant::now);
    let start = match policy.begin_first_since(service_name, operation, started, first_try) {
        Ok(start) => start,
        Err(refused) => {
            return ResponseFuture::boxed(Box::pin(std::future::ready(finish(Err(refused)))))
        }
    };
    let retry_span = retry_span_with(service_name, operation);
    let head = RequestHead::keep(&parts);
    let sent = service.call(Request::from_parts(parts, body));
    let state = match limits {
        (None, None) => State::Running {
            attempt: InSpan::new(sent, FirstSpans::new(retry_span)),
            started: Started { at, start },
        },
        (layer, policy) => State::Limited {
            attempt: Box::pin(LimitedFirst {
                attempt: Timed::new(
                    InSpan::new(Timed::new(sent, layer), first_attempt_span(&retry_span)),
                    policy,
                ),
                retry_span,
            }),
            started: Started { at, start },
        },
    };
    ResponseFuture {
        call: Some(FirstCall {
            settings,
            bodies,
            service,
            head,
            kept,
        }),
        state,
    }
}

impl<S, R, D> RetryService<S, R, D>
where
    S: Clone,
{
    /// The service that was made ready goes with this call; a fresh clone waits for the next
    /// `poll_ready` (tower's rule for services cloned into their futures). Also whether the
    /// one that goes was ready.
    fn take_ready(&mut self) -> (S, bool) {
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        (ready, !std::mem::take(&mut self.unready))
    }

    fn poll_inner_ready<Req>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), CallError<S::Error>>>
    where
        S: Service<Req>,
    {
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
}

impl<S, R, B, ResBody> Service<Request<B>> for RetryService<S, R, NoStore>
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
    type Future = ResponseFuture<S, R, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_inner_ready::<Request<R::Body>>(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (ready, is_ready) = self.take_ready();
        if !self.settings.retries(request.method(), request.headers()) {
            // Not retried: straight through.
            let mut ready = ready;
            let request = request.map(|body| self.bodies.once(body));
            if is_ready {
                return ResponseFuture {
                    call: None,
                    state: State::Once {
                        call: ready.call(request),
                    },
                };
            }
            return ResponseFuture::boxed(Box::pin(send_once(ready, is_ready, request)));
        }
        let settings = self.settings.clone();
        let bodies = self.bodies.clone();
        // Split before the future is made, so that it holds the parts once.
        let (parts, body) = request.into_parts();
        let (first, kept) = bodies.first(body, settings.body_limit);
        if !is_ready {
            // The first attempt waits for the service: the general path, on the heap.
            return ResponseFuture::boxed(Box::pin(async move {
                retry(&settings, &bodies, ready, is_ready, &parts, first, kept).await
            }));
        }
        start_first(settings, bodies, ready, parts, first, kept)
    }
}

impl<S, R, B, ResBody> Service<Request<B>> for RetryService<S, R, WithStore>
where
    R: BodyStrategy<B>,
    R::Body: Send + 'static,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Error: Send,
{
    type Response = Response<IdempotentBody<ResBody>>;
    type Error = CallError<S::Error>;
    type Future = BoxResponseFuture<Response<IdempotentBody<ResBody>>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_inner_ready::<Request<R::Body>>(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (ready, is_ready) = self.take_ready();
        let key = idempotency_key(request.headers());
        let settings = self.settings.clone();
        let bodies = self.bodies.clone();
        match key {
            Some(key) if settings.dedup.store.is_some() => Box::pin(send_deduplicated(
                settings, bodies, ready, is_ready, request, key,
            )),
            _ if !settings.retries(request.method(), request.headers()) => {
                let request = request.map(|body| bodies.once(body));
                Box::pin(async move {
                    let response = send_once(ready, is_ready, request).await?;
                    Ok(response.map(IdempotentBody::live))
                })
            }
            _ => {
                let (parts, body) = request.into_parts();
                let (first, kept) = bodies.first(body, settings.body_limit);
                Box::pin(async move {
                    let response =
                        retry(&settings, &bodies, ready, is_ready, &parts, first, kept).await?;
                    Ok(response.map(IdempotentBody::live))
                })
            }
        }
    }
}

/// A request that is not retried: once, through the service.
async fn send_once<S, Body, ResBody>(
    mut service: S,
    is_ready: bool,
    request: Request<Body>,
) -> Result<Response<ResBody>, CallError<S::Error>>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
{
    if !is_ready {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(CallError::Inner)?;
    }
    service.call(request).await.map_err(CallError::Inner)
}

/// A request with an `Idempotency-Key`, under the layer's idempotency store (see
/// [`crate::http::idempotency`]).
async fn send_deduplicated<S, R, B, ResBody>(
    settings: Arc<Settings>,
    bodies: R,
    service: S,
    is_ready: bool,
    request: Request<B>,
    key: String,
) -> Result<Response<IdempotentBody<ResBody>>, CallError<S::Error>>
where
    R: BodyStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
    ResBody: http_body::Body,
{
    let Some(store) = settings.dedup.store.as_ref() else {
        return Err(CallError::NotSent {
            reason: "no idempotency store",
        });
    };
    let (parts, body) = request.into_parts();
    let operation = settings.operation(&parts.method, parts.uri.path());
    let (chunks, first, kept) = match bodies.read_ahead(body, settings.body_limit).await {
        ReadAhead::Whole {
            chunks,
            first,
            kept,
        } => (chunks, first, kept),
        ReadAhead::SendOnce(body) => {
            tracing::debug!(target: "ricochet::http", service = settings.service.as_str(), operation, limit = settings.body_limit, "request body over the limit: sent once, not deduplicated");
            let response = send_once(service, is_ready, Request::from_parts(parts, body)).await?;
            return Ok(response.map(IdempotentBody::live));
        }
        ReadAhead::Failed => {
            return Err(CallError::NotSent {
                reason: BODY_FAILED,
            })
        }
    };
    let fingerprint = fingerprint(
        &parts.method,
        &uri_text(&parts.uri),
        chunks.iter().map(|c| c.as_ref()),
    );
    drop(chunks);
    let call = Deduplicated::new(
        &settings.dedup,
        store,
        &settings.policy,
        &settings.service,
        operation,
        &key,
    );
    let token = match call.claim(&fingerprint).await {
        Claim::Run(token) => token,
        Claim::Replay(stored) => {
            let mut response = Response::new(IdempotentBody::whole(stored.body.clone()));
            *response.status_mut() = stored.status;
            *response.headers_mut() = stored.replay_headers();
            return Ok(response);
        }
        Claim::Refused(refusal) => return Err(CallError::Idempotency(refusal)),
    };
    // The store deduplicates the request; whether it is retried is the method's (and key's)
    // rule, as without a store.
    let retried = settings.retries(&parts.method, &parts.headers);
    let (result, stored) = call
        .renewing(token.as_ref(), async {
            let sent = if retried {
                retry(&settings, &bodies, service, is_ready, &parts, first, kept).await
            } else {
                drop(kept);
                send_once(service, is_ready, Request::from_parts(parts.clone(), first)).await
            };
            let response = match sent {
                Ok(response) => response,
                Err(e) => return (Err(e), None),
            };
            if classify_response(response.status(), response.headers()).is_some() {
                return (Ok(response.map(IdempotentBody::live)), None);
            }
            let (head, body) = response.into_parts();
            match collect(body, settings.dedup.max_stored).await {
                Collected::Whole(chunks) => {
                    let body = concat(chunks);
                    let stored = StoredResponse {
                        status: head.status,
                        headers: head.headers.clone(),
                        body: body.clone(),
                    };
                    let response = Response::from_parts(head, IdempotentBody::whole(body));
                    (Ok(response), Some(stored))
                }
                Collected::Partial(body) | Collected::Failed(body) => {
                    (Ok(Response::from_parts(head, body)), None)
                }
            }
        })
        .await;
    call.settle(token.as_ref(), stored.as_ref()).await;
    result
}

/// A request that may be retried: the first attempt's body and what is kept for the others.
///
/// The first attempt goes through the executor's first-attempt path directly; the retry loop,
/// its operation and its classifier are built (on the heap) only when it fails, so a first-try
/// success holds little beyond the inner service's future.
async fn retry<S, R, B, ResBody>(
    settings: &Settings,
    bodies: &R,
    service: S,
    is_ready: bool,
    parts: &http::request::Parts,
    first_body: R::Body,
    kept: R::Kept,
) -> Result<Response<ResBody>, CallError<S::Error>>
where
    R: BodyStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
{
    let policy = &settings.policy;
    let operation = settings.operation(&parts.method, parts.uri.path());
    let service_name = settings.service.as_str();
    // An attempt that fails before it can send (its service never became ready) leaves the
    // caller's body here, and the next attempt sends it; a first try that succeeds never
    // touches the lock.
    let unsent: std::sync::Mutex<Option<R::Body>> = std::sync::Mutex::new(None);
    let call = policy.call_labels(service_name, operation);
    let clock = AttemptClock::since(
        settings.attempt_timeout,
        policy.policy(),
        Some(call.started()),
    );
    let span = retry_span(service_name, operation);
    let template = service.clone();
    let first = || {
        clock.bound(attempt(
            service,
            is_ready,
            parts.clone(),
            Some(first_body),
            &unsent,
        ))
    };
    let failure = match policy.first_attempt(first, &call, &span).await {
        Ok(done) => return finish(done),
        Err(failure) => failure,
    };
    let after = After {
        settings,
        bodies,
        template,
        parts,
        kept,
        clock,
        unsent: &unsent,
    };
    Box::pin(after.retry(&call, span, failure)).await
}

/// What the retries of a request need once its first attempt failed.
struct After<'a, S, R, B>
where
    R: BodyStrategy<B>,
{
    settings: &'a Settings,
    bodies: &'a R,
    /// Cloned for each retry, which waits for the clone to be ready.
    template: S,
    parts: &'a http::request::Parts,
    kept: R::Kept,
    clock: AttemptClock,
    /// A body an attempt could not send (its service never became ready), for the next one.
    unsent: &'a std::sync::Mutex<Option<R::Body>>,
}

impl<S, R, B> After<'_, S, R, B>
where
    R: BodyStrategy<B>,
{
    /// The retry loop after a failed first attempt, in the call's `retry` span.
    async fn retry<ResBody>(
        self,
        call: &CallLabels<'_>,
        span: tracing::Span,
        failure: FirstFailure<Failed<Response<ResBody>, S::Error>>,
    ) -> Result<Response<ResBody>, CallError<S::Error>>
    where
        S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
        S::Error: std::error::Error + 'static,
    {
        let Self {
            settings,
            bodies,
            template,
            parts,
            kept,
            clock,
            unsent,
        } = self;
        let policy = &settings.policy;
        let (service_name, operation) = (call.service(), call.operation());
        let kept = &kept;
        let op = move || {
            let unsent_body = unsent.lock().unwrap_or_else(|p| p.into_inner()).take();
            let body = unsent_body.or_else(|| bodies.again(kept));
            clock.bound(attempt(
                template.clone(),
                false,
                parts.clone(),
                body,
                unsent,
            ))
        };
        let classify = |failed: &Failed<Response<ResBody>, S::Error>| {
            let is_unsent = unsent.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            let not_retried = (!is_unsent && !bodies.can_replay(kept)).then_some(NOT_REPLAYABLE);
            settle(
                failed.classification(),
                not_retried,
                service_name,
                operation,
            )
        };
        let outcome = policy
            .retry_after_failure(op, call, classify, failure)
            .instrument(span)
            .await;
        finish(outcome)
    }
}

const BODY_FAILED: &str = "the request body failed while it was read ahead for its fingerprint";

const NOT_REPLAYABLE: &str =
    "the request body cannot be sent again (over the limit, failed, or not fully sent)";

pin_project_lite::pin_project! {
    /// One attempt's future: the call on its way, or (after a readiness failure) the wait for
    /// the service first, or an attempt that could not be made.
    #[project = AttemptProjection]
    enum Attempt<F, W> {
        /// Sent to a ready service: the common case, no larger than the service's future.
        Sent {
            #[pin]
            call: F,
        },
        /// Waits for the service, then sends; boxed, since only retries take this path.
        Waiting { wait: Pin<Box<W>> },
        /// No body to send.
        NotSent,
    }
}

/// What one attempt ends in: a success, or a failure that may carry its response.
type AttemptOutcome<ResBody, E> = Result<Response<ResBody>, Failed<Response<ResBody>, E>>;

impl<F, W, ResBody, E> Future for Attempt<F, W>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    W: Future<Output = AttemptOutcome<ResBody, E>>,
{
    type Output = AttemptOutcome<ResBody, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AttemptProjection::Sent { call } => call.poll(cx).map(classified),
            AttemptProjection::Waiting { wait } => wait.as_mut().poll(cx),
            AttemptProjection::NotSent => Poll::Ready(Err(Failed::NotSent(NOT_REPLAYABLE))),
        }
    }
}

/// The inner service's answer as an attempt's outcome: the response head classified.
#[allow(
    clippy::result_large_err,
    reason = "a failed response is returned to the caller when it is the last: it is the error"
)]
fn classified<ResBody, E>(answer: Result<Response<ResBody>, E>) -> AttemptOutcome<ResBody, E> {
    let response = answer.map_err(Failed::Transport)?;
    match classify_response(response.status(), response.headers()) {
        None => Ok(response),
        Some(failure) => Err(Failed::Response { response, failure }),
    }
}

/// One attempt: wait for the service (unless it is ready), send, classify the response head.
/// A body that could not be sent goes back to `unsent`.
fn attempt<'a, S, Body, ResBody>(
    mut service: S,
    is_ready: bool,
    parts: http::request::Parts,
    body: Option<Body>,
    unsent: &'a std::sync::Mutex<Option<Body>>,
) -> Attempt<S::Future, impl Future<Output = AttemptOutcome<ResBody, S::Error>> + 'a>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + 'a,
    Body: 'a,
    ResBody: 'a,
{
    // `classify` stops retries whose body is not replayable; only a timeout of the policy's
    // own (which skips `classify`) can ask for one.
    let Some(body) = body else {
        return Attempt::NotSent;
    };
    if is_ready {
        return Attempt::Sent {
            call: service.call(Request::from_parts(parts, body)),
        };
    }
    Attempt::Waiting {
        wait: Box::pin(async move {
            if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                *unsent.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
                return Err(Failed::Transport(e));
            }
            classified(service.call(Request::from_parts(parts, body)).await)
        }),
    }
}
