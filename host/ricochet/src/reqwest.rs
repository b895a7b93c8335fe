//! `RetryMiddleware`: ricochet's retries for a `reqwest` client, as a `reqwest-middleware`
//! middleware.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ricochet::reqwest::RetryMiddleware;
//! use ricochet::{RetryConfig, RetryPolicy};
//!
//! let policy = RetryPolicy::new(RetryConfig::default())?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryMiddleware::new(policy, "orders").attempt_timeout(Duration::from_secs(2)))
//!     .build();
//! let response = client.get("http://orders.internal/v1/orders/7").send().await?;
//! # Ok(()) }
//! ```
//!
//! The same rules as [`RetryLayer`](crate::tower::RetryLayer) (see [`crate::http`]): idempotent
//! methods retried, `POST`/`PATCH` only with an `Idempotency-Key` or
//! [`retry_non_idempotent`](RetryMiddleware::retry_non_idempotent); `Retry-After`, `RateLimit`
//! and `X-RateLimit-Reset` honoured through the core — what `reqwest-retry` cannot do
//! (TrueLayer/reqwest-middleware#146) — and the policy's `max_elapsed` as a total deadline.
//! The last response comes back whatever its status.
//!
//! Bodies: a body reqwest can clone (bytes, text, JSON, forms) is cloned for each attempt; a
//! streaming body (`Body::wrap_stream`) is recorded as it is sent, up to the body limit, and
//! sent once when it does not fit.
//!
//! Errors: the last `reqwest_middleware::Error` of the client; an attempt timeout, an open
//! circuit or a retry that could not be sent come back as `Error::Middleware` wrapping a
//! [`CallError`].
//!
//! Extensions: every attempt runs the rest of the middleware chain with the caller's
//! `Extensions`, one attempt after the other.
//!
//! Idempotency store: with [`idempotency_store`](RetryMiddleware::idempotency_store), a request
//! with an `Idempotency-Key` is deduplicated by the store as [`crate::http::idempotency`]
//! describes (a duplicate gets the stored response, with `idempotent-replayed: true`, and sends
//! nothing; the same key with another request is an `Error::Middleware` wrapping
//! [`CallError::Idempotency`]). Its fingerprint covers the body when reqwest holds it in memory
//! (bytes, text, JSON, forms); a streaming body is sent without deduplication.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use ::reqwest::{Request, Response};
use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::classify::Classification;
use crate::executor::RetryPolicy;
use crate::http::idempotency::{
    collect, concat, fingerprint, idempotency_key, Claim, Collected, Deduplicated, StoredResponse,
};
use crate::http::{
    classify_response, finish, settle, AttemptClock, BodyTape, CallError, Failed, OperationName,
    ReplayBody, Settings,
};
use crate::idempotency::{IdempotencyOptions, IdempotencyStore};
use crate::ErrorCategory;

/// A `reqwest-middleware` middleware that retries requests by a [`RetryPolicy`]; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryMiddleware {
    settings: Arc<Settings>,
}

impl RetryMiddleware {
    /// Retries by `policy`; `service` names the upstream in metrics and log lines (and keys its
    /// breaker and budget).
    pub fn new(policy: RetryPolicy, service: impl Into<String>) -> Self {
        Self {
            settings: Arc::new(Settings::new(policy, service)),
        }
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// How the metrics and log lines name each request's operation (default: its method).
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

    /// How many bytes of a streaming body are recorded for retries (default 64 KiB).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.settings().body_limit = bytes;
        self
    }

    /// Retries `POST` and `PATCH` without an `Idempotency-Key` too.
    #[must_use]
    pub fn retry_non_idempotent(mut self) -> Self {
        self.settings().retry_non_idempotent = true;
        self
    }

    /// Makes each request's `Idempotency-Key` also key `store` (see the [module docs](self)),
    /// with the default [`IdempotencyOptions`].
    #[must_use]
    pub fn idempotency_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.settings().dedup.store = Some(store);
        self
    }

    /// How the idempotency store is used (lease, wait, store deadline, TTL); before or after
    /// [`idempotency_store`](Self::idempotency_store), to the same effect.
    #[must_use]
    pub fn idempotency_options(mut self, options: IdempotencyOptions) -> Self {
        self.settings().dedup.options = options;
        self
    }

    /// The largest stored response, in bytes (default
    /// [`DEFAULT_MAX_STORED_RESPONSE`](crate::http::DEFAULT_MAX_STORED_RESPONSE)).
    #[must_use]
    pub fn max_stored_response(mut self, bytes: usize) -> Self {
        self.settings().dedup.max_stored = bytes;
        self
    }
}

/// What is kept to make the next attempt's request.
enum Kept {
    /// A request reqwest can clone.
    Clone(Request),
    /// A request without its body, and the body's recording.
    Recorded(Request, BodyTape),
}

impl Kept {
    fn again(&self) -> Option<Request> {
        match self {
            Self::Clone(request) => request.try_clone(),
            Self::Recorded(head, tape) => {
                let mut request = head.try_clone()?;
                let body = tape.replay::<::reqwest::Body>()?;
                *request.body_mut() = Some(::reqwest::Body::wrap(body));
                Some(request)
            }
        }
    }

    fn can_replay(&self) -> bool {
        match self {
            Self::Clone(_) => true,
            Self::Recorded(_, tape) => tape.is_complete(),
        }
    }
}

/// The first attempt's request, and what is kept for the next ones (`None`: it cannot be
/// kept, and is sent once).
fn keep(mut request: Request, limit: usize) -> (Request, Option<Kept>) {
    if let Some(copy) = request.try_clone() {
        return (request, Some(Kept::Clone(copy)));
    }
    // Only a streaming body makes `try_clone` fail; without it the rest of the request clones.
    let Some(body) = request.body_mut().take() else {
        return (request, None);
    };
    match request.try_clone() {
        Some(head) => {
            let (body, tape) = ReplayBody::record(body, limit);
            *request.body_mut() = Some(::reqwest::Body::wrap(body));
            (request, Some(Kept::Recorded(head, tape)))
        }
        None => {
            *request.body_mut() = Some(body);
            (request, None)
        }
    }
}

/// A `reqwest-middleware` error with no response: reqwest's own view first, then the source
/// chain (see [`crate::http`]).
fn classify_error(error: &reqwest_middleware::Error) -> Classification {
    match error {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => {
            Classification::new(ErrorCategory::Timeout)
        }
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => {
            Classification::new(ErrorCategory::Connection)
        }
        // Nothing was sent: the request itself is wrong (a bad URL, a header that is not one).
        reqwest_middleware::Error::Reqwest(e) if e.is_builder() => {
            Classification::new(ErrorCategory::Validation)
        }
        reqwest_middleware::Error::Reqwest(e) => crate::http::classify_transport(e),
        // Another middleware refused: its reasons are its own, not the upstream's health.
        reqwest_middleware::Error::Middleware(_) => {
            Classification::new(ErrorCategory::BusinessLogic)
        }
    }
}

fn middleware_error(error: CallError<Infallible>) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if let Some(store) = &self.settings.dedup.store {
            if let Some(key) = idempotency_key(request.headers()) {
                return self
                    .deduplicated(store, &key, request, extensions, next)
                    .await;
            }
        }
        self.send(request, extensions, next).await
    }
}

impl RetryMiddleware {
    /// A request with an `Idempotency-Key`, under the store.
    async fn deduplicated(
        &self,
        store: &Arc<dyn IdempotencyStore>,
        key: &str,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let settings = &*self.settings;
        let body = match request.body() {
            None => Some(&[][..]),
            Some(body) => body.as_bytes(),
        };
        let Some(body) = body else {
            tracing::debug!(target: "ricochet::http", service = settings.service.as_str(), "streaming request body: sent without deduplication");
            return self.send(request, extensions, next).await;
        };
        let fingerprint = fingerprint(request.method(), request.url().as_str(), [body]);
        let url = request.url().clone();
        let method = request.method().clone();
        let operation = settings.operation(&method, url.path());
        let call = Deduplicated::new(
            &settings.dedup,
            store,
            &settings.policy,
            &settings.service,
            operation,
            key,
        );
        let token = match call.claim(&fingerprint).await {
            Claim::Run(token) => token,
            Claim::Replay(stored) => {
                let mut response = http::Response::new(::reqwest::Body::from(stored.body.clone()));
                *response.status_mut() = stored.status;
                *response.headers_mut() = stored.replay_headers();
                return Ok(with_url(response, url));
            }
            Claim::Refused(refusal) => {
                return Err(middleware_error(CallError::Idempotency(refusal)))
            }
        };
        let (result, stored) = call
            .renewing(token.as_ref(), async {
                let response = match self.send(request, extensions, next).await {
                    Ok(response) => response,
                    Err(e) => return (Err(e), None),
                };
                if classify_response(response.status(), response.headers()).is_some() {
                    return (Ok(response), None);
                }
                let url = response.url().clone();
                let (head, body) = http::Response::<::reqwest::Body>::from(response).into_parts();
                match collect(body, settings.dedup.max_stored).await {
                    Collected::Whole(chunks) => {
                        let body = concat(chunks);
                        let stored = StoredResponse {
                            status: head.status,
                            headers: head.headers.clone(),
                            body: body.clone(),
                        };
                        let response =
                            http::Response::from_parts(head, ::reqwest::Body::from(body));
                        (Ok(with_url(response, url)), Some(stored))
                    }
                    Collected::Partial(rest) | Collected::Failed(rest) => {
                        let response =
                            http::Response::from_parts(head, ::reqwest::Body::wrap(rest));
                        (Ok(with_url(response, url)), None)
                    }
                }
            })
            .await;
        call.settle(token.as_ref(), stored.as_ref()).await;
        result
    }

    /// The request with retries (or once, when it is not retried).
    async fn send(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let settings = &*self.settings;
        if !settings.retries(request.method(), request.headers()) {
            return next.run(request, extensions).await;
        }
        let method = request.method().clone();
        let path = request.url().path().to_string();
        let (first, kept) = match keep(request, settings.body_limit) {
            (first, Some(kept)) => (first, kept),
            (once, None) => return next.run(once, extensions).await,
        };
        let mut first = Some(first);
        let clock = AttemptClock::start(settings.attempt_timeout, settings.policy.policy());
        // Attempts run one after the other; each borrows the caller's extensions in turn.
        let extensions = tokio::sync::Mutex::new(extensions);
        let (kept_ref, extensions_ref) = (&kept, &extensions);
        let op = || {
            let request = first.take().or_else(|| kept_ref.again());
            let next = next.clone();
            clock.bound(async move {
                let Some(request) = request else {
                    return Err(Failed::NotSent(NOT_REPLAYABLE));
                };
                let mut extensions = extensions_ref.lock().await;
                let response = next
                    .run(request, &mut extensions)
                    .await
                    .map_err(Failed::Transport)?;
                match classify_response(response.status(), response.headers()) {
                    None => Ok(response),
                    Some(failure) => Err(Failed::Response { response, failure }),
                }
            })
        };
        let operation = settings.operation(&method, &path);
        let service = settings.service.as_str();
        let classify = |failed: &Failed<Response, reqwest_middleware::Error>| {
            let class = match failed {
                Failed::Transport(e) => classify_error(e),
                other => other.classification(),
            };
            let not_retried = (!kept_ref.can_replay()).then_some(NOT_REPLAYABLE);
            settle(class, not_retried, service, operation)
        };
        let outcome = settings
            .policy
            .execute_classified(op, service, operation, classify)
            .await;
        match finish(outcome) {
            Ok(response) => Ok(response),
            Err(CallError::Inner(e)) => Err(e),
            Err(CallError::TimedOut(d)) => Err(middleware_error(CallError::TimedOut(d))),
            Err(CallError::CircuitOpen { retry_after }) => {
                Err(middleware_error(CallError::CircuitOpen { retry_after }))
            }
            Err(CallError::NotSent { reason }) => {
                Err(middleware_error(CallError::NotSent { reason }))
            }
            Err(CallError::Idempotency(refusal)) => {
                Err(middleware_error(CallError::Idempotency(refusal)))
            }
        }
    }
}

/// A reqwest response from `response`, with the URL it came from.
fn with_url(mut response: http::Response<::reqwest::Body>, url: ::reqwest::Url) -> Response {
    use ::reqwest::ResponseBuilderExt;
    // reqwest keeps the URL in an extension only its builder can write.
    if let Ok(marked) = http::Response::builder().url(url).body(()) {
        response
            .extensions_mut()
            .extend(marked.into_parts().0.extensions);
    }
    Response::from(response)
}

const NOT_REPLAYABLE: &str =
    "the request body cannot be sent again (over the limit, failed, or not fully sent)";
