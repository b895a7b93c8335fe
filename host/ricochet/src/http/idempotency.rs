//! `Idempotency-Key` as the key of an idempotency store: a duplicate request gets the stored
//! response and never reaches the server again.
//!
//! When [`RetryLayer`](crate::tower::RetryLayer) or
//! [`RetryMiddleware`](crate::reqwest::RetryMiddleware) is given an [`IdempotencyStore`]
//! (`idempotency_store`), a request that carries an `Idempotency-Key` header goes through it,
//! with the store's semantics (see [`crate::idempotency`]):
//!
//! - the key is claimed, scoped by the integration's service name (`http`, service, key);
//! - the claim carries the request's fingerprint: SHA-256 of its method, URI and whole body.
//!   The body is read before the first attempt (up to the body limit); a body that does not fit
//!   is sent once, as without a store, and not deduplicated;
//! - a duplicate of a completed request gets the stored response — status, end-to-end headers
//!   and body, plus `idempotent-replayed: true` — without any attempt;
//! - a duplicate while the first is still running waits for it (up to
//!   [`IdempotencyOptions::wait`]) and then gets its response, or runs itself if the first
//!   failed; past the wait it is [`IdempotencyRefusal::InProgress`];
//! - the same key with another method, URI or body is [`IdempotencyRefusal::KeyReused`];
//! - the request is retried by the rules it has without a store ([`crate::http`]): a keyed
//!   `POST` is, a `CONNECT` or an extension method is sent once, deduplicated all the same;
//! - a success (`2xx`, `3xx`) is stored for the policy's `idempotency_ttl` (or
//!   [`IdempotencyOptions::ttl`]); any other outcome releases the key, so a later request may
//!   run. The response body is read whole before the call returns, up to
//!   [`DEFAULT_MAX_STORED_RESPONSE`] (1 MiB, `max_stored_response`); a larger response, or one
//!   with trailers (gRPC), is returned as it is but not stored (the key is released);
//! - a store that is unreachable (or slower than [`IdempotencyOptions::store_deadline`]) never
//!   fails a request: it runs without deduplication, counted in
//!   `retry_idempotency_fallback_total` like `execute_idempotent`'s.
//!
//! # The stored response
//!
//! A small versioned binary record, so a stored response survives a change of this crate's
//! version on either side of a shared Redis: byte 0 is the format version (1); then the status
//! (`u16`, big-endian), the header count (`u16`), each header as a `u16` name length, the name,
//! a `u32` value length and the value; then the body length (`u32`) and the body. Hop-by-hop
//! headers (`connection`, `transfer-encoding`, …) are not stored. A record of another version or
//! a damaged one is [`IdempotencyRefusal::Unreadable`]: the request is not sent again on a
//! guess.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

use crate::executor::RetryPolicy;
use crate::idempotency::{
    Call, ClaimGuard, Claimed, HolderToken, IdempotencyOptions, IdempotencyStore,
};

/// Largest serialized response stored by default: the store's result cap.
pub const DEFAULT_MAX_STORED_RESPONSE: usize = 1024 * 1024;

/// The header a replayed response carries.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Format version of a stored response.
const FORMAT_VERSION: u8 = 1;

/// Why a request with an `Idempotency-Key` was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyRefusal {
    /// The key was used before with another method, URI or body.
    KeyReused {
        /// The `Idempotency-Key`.
        key: String,
    },
    /// A request with this key is still running after the wait.
    InProgress {
        /// The `Idempotency-Key`.
        key: String,
    },
    /// The stored response cannot be read (another format version, or damaged).
    Unreadable {
        /// The `Idempotency-Key`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for IdempotencyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyReused { key } => write!(
                f,
                "Idempotency-Key {key:?} was already used for a different request (method, URI or body); not sent"
            ),
            Self::InProgress { key } => write!(
                f,
                "a request with Idempotency-Key {key:?} is still in progress; not sent"
            ),
            Self::Unreadable { key, reason } => write!(
                f,
                "the stored response for Idempotency-Key {key:?} cannot be read ({reason}); not sent"
            ),
        }
    }
}

impl std::error::Error for IdempotencyRefusal {}

/// An integration's store and how it uses it. The options are kept whether or not a store is
/// set yet, so a builder takes them in any order.
#[derive(Clone)]
pub(crate) struct Deduplication {
    /// `None`: requests are not deduplicated.
    pub store: Option<Arc<dyn IdempotencyStore>>,
    pub options: IdempotencyOptions,
    pub max_stored: usize,
}

impl fmt::Debug for Deduplication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deduplication")
            .field("store", &self.store.as_ref().map(|s| s.name()))
            .field("options", &self.options)
            .field("max_stored", &self.max_stored)
            .finish()
    }
}

impl Default for Deduplication {
    fn default() -> Self {
        Self {
            store: None,
            options: IdempotencyOptions::default(),
            max_stored: DEFAULT_MAX_STORED_RESPONSE,
        }
    }
}

/// The request's `Idempotency-Key`, when it has a usable one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    usable_key(headers).map(str::to_string)
}

/// The request's `Idempotency-Key` when it is usable: one field line, visible ASCII (and
/// spaces), not blank. Two lines are no key: the field is a Structured Field item, which a
/// server ignores when it is given twice. The one rule for both what makes a `POST`
/// retryable and what keys the store, so that no request is retried on a key the store would
/// not deduplicate it by.
#[inline]
pub(crate) fn usable_key(headers: &HeaderMap) -> Option<&str> {
    let mut lines = headers.get_all(super::IDEMPOTENCY_KEY).iter();
    let value = lines.next()?.to_str().ok()?.trim();
    (!value.is_empty() && lines.next().is_none()).then_some(value)
}

/// SHA-256 of the method, the URI and the body, hex: what makes two requests "the same".
pub(crate) fn fingerprint<'a>(
    method: &Method,
    uri: &str,
    body: impl IntoIterator<Item = &'a [u8]>,
) -> String {
    let mut hash = Sha256::new();
    // Lengths first, so that no two (method, uri) pairs hash the same bytes.
    hash.update((method.as_str().len() as u64).to_be_bytes());
    hash.update(method.as_str());
    hash.update((uri.len() as u64).to_be_bytes());
    hash.update(uri);
    for chunk in body {
        hash.update(chunk);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The URI as fingerprinted: the request's, whole.
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) fn uri_text(uri: &Uri) -> String {
    uri.to_string()
}

/// A response as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers that belong to one connection, not to the response (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

impl StoredResponse {
    /// The record, or `None` when it would exceed `max` bytes.
    pub fn encode(&self, max: usize) -> Option<Vec<u8>> {
        let kept: Vec<(&HeaderName, &HeaderValue)> = self
            .headers
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .collect();
        let count = u16::try_from(kept.len()).ok()?;
        let body_len = u32::try_from(self.body.len()).ok()?;
        let size = 1
            + 2
            + 2
            + kept
                .iter()
                .map(|(n, v)| 2 + n.as_str().len() + 4 + v.len())
                .sum::<usize>()
            + 4
            + self.body.len();
        if size > max {
            return None;
        }
        let mut out = Vec::with_capacity(size);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in kept {
            // A header name is at most 64 KiB in every HTTP library; a value may not be.
            let name_len = u16::try_from(name.as_str().len()).ok()?;
            let value_len = u32::try_from(value.len()).ok()?;
            out.extend_from_slice(&name_len.to_be_bytes());
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(&value_len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&self.body);
        Some(out)
    }

    /// A record made by [`encode`](Self::encode).
    pub fn decode(mut bytes: &[u8]) -> Result<Self, String> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
            if bytes.len() < n {
                return Err(format!("truncated at the {what}"));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        fn u16_at(bytes: &mut &[u8], what: &str) -> Result<u16, String> {
            let b = take(bytes, 2, what)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        }
        fn u32_at(bytes: &mut &[u8], what: &str) -> Result<usize, String> {
            let b = take(bytes, 4, what)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let version = take(&mut bytes, 1, "version")?[0];
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let status = u16_at(&mut bytes, "status")?;
        let status =
            StatusCode::from_u16(status).map_err(|_| format!("status {status} is not one"))?;
        let count = u16_at(&mut bytes, "header count")?;
        let mut headers = HeaderMap::with_capacity(count.into());
        for _ in 0..count {
            let n = u16_at(&mut bytes, "header name length")?.into();
            let name = take(&mut bytes, n, "header name")?;
            let name = HeaderName::from_bytes(name).map_err(|e| format!("header name: {e}"))?;
            let n = u32_at(&mut bytes, "header value length")?;
            let value = take(&mut bytes, n, "header value")?;
            let value = HeaderValue::from_bytes(value).map_err(|e| format!("header value: {e}"))?;
            headers.append(name, value);
        }
        let n = u32_at(&mut bytes, "body length")?;
        let body = Bytes::copy_from_slice(take(&mut bytes, n, "body")?);
        if !bytes.is_empty() {
            return Err(format!("{} bytes after the body", bytes.len()));
        }
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    /// The headers a replayed response carries: the stored ones and `idempotent-replayed`.
    pub fn replay_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.insert(
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
        headers
    }
}

/// What the claim of a key found.
pub(crate) enum Claim {
    /// Send the request; `Some` holds the key (complete or release it after), `None` runs
    /// without deduplication (the store was unreachable).
    Run(Option<HolderToken>),
    /// The stored response of an earlier request.
    Replay(StoredResponse),
    /// Not sent.
    Refused(IdempotencyRefusal),
}

/// One deduplicated request's view of the store: the shared claim, renewal and settling of
/// `execute_idempotent` ([`Call`]) under the request's store key, with the HTTP encoding of
/// responses. A request dropped while it holds the key releases it.
pub(crate) struct Deduplicated<'a> {
    call: Call<'a>,
    /// The caller's `Idempotency-Key`.
    key: &'a str,
    /// The store's key: the caller's, scoped to the integration and service.
    store_key: String,
    max_stored: usize,
    /// Armed while the key is ours and neither stored nor released.
    guard: Mutex<Option<ClaimGuard>>,
}

impl<'a> Deduplicated<'a> {
    pub fn new(
        dedup: &'a Deduplication,
        store: &'a Arc<dyn IdempotencyStore>,
        policy: &'a RetryPolicy,
        service: &'a str,
        operation: &'a str,
        key: &'a str,
    ) -> Self {
        Self {
            call: Call {
                policy,
                options: &dedup.options,
                store,
                service,
                operation,
            },
            key,
            store_key: format!("http\u{1f}{service}\u{1f}{key}"),
            max_stored: dedup.max_stored,
            guard: Mutex::new(None),
        }
    }

    /// Claims the key for a request with this fingerprint, waiting on a running duplicate.
    pub async fn claim(&self, fingerprint: &str) -> Claim {
        let key = || self.key.to_string();
        match self.call.claim(&self.store_key, fingerprint).await {
            Ok(Claimed::Started(token)) => {
                *self.guard.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(self.call.guard(&self.store_key, &token));
                Claim::Run(Some(token))
            }
            Ok(Claimed::Completed(bytes)) => match StoredResponse::decode(&bytes) {
                Ok(stored) => Claim::Replay(stored),
                Err(reason) => {
                    Claim::Refused(IdempotencyRefusal::Unreadable { key: key(), reason })
                }
            },
            Ok(Claimed::Mismatch) => Claim::Refused(IdempotencyRefusal::KeyReused { key: key() }),
            Ok(Claimed::InProgress) => {
                Claim::Refused(IdempotencyRefusal::InProgress { key: key() })
            }
            Err(e) => {
                tracing::warn!(service = self.call.service, operation = self.call.operation, store = self.call.store.name(), error = %e, "idempotency store unreachable; sending without deduplication");
                Claim::Run(None)
            }
        }
    }

    /// Runs `work` while renewing the lease `token` holds every third of it.
    pub async fn renewing<F: Future>(&self, token: Option<&HolderToken>, work: F) -> F::Output {
        match token {
            Some(token) => self.call.renewing(&self.store_key, token, work).await,
            None => work.await,
        }
    }

    /// Stores `response` (a success) under the key, or releases the key when there is none or
    /// it does not fit. Store failures are logged and counted, never returned; a store that does
    /// not answer gets the result (or the release) again in the background within the lease.
    pub async fn settle(&self, token: Option<&HolderToken>, response: Option<&StoredResponse>) {
        let Some(token) = token else { return };
        match response.map(|r| r.encode(self.max_stored)) {
            Some(Some(bytes)) => {
                self.call.record_bytes(&self.store_key, token, bytes).await;
            }
            other => {
                if matches!(other, Some(None)) {
                    self.call.count("result_too_large");
                    tracing::warn!(
                        service = self.call.service,
                        operation = self.call.operation,
                        max_bytes = self.max_stored,
                        "response too large to store; releasing the idempotency key"
                    );
                }
                self.call.release(&self.store_key, token).await;
            }
        }
        if let Some(mut guard) = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take() {
            guard.disarm();
        }
    }
}

/// A body read up to a limit: whole, or the part read and the rest.
pub(crate) enum Collected<B: Body> {
    /// The whole body (data only; it had no trailers).
    Whole(Vec<Bytes>),
    /// Longer than the limit, or with trailers: what was read, then the rest.
    Partial(IdempotentBody<B>),
    /// Reading failed: what was read, then the error.
    Failed(IdempotentBody<B>),
}

/// Reads `body` until it ends or `limit` bytes were read.
pub(crate) async fn collect<B: Body>(body: B, limit: usize) -> Collected<B> {
    let mut body = Box::pin(body);
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        if body.is_end_stream() {
            return Collected::Whole(head);
        }
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        match frame {
            None => return Collected::Whole(head),
            Some(Err(e)) => {
                return Collected::Failed(IdempotentBody {
                    head: head.into(),
                    trailers: None,
                    rest: Rest::Failed(Some(e)),
                })
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    len = len.saturating_add(bytes.len());
                    head.push(bytes);
                    if len > limit {
                        return Collected::Partial(IdempotentBody {
                            head: head.into(),
                            trailers: None,
                            rest: Rest::Live(body),
                        });
                    }
                }
                Err(frame) => {
                    return Collected::Partial(IdempotentBody {
                        head: head.into(),
                        trailers: frame.into_trailers().ok(),
                        rest: Rest::Live(body),
                    })
                }
            },
        }
    }
}

/// A response body under an idempotency store: a stored or read-ahead part, then whatever is
/// left of the live body.
pub struct IdempotentBody<B: Body> {
    head: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Rest<B>,
}

enum Rest<B: Body> {
    Live(Pin<Box<B>>),
    Failed(Option<B::Error>),
    Done,
}

impl<B: Body> IdempotentBody<B> {
    /// A live body, untouched.
    pub fn live(body: B) -> Self {
        Self {
            head: VecDeque::new(),
            trailers: None,
            rest: Rest::Live(Box::pin(body)),
        }
    }

    /// A whole body in memory.
    pub fn whole(body: Bytes) -> Self {
        Self {
            head: VecDeque::from([body]),
            trailers: None,
            rest: Rest::Done,
        }
    }
}

impl<B: Body> IdempotentBody<B> {
    /// What was read ahead, and the rest of the body (`None` once it failed or ended).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn into_read_ahead(self) -> (Vec<Bytes>, Option<HeaderMap>, Option<Pin<Box<B>>>) {
        let rest = match self.rest {
            Rest::Live(body) => Some(body),
            Rest::Failed(_) | Rest::Done => None,
        };
        (Vec::from(self.head), self.trailers, rest)
    }
}

/// `chunks` as one `Bytes` (without a copy when there is one chunk).
pub(crate) fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    }
}

impl<B: Body> fmt::Debug for IdempotentBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentBody")
            .field("buffered_chunks", &self.head.len())
            .field("live", &matches!(self.rest, Rest::Live(_)))
            .finish()
    }
}

// Nothing in it is pinned in place: the live body is boxed, the error only moved out.
impl<B: Body> Unpin for IdempotentBody<B> {}

impl<B: Body> Body for IdempotentBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match &mut this.rest {
            Rest::Live(body) => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                Poll::Ready(
                    frame.map(|f| {
                        f.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                    }),
                )
            }
            Rest::Failed(error) => Poll::Ready(error.take().map(Err)),
            Rest::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty()
            && self.trailers.is_none()
            && match &self.rest {
                Rest::Live(body) => body.is_end_stream(),
                Rest::Failed(error) => error.is_none(),
                Rest::Done => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self.head.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            Rest::Live(body) => {
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(head));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(head));
                }
                hint
            }
            _ => SizeHint::with_exact(head),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(br#"{"id":7}"#),
        }
    }

    #[test]
    fn a_stored_response_round_trips_without_hop_by_hop_headers() {
        let bytes = sample().encode(DEFAULT_MAX_STORED_RESPONSE).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back = StoredResponse::decode(&bytes).unwrap();
        assert_eq!(back.status, StatusCode::CREATED);
        assert_eq!(back.body, sample().body);
        assert_eq!(back.headers.get_all("set-cookie").iter().count(), 2);
        assert!(back.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn a_response_over_the_cap_is_not_encoded() {
        let full = sample().encode(usize::MAX).unwrap();
        assert!(sample().encode(full.len()).is_some());
        assert!(sample().encode(full.len() - 1).is_none());
    }

    #[test]
    fn damaged_or_foreign_records_are_named() {
        let bytes = sample().encode(usize::MAX).unwrap();
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            StoredResponse::decode(&other).unwrap_err(),
            "format version 9, this build reads 1"
        );
        assert_eq!(
            StoredResponse::decode(&bytes[..bytes.len() - 1]).unwrap_err(),
            "truncated at the body"
        );
        assert!(StoredResponse::decode(&[]).unwrap_err().contains("version"));
    }

    #[test]
    fn the_fingerprint_covers_method_uri_and_body() {
        let a = fingerprint(&Method::POST, "/orders", [&b"amount=1"[..]]);
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            fingerprint(&Method::POST, "/orders", [&b"amount="[..], &b"1"[..]])
        );
        assert_ne!(a, fingerprint(&Method::POST, "/orders", [&b"amount=2"[..]]));
        assert_ne!(
            a,
            fingerprint(&Method::PATCH, "/orders", [&b"amount=1"[..]])
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/orders/", [&b"amount=1"[..]])
        );
    }
}
