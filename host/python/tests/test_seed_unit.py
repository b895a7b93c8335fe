"""The seed's five unit scenarios, async and sync, decorator and direct forms."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from prometheus_client import CollectorRegistry

from ricochet import (
    MaxRetriesExceeded,
    RetryConfig,
    RetryPolicy,
    ServiceUnavailableError,
    with_retry,
)

FAST = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05, coordination_enabled=False)


def quiet(config=FAST, **kw) -> RetryPolicy:
    return RetryPolicy(config, registry=CollectorRegistry(), logger=False, **kw)


class Flaky:
    """Fails `failures` times with `exc`, then returns "ok"."""

    def __init__(self, failures: int, exc: type[BaseException] = ServiceUnavailableError) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc
        self.times: list[float] = []

    def sync(self) -> str:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.calls <= self.failures:
            raise self.exc("boom")
        return "ok"

    async def __call__(self) -> str:
        return self.sync()


async def test_successful_operation_no_retries():
    op = Flaky(0)
    assert await quiet().execute_with_retry(op, "svc", "op") == "ok"
    assert op.calls == 1


def test_successful_operation_no_retries_sync():
    op = Flaky(0)
    assert quiet().execute_with_retry_sync(op.sync, "svc", "op") == "ok"
    assert op.calls == 1


async def test_success_after_retries():
    op = Flaky(2)
    assert await quiet().execute_with_retry(operation=op, service_name="stream", operation_name="data_fetch") == "ok"
    assert op.calls == 3


async def test_success_after_retries_decorator():
    op = Flaky(2)

    @with_retry(retry_config=FAST, retry_on=(ServiceUnavailableError,), service_name="lake", logger=False,
                registry=CollectorRegistry())
    async def call_service():
        return await op()

    assert await call_service() == "ok"
    assert op.calls == 3
    assert call_service.__name__ == "call_service"


def test_success_after_retries_sync_decorator():
    op = Flaky(2)

    @with_retry(retry_config=FAST, service_name="lake", logger=False, registry=CollectorRegistry())
    def call_service():
        return op.sync()

    assert call_service() == "ok"
    assert op.calls == 3


async def test_max_retries_exceeded():
    op = Flaky(10)
    with pytest.raises(MaxRetriesExceeded) as info:
        await quiet().execute_with_retry(op, "svc", "op")
    e = info.value
    assert op.calls == 3
    assert e.attempts == 3
    assert isinstance(e.last_error, ServiceUnavailableError)
    assert e.reason == "exhausted"
    assert e.elapsed > 0


def test_max_retries_exceeded_sync():
    op = Flaky(10)
    with pytest.raises(MaxRetriesExceeded) as info:
        quiet().execute_with_retry_sync(op.sync, "svc", "op")
    assert (info.value.attempts, info.value.reason, op.calls) == (3, "exhausted", 3)


async def test_non_retryable_error_is_raised_as_is():
    op = Flaky(10, exc=ValueError)
    with pytest.raises(ValueError):
        await quiet(retry_on=(ServiceUnavailableError,)).execute_with_retry(op, "svc", "op")
    assert op.calls == 1


async def test_backoff_timing_verification():
    # No jitter, no coordination: the sleeps are exactly the core's plan (100, 200, 400 ms).
    config = RetryConfig(max_attempts=4, initial_delay=0.1, max_delay=1.0, jitter=False, coordination_enabled=False)
    op = Flaky(3)
    assert await quiet(config).execute_with_retry(op, "svc", "op") == "ok"
    gaps = [b - a for a, b in zip(op.times, op.times[1:])]
    expected = [d / 1e6 for (_, _, d) in config.plan(0)]
    assert expected == [0.1, 0.2, 0.4]
    for gap, want in zip(gaps, expected):
        assert want <= gap < want + 0.09, (gaps, expected)  # slack for a loaded machine


async def test_jitter_distribution_check():
    # The seed's proportional jitter: within ±jitter_factor of the base, spread over the band.
    config = RetryConfig(max_attempts=2, initial_delay=1.0, max_delay=10.0, jitter_factor=0.1)
    delays = [config.plan(seed)[0][2] / 1e6 for seed in range(5000)]
    assert all(0.9 <= d <= 1.1 for d in delays)
    assert 0.99 < statistics.mean(delays) < 1.01
    # roughly uniform: each tenth of the band holds ~10 %
    bins = [0] * 10
    for d in delays:
        bins[min(9, int((d - 0.9) / 0.02))] += 1
    assert all(400 < b < 600 for b in bins), bins
    # and the executor really sleeps a jittered delay (not the base)
    config2 = RetryConfig(max_attempts=2, initial_delay=0.05, max_delay=1.0, jitter_factor=0.5, coordination_enabled=False)
    gaps = []
    for _ in range(5):
        op = Flaky(1)
        await quiet(config2).execute_with_retry(op, "svc", "op")
        gaps.append(op.times[1] - op.times[0])
    assert all(0.025 <= g < 0.125 for g in gaps), gaps
    assert len({round(g, 3) for g in gaps}) > 1, gaps


async def test_cancellation_cancels_the_sleep():
    config = RetryConfig(max_attempts=3, initial_delay=10.0, max_delay=10.0, coordination_enabled=False)
    op = Flaky(10)
    task = asyncio.create_task(quiet(config).execute_with_retry(op, "svc", "op"))
    await asyncio.sleep(0.05)
    assert op.calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)


async def test_attempt_timeout_bounds_each_attempt():
    calls = 0

    async def slow():
        nonlocal calls
        calls += 1
        if calls < 3:
            await asyncio.sleep(5)
        return "late ok"

    policy = quiet(attempt_timeout=0.05)
    t0 = time.monotonic()
    assert await policy.execute_with_retry(slow, "svc", "op") == "late ok"
    assert calls == 3
    assert time.monotonic() - t0 < 1.0


async def test_token_refresh_retries_an_expired_token_once():
    from ricochet import AuthExpiredError

    refreshed = []
    calls = 0

    async def op():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AuthExpiredError("token expired")
        return "ok"

    async def refresh():
        refreshed.append(1)
        return True

    assert await quiet(token_refresher=refresh).execute_with_retry(op, "svc", "op") == "ok"
    assert (calls, len(refreshed)) == (2, 1)

    # without a refresher an expired token is not retried
    calls = 0
    with pytest.raises(AuthExpiredError):
        await quiet().execute_with_retry(op, "svc", "op")
    assert calls == 1


async def test_max_elapsed_gives_up_with_deadline():
    config = RetryConfig(max_attempts=10, initial_delay=0.2, max_delay=1.0, max_elapsed=0.3, coordination_enabled=False)
    op = Flaky(100)
    with pytest.raises(MaxRetriesExceeded) as info:
        await quiet(config).execute_with_retry(op, "svc", "op")
    assert info.value.reason == "deadline"
    assert info.value.elapsed < 0.5


async def test_circuit_breaker_opens_and_rejects_without_calling():
    config = RetryConfig(
        max_attempts=2, initial_delay=0.001, max_delay=0.01, coordination_enabled=False,
        circuit_breaker={"failure_threshold": 2, "failure_rate": 0, "minimum_calls": 1, "window": 10,
                         "cool_down": 30, "half_open_probes": 1},
    )
    policy = quiet(config)
    op = Flaky(100)
    with pytest.raises(MaxRetriesExceeded):
        await policy.execute_with_retry(op, "svc", "op")
    before = op.calls
    with pytest.raises(MaxRetriesExceeded) as info:
        await policy.execute_with_retry(op, "svc", "op")
    assert info.value.reason == "circuit_open"
    assert op.calls == before  # refused: no call made
    # another service has its own breaker
    assert await policy.execute_with_retry(Flaky(0), "other", "op") == "ok"


async def test_retry_budget_stops_retries_when_empty():
    config = RetryConfig(max_attempts=5, initial_delay=0.001, max_delay=0.01, coordination_enabled=False,
                         retry_budget={"max_tokens": 2, "token_ratio": 0.1})
    policy = quiet(config)
    reasons = []
    for _ in range(3):
        with pytest.raises(MaxRetriesExceeded) as info:
            await policy.execute_with_retry(Flaky(100), "svc", "op")
        reasons.append(info.value.reason)
    assert "budget" in reasons
