//! Futures cut at a time limit, when there is one, built without an `async fn` (whose arguments
//! and locals would each keep a copy of the future):
//!
//! - [`Bounded`] keeps the timer on the heap, allocated only when a limit is set: the
//!   executor's (a policy's own attempt timeout or `max_elapsed` — most calls have neither, and
//!   then the future is the operation's, with nothing beside it);
//! - [`Timed`] keeps it inline: the HTTP integrations' attempt timeouts, which are usually set.
//!
//! [`InSpan`] is a first attempt's future in its `attempt` span, as `tracing::Instrumented`
//! keeps it, but polled inline by the future around it (one copy of the output less).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Timeout;

pin_project_lite::pin_project! {
    /// `F`, or `F` within a limit: `Ok(output)`, or `Err(limit)` when the limit ran out first.
    #[project = BoundedProjection]
    pub(crate) enum Bounded<F> {
        /// No limit.
        Free {
            #[pin]
            future: F,
        },
        /// Cut at `limit`.
        Limited {
            timeout: Pin<Box<Timeout<F>>>,
            limit: Duration,
        },
    }
}

impl<F: Future> Bounded<F> {
    /// `future`, cut at `limit` when there is one.
    pub(crate) fn new(future: F, limit: Option<Duration>) -> Self {
        match limit {
            None => Self::Free { future },
            Some(limit) => Self::Limited {
                timeout: Box::pin(tokio::time::timeout(limit, future)),
                limit,
            },
        }
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Result<F::Output, Duration>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundedProjection::Free { future } => future.poll(cx).map(Ok),
            BoundedProjection::Limited { timeout, limit } => {
                let limit = *limit;
                timeout.as_mut().poll(cx).map(|r| r.map_err(|_| limit))
            }
        }
    }
}

#[cfg(any(feature = "tower", feature = "reqwest"))]
pin_project_lite::pin_project! {
    /// [`Bounded`] with the timer inline.
    #[project = TimedProjection]
    pub(crate) enum Timed<F> {
        /// No limit.
        Free {
            #[pin]
            future: F,
        },
        /// Cut at `limit`.
        Limited {
            #[pin]
            timeout: Timeout<F>,
            limit: Duration,
        },
    }
}

#[cfg(any(feature = "tower", feature = "reqwest"))]
impl<F: Future> Timed<F> {
    /// `future`, cut at `limit` when there is one.
    pub(crate) fn new(future: F, limit: Option<Duration>) -> Self {
        match limit {
            None => Self::Free { future },
            Some(limit) => Self::Limited {
                timeout: tokio::time::timeout(limit, future),
                limit,
            },
        }
    }
}

#[cfg(any(feature = "tower", feature = "reqwest"))]
impl<F: Future> Future for Timed<F> {
    type Output = Result<F::Output, Duration>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimedProjection::Free { future } => future.poll(cx).map(Ok),
            TimedProjection::Limited { timeout, limit } => {
                let limit = *limit;
                timeout.poll(cx).map(|r| r.map_err(|_| limit))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A future in a span, entered while it is polled and while it is dropped — what
    /// `tracing::Instrumented` does, with a poll that the caller's future inlines. The span is
    /// a `tracing::Span`, or anything that [enters one](EnterSpan) (a call's first spans, kept
    /// compact: the tower layer's `FirstSpans`).
    pub(crate) struct InSpan<F, S = tracing::Span>
    where
        S: EnterSpan,
    {
        #[pin]
        future: Option<F>,
        span: S,
    }

    impl<F, S> PinnedDrop for InSpan<F, S>
    where
        S: EnterSpan,
    {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.enter_span();
            this.future.set(None);
        }
    }
}

/// What an [`InSpan`] enters around each poll of its future and its drop.
pub(crate) trait EnterSpan {
    /// Enters the span, when there is one, until the guard is dropped.
    fn enter_span(&self) -> Option<tracing::span::Entered<'_>>;
}

impl EnterSpan for tracing::Span {
    #[inline]
    fn enter_span(&self) -> Option<tracing::span::Entered<'_>> {
        Some(self.enter())
    }
}

impl<F, S: EnterSpan> InSpan<F, S> {
    pub(crate) fn new(future: F, span: S) -> Self {
        Self {
            future: Some(future),
            span,
        }
    }

    /// Drops the future (in the span, as `drop` does) once it is over, keeping the span; it
    /// must not be polled again.
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn finish(self: Pin<&mut Self>) {
        let mut this = self.project();
        let _entered = this.span.enter_span();
        this.future.set(None);
    }

    /// [`finish`](Self::finish), then the span, taken out (`S::default()` left).
    #[cfg(feature = "tower")]
    pub(crate) fn finish_and_take(mut self: Pin<&mut Self>) -> S
    where
        S: Default,
    {
        self.as_mut().finish();
        std::mem::take(self.project().span)
    }
}

impl<F: Future, S: EnterSpan> Future for InSpan<F, S> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter_span();
        match this.future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => panic!("polled after completion"),
        }
    }
}
