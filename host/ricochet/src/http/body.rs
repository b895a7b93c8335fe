//! Request bodies that can be sent again: recorded while the first attempt sends them.
//!
//! A retry needs the request body a second time, but most bodies can be read only once: tower's
//! `Retry` asks the policy to clone the whole request (tower-rs/tower#790), which a streaming
//! body cannot do. linkerd solves this by keeping a copy of what it sends, up to 64 KiB; so does
//! [`ReplayBody`]. The first attempt streams the caller's body through untouched — no waiting for
//! the end before sending, so a bidirectional gRPC stream still flows — while a [`BodyTape`]
//! keeps each chunk (a `Bytes` handle: a body that already holds `Bytes` is kept without a copy).
//! A retry is possible only when the tape holds the *whole* body:
//!
//! - the body ended (or its trailers arrived) before the attempt's failure was seen;
//! - it stayed within the limit (a body that announces a larger exact size is not recorded at
//!   all);
//! - it did not fail while being read.
//!
//! Otherwise the failure of the first attempt is final: a body is never replayed in part, and
//! the first attempt is never cut short to fit the limit.
//!
//! A body that an attempt dropped without reading a single frame (the connection was refused,
//! the service never became ready) goes back to the tape whole, and the next attempt sends it
//! as if it were the first: the commonest failure of all costs no limit. A body that had ended
//! before it was sent (a `GET`'s) needs no tape at all: every attempt sends it, empty, and
//! nothing is allocated to keep it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// How much of a request body is kept for retries when none is set: linkerd's figure.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// A request body on its way to one attempt: the caller's body, recorded as it is sent, or a
/// recording played back.
pub struct ReplayBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    /// The caller's body, read for the first (or only) attempt.
    Live {
        /// `None` only once handed back to the tape.
        source: Option<Pin<Box<B>>>,
        tape: Option<Arc<Tape>>,
        /// Whether a frame was asked for: an untouched body goes back to the tape on drop.
        touched: bool,
        /// Puts an untouched body back on the tape (made where `B: Send + 'static` is known).
        give_back: fn(Pin<Box<B>>, &Tape),
    },
    /// A complete recording, sent again.
    Replay {
        chunks: std::vec::IntoIter<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// The caller's body after a part of it was read ahead (for an idempotency fingerprint)
    /// and found too long: the part, then the rest. Sent once, never recorded.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    Resumed {
        head: std::vec::IntoIter<Bytes>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    },
}

impl<B: Body + Send + 'static> ReplayBody<B> {
    /// The caller's body for the first attempt, and the tape that records it (keeping at most
    /// `limit` bytes).
    pub fn record(source: B, limit: usize) -> (Self, BodyTape) {
        if source.is_end_stream() {
            // Nothing to record (a `GET`'s body): the caller's body goes as it is, and another
            // attempt sends it again, empty, as the recording of it would.
            return (
                Self::passthrough(source),
                BodyTape(Recording::Empty { limit }),
            );
        }
        let state = if source.size_hint().lower() > limit as u64 {
            TapeStatus::Overflowed
        } else {
            TapeStatus::Recording
        };
        let tape = Arc::new(Tape {
            limit,
            state: Mutex::new(TapeState {
                chunks: Vec::new(),
                len: 0,
                trailers: None,
                recording: state,
                unsent: None,
            }),
        });
        let body = Self::live(Box::pin(source), Some(tape.clone()));
        (body, BodyTape(Recording::Tape(tape)))
    }

    /// The caller's body for a request that is not retried: passed through, nothing kept.
    pub fn passthrough(source: B) -> Self {
        Self::live(Box::pin(source), None)
    }

    /// A body of which `head` (and `trailers`) were read ahead, then `rest`: sent once.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn resumed(
        head: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            inner: Inner::Resumed {
                head: head.into_iter(),
                trailers,
                rest,
            },
        }
    }

    fn live(source: Pin<Box<B>>, tape: Option<Arc<Tape>>) -> Self {
        fn give_back<B: Send + 'static>(source: Pin<Box<B>>, tape: &Tape) {
            tape.lock().unsent = Some(Box::new(source));
        }
        Self {
            inner: Inner::Live {
                source: Some(source),
                tape,
                touched: false,
                give_back: give_back::<B>,
            },
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Inner::Live {
            source,
            tape: Some(tape),
            touched: false,
            give_back,
        } = &mut self.inner
        {
            if let Some(source) = source.take() {
                give_back(source, tape);
            }
        }
    }
}

/// The recording of one request body, shared between the first attempt's body and the retries.
#[derive(Clone)]
pub struct BodyTape(Recording);

#[derive(Clone)]
enum Recording {
    /// A body that had ended before it was sent: nothing to keep, nothing allocated.
    Empty { limit: usize },
    /// Recorded as the first attempt sends it.
    Tape(Arc<Tape>),
}

struct Tape {
    limit: usize,
    state: Mutex<TapeState>,
}

struct TapeState {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    recording: TapeStatus,
    /// The caller's body, untouched, when its attempt dropped it without reading it.
    unsent: Option<Box<dyn std::any::Any + Send>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TapeStatus {
    /// The first attempt is still sending it.
    Recording,
    /// The whole body is on the tape.
    Complete,
    /// Larger than the limit: nothing kept.
    Overflowed,
    /// The caller's body failed while it was read.
    Failed,
}

impl Tape {
    fn lock(&self) -> MutexGuard<'_, TapeState> {
        // Nothing panics while holding the lock; a poisoned tape is still a consistent one.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BodyTape {
    /// A complete recording of a body that was read ahead whole (`chunks`, no trailers).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn whole(chunks: Vec<Bytes>, limit: usize) -> Self {
        let len = chunks.iter().map(Bytes::len).sum();
        Self(Recording::Tape(Arc::new(Tape {
            limit,
            state: Mutex::new(TapeState {
                chunks,
                len,
                trailers: None,
                recording: TapeStatus::Complete,
                unsent: None,
            }),
        })))
    }

    /// Whether another attempt can send the whole body: it is recorded in full, or it came
    /// back untouched.
    pub fn is_complete(&self) -> bool {
        let Recording::Tape(tape) = &self.0 else {
            return true;
        };
        let state = tape.lock();
        state.recording == TapeStatus::Complete || state.unsent.is_some()
    }

    /// Why the body cannot be sent again, if it cannot.
    pub fn not_replayable_reason(&self) -> Option<&'static str> {
        let Recording::Tape(tape) = &self.0 else {
            return None;
        };
        let state = tape.lock();
        if state.unsent.is_some() {
            return None;
        }
        match state.recording {
            TapeStatus::Complete => None,
            TapeStatus::Recording => Some("the request body was still being sent"),
            TapeStatus::Overflowed => Some("the request body is larger than the replay limit"),
            TapeStatus::Failed => Some("the request body failed while it was sent"),
        }
    }

    /// The body for another attempt: the caller's own when it came back untouched (recorded
    /// again as it is sent), else the recording; `None` when neither is whole. `B` is the
    /// caller's body type, as given to [`ReplayBody::record`].
    pub fn replay<B: Body + Send + 'static>(&self) -> Option<ReplayBody<B>> {
        let tape = match &self.0 {
            Recording::Empty { .. } => {
                return Some(ReplayBody {
                    inner: Inner::Replay {
                        chunks: Vec::new().into_iter(),
                        trailers: None,
                    },
                })
            }
            Recording::Tape(tape) => tape,
        };
        let mut state = tape.lock();
        if let Some(unsent) = state.unsent.take() {
            match unsent.downcast::<Pin<Box<B>>>() {
                Ok(source) => {
                    drop(state);
                    return Some(ReplayBody::live(*source, Some(tape.clone())));
                }
                // Asked for another type than was recorded: keep it for the right one.
                Err(other) => state.unsent = Some(other),
            }
        }
        (state.recording == TapeStatus::Complete).then(|| ReplayBody {
            inner: Inner::Replay {
                chunks: state.chunks.clone().into_iter(),
                trailers: state.trailers.clone(),
            },
        })
    }

    /// The replay limit this tape records up to, in bytes.
    pub fn limit(&self) -> usize {
        match &self.0 {
            Recording::Empty { limit } => *limit,
            Recording::Tape(tape) => tape.limit,
        }
    }
}

impl std::fmt::Debug for BodyTape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (recording, len) = match &self.0 {
            Recording::Empty { .. } => (TapeStatus::Complete, 0),
            Recording::Tape(tape) => {
                let s = tape.lock();
                (s.recording, s.len)
            }
        };
        f.debug_struct("BodyTape")
            .field("recording", &recording)
            .field("len", &len)
            .field("limit", &self.limit())
            .finish()
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Live { tape, .. } => f
                .debug_struct("ReplayBody::Live")
                .field("recorded", &tape.is_some())
                .finish_non_exhaustive(),
            Inner::Replay { chunks, .. } => f
                .debug_struct("ReplayBody::Replay")
                .field("chunks_left", &chunks.len())
                .finish_non_exhaustive(),
            Inner::Resumed { head, .. } => f
                .debug_struct("ReplayBody::Resumed")
                .field("chunks_read_ahead", &head.len())
                .finish_non_exhaustive(),
        }
    }
}

impl TapeState {
    fn data(&mut self, limit: usize, bytes: &Bytes) {
        if self.recording != TapeStatus::Recording {
            return;
        }
        self.len = self.len.saturating_add(bytes.len());
        if self.len > limit {
            self.recording = TapeStatus::Overflowed;
            self.chunks = Vec::new();
        } else if !bytes.is_empty() {
            self.chunks.push(bytes.clone());
        }
    }

    /// A recording that is complete stays complete: what was sent in full can be sent again.
    fn fail(&mut self) {
        if self.recording == TapeStatus::Recording {
            self.recording = TapeStatus::Failed;
            self.chunks = Vec::new();
        }
    }

    fn end(&mut self) {
        if self.recording == TapeStatus::Recording {
            self.recording = TapeStatus::Complete;
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        // `Inner` holds no pinned data of its own (the source is boxed), so it is `Unpin`.
        match &mut self.get_mut().inner {
            Inner::Replay { chunks, trailers } => Poll::Ready(match chunks.next() {
                Some(chunk) => Some(Ok(Frame::data(chunk))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            Inner::Resumed {
                head,
                trailers,
                rest,
            } => {
                if let Some(chunk) = head.next() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(t) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                let Some(source) = rest else {
                    return Poll::Ready(None);
                };
                let frame = ready!(source.as_mut().poll_frame(cx));
                Poll::Ready(
                    frame.map(|f| {
                        f.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                    }),
                )
            }
            Inner::Live {
                source: Some(source),
                tape,
                touched,
                ..
            } => loop {
                *touched = true;
                let frame = ready!(source.as_mut().poll_frame(cx));
                let out = match frame {
                    None => {
                        if let Some(t) = tape {
                            t.lock().end();
                        }
                        None
                    }
                    Some(Err(e)) => {
                        if let Some(t) = tape {
                            t.lock().fail();
                        }
                        Some(Err(e))
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            let bytes = data.copy_to_bytes(data.remaining());
                            if let Some(t) = tape {
                                t.lock().data(t.limit, &bytes);
                            }
                            Some(Ok(Frame::data(bytes)))
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => {
                                if let Some(t) = tape {
                                    let mut s = t.lock();
                                    if s.recording == TapeStatus::Recording {
                                        s.trailers = Some(trailers.clone());
                                    }
                                    s.end();
                                }
                                Some(Ok(Frame::trailers(trailers)))
                            }
                            // http-body 1 has only data and trailers frames; a kind this code
                            // cannot copy makes the body unreplayable rather than half-recorded.
                            Err(_) => {
                                if let Some(t) = tape {
                                    t.lock().fail();
                                }
                                continue;
                            }
                        },
                    },
                };
                // A sender may stop polling once the body says it has ended (hyper does): the
                // recording is complete then, not only after a final `None`.
                if let Some(t) = tape {
                    if source.is_end_stream() {
                        t.lock().end();
                    }
                }
                return Poll::Ready(out);
            },
            Inner::Live { source: None, .. } => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Replay { chunks, trailers } => chunks.len() == 0 && trailers.is_none(),
            Inner::Resumed {
                head,
                trailers,
                rest,
            } => {
                head.len() == 0
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|s| s.is_end_stream())
            }
            Inner::Live { source, .. } => source.as_ref().is_none_or(|s| s.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Replay { chunks, .. } => {
                SizeHint::with_exact(chunks.as_slice().iter().map(|c| c.len() as u64).sum())
            }
            Inner::Resumed { head, rest, .. } => {
                let read: u64 = head.as_slice().iter().map(|c| c.len() as u64).sum();
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |s| s.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
            Inner::Live { source, .. } => source
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |s| s.size_hint()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn an_ended_body_is_sent_and_sent_again_empty_without_a_tape() {
        let (first, tape) = ReplayBody::record(Full::new(Bytes::new()), 16);
        assert!(matches!(tape.0, Recording::Empty { .. }));
        assert!(first.is_end_stream());
        assert!(first.collect().await.unwrap().to_bytes().is_empty());
        assert!(tape.is_complete());
        assert_eq!(tape.not_replayable_reason(), None);
        assert_eq!(tape.limit(), 16);
        for _ in 0..2 {
            let again = tape.replay::<Full<Bytes>>().unwrap();
            assert!(again.is_end_stream());
            assert_eq!(again.size_hint().exact(), Some(0));
            assert!(again.collect().await.unwrap().to_bytes().is_empty());
        }
    }

    #[tokio::test]
    async fn a_body_sent_whole_is_sent_again_whole() {
        let (first, tape) = ReplayBody::record(Full::new(Bytes::from_static(b"amount=1250")), 16);
        assert!(!tape.is_complete());
        assert_eq!(first.collect().await.unwrap().to_bytes(), "amount=1250");
        assert!(tape.is_complete());
        let again = tape.replay::<Full<Bytes>>().unwrap();
        assert_eq!(again.collect().await.unwrap().to_bytes(), "amount=1250");
    }

    #[tokio::test]
    async fn an_untouched_body_comes_back_whole() {
        let (first, tape) = ReplayBody::record(Full::new(Bytes::from_static(b"amount=1250")), 4);
        drop(first);
        assert!(tape.is_complete());
        let again = tape.replay::<Full<Bytes>>().unwrap();
        assert_eq!(again.collect().await.unwrap().to_bytes(), "amount=1250");
    }
}
