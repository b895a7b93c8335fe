//! `Bounded`: a future cut at a time limit, when there is one — the same size as the future
//! itself plus a timer only when a limit is set, built without an `async fn` (whose arguments
//! and locals would each keep a copy of the future).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
            #[pin]
            timeout: tokio::time::Timeout<F>,
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
                timeout: tokio::time::timeout(limit, future),
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
                timeout.poll(cx).map(|r| r.map_err(|_| limit))
            }
        }
    }
}
