//! From a synchronous import to an asynchronous backend, within a deadline.
//!
//! Component calls are synchronous (wasmtime's `component-model-async` stays off: it makes every
//! call several times slower), while the coordinator and the idempotency store are `async`. An
//! import therefore has to wait for a future on a thread that may itself be a tokio worker — or
//! the only thread of a current-thread runtime, where `block_in_place` panics and `block_on`
//! would deadlock. So the wait never relies on the caller's runtime:
//!
//! 1. the future is polled once on the calling thread, inside the context of the bridge's own
//!    runtime (so any timer or task it creates lives there): an in-memory backend answers here,
//!    without a thread hop;
//! 2. if it is still pending, it moves to the bridge thread — one per process, running a
//!    current-thread runtime — and the caller waits on a channel with `recv_timeout` until the
//!    deadline.
//!
//! Whatever happens the caller is back by its deadline: a backend that never answers, a bridge
//! thread that could not start, or a future whose I/O driver lives on the (blocked) caller's
//! runtime all end as [`BridgeError`], which the imports report as a coordination error; the
//! guest then takes its fallback, exactly as a native caller would.

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::runtime::{Builder, Handle};

/// Why the bridge gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BridgeError {
    /// The deadline passed first.
    Timeout,
    /// The bridge runtime could not be started.
    Down,
}

fn bridge() -> Option<&'static Handle> {
    static BRIDGE: OnceLock<Option<Handle>> = OnceLock::new();
    BRIDGE
        .get_or_init(|| {
            let runtime = Builder::new_current_thread().enable_all().build().ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("ricochet-bridge".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Runs `future` to completion or until `deadline`, from synchronous code on any thread.
pub(crate) fn run_until<T, F>(deadline: Instant, future: F) -> Result<T, BridgeError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = bridge().ok_or(BridgeError::Down)?;
    let mut future = Box::pin(future);
    {
        let _context = handle.enter();
        if let Poll::Ready(value) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return Ok(value);
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(BridgeError::Timeout);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        if let Ok(value) = tokio::time::timeout(remaining, future).await {
            // The caller may have given up already; then nobody wants the value.
            let _ = tx.send(value);
        }
    });
    rx.recv_timeout(remaining).map_err(|_| BridgeError::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_futures_answer_inline() {
        let t = run_until(Instant::now() + Duration::from_millis(50), async { 7 });
        assert_eq!(t, Ok(7));
    }

    #[test]
    fn pending_futures_finish_on_the_bridge() {
        let t = run_until(Instant::now() + Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "slept"
        });
        assert_eq!(t, Ok("slept"));
    }

    #[test]
    fn silence_costs_the_deadline_and_no_more() {
        let started = Instant::now();
        let t = run_until(
            Instant::now() + Duration::from_millis(30),
            std::future::pending::<()>(),
        );
        assert_eq!(t, Err(BridgeError::Timeout));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(29) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_from_a_current_thread_runtime() {
        let t = run_until(Instant::now() + Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            1
        });
        assert_eq!(t, Ok(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_from_a_multi_thread_worker() {
        let t = run_until(Instant::now() + Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            2
        });
        assert_eq!(t, Ok(2));
    }
}
