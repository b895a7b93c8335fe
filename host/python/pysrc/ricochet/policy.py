"""``RetryPolicy.execute_with_retry`` and ``@with_retry``: the seed's API on the core's decisions.

After a failed attempt the error is classified (:mod:`ricochet.errors`), the core decides
(``_core.RetryState.on_failure``: retry after how long, or give up and why), a coordinated retry
asks the coordinator for a slot (:mod:`ricochet.coordination`), and the executor sleeps — with
``asyncio.sleep``, so cancelling the task cancels the sleep; plain ``def`` functions sleep with
``time.sleep``. No delay is computed here. A first-try success touches nothing but the metrics:
no seed, no trace id, no log line, no coordinator.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _core
from ._core import CircuitBreaker, RetryBudget, RetryConfig, RetryState
from .coordination import (
    DEFAULT_COORDINATION_DEADLINE,
    InMemoryCoordinator,
    schedule_retry,
    schedule_retry_sync,
)
from .errors import (
    AUTH_EXPIRED_INDEX,
    BUSINESS_INDEX,
    CATEGORIES,
    UNAVAILABLE_INDEX,
    MaxRetriesExceeded,
    classify,
    config_error,
)
from .idempotency import (
    IdempotencyInProgress,
    IdempotencyMismatch,
    InMemoryIdempotencyStore,
    NotHolder,
    hash_fingerprint,
    new_token,
)
from .observability import RetryMetrics, current_trace_id, default_logger

T = TypeVar("T")

_warn = logging.getLogger("ricochet")
_GIVE_UP_ERRORS = ("exhausted", "non_retryable")


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class _Call:
    """One logical call's bookkeeping: attempts, the core's state, trace id, guards."""

    __slots__ = ("policy", "service", "operation", "start", "attempt", "state", "trace_id", "breaker", "budget", "last_error")

    def __init__(self, policy: RetryPolicy, service: str, operation: str, start: float) -> None:
        self.policy = policy
        self.service = service
        self.operation = operation
        self.start = start
        self.attempt = 0
        self.state: RetryState | None = None
        self.trace_id: str | None = None
        self.breaker, self.budget = policy._guards(service)
        self.last_error: BaseException | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _core_state(self) -> RetryState:
        if self.state is None:
            self.state = RetryState(self.policy.config, random.getrandbits(64), int(self.start * 1e6))
        return self.state

    def _log(self, level: str, delay: float, error: str, attempt: int | None = None) -> None:
        logger = self.policy.logger
        if logger is None:
            return
        if self.trace_id is None:
            self.trace_id = current_trace_id()
        getattr(logger, level)(
            "retry",
            service=self.service,
            operation=self.operation,
            attempt=self.attempt if attempt is None else attempt,
            delay=delay,
            error=error,
            trace_id=self.trace_id,
        )

    def admit(self) -> None:
        """Counts the attempt; raises ``MaxRetriesExceeded(reason="circuit_open")`` when the
        service's breaker refuses it."""
        self.attempt += 1
        breaker = self.breaker
        if breaker is not None:
            kind, _ = breaker.admit(_now_us())
            if kind == "rejected":
                self.attempt -= 1
                m = self.policy.metrics
                if m is not None:
                    m.circuit_rejected.labels(self.service, self.operation).inc()
                self.give_up("circuit_open", self.last_error, "circuit open")
        m = self.policy.metrics
        if m is not None:
            m.attempts.labels(self.service, self.operation, str(self.attempt)).inc()

    def attempt_timeout(self) -> float | None:
        timeout = self.policy.attempt_timeout
        if self.policy._max_elapsed_us is not None:
            left = max(0.0, self.start + self.policy._max_elapsed_us / 1e6 - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    def succeeded(self) -> None:
        if self.breaker is not None or self.budget is not None:
            self._core_state().on_success(_now_us(), self.breaker, self.budget)
        m = self.policy.metrics
        if m is not None:
            m.success.labels(self.service, self.operation, str(self.attempt)).inc()
            m.duration.labels(self.service, self.operation).observe(self.elapsed())

    def failed(self, exc: BaseException, token_refreshed: bool) -> tuple[int, tuple[int, int, int, int | None] | None, int]:
        """The core's decision on ``exc``: ``(delay_us, slot_request, category)``; gives up by raising."""
        self.last_error = exc
        index, server_delay_us = self.policy._categorize(exc)
        delay_us, reason, slot = self._core_state().on_failure(
            index, _now_us(), server_delay_us, token_refreshed, self.breaker, self.budget
        )
        message = _render(exc)
        self._log("warning", 0.0, message)
        if reason is not None:
            self.give_up(reason, exc, message, CATEGORIES[index][0])
        return delay_us, slot, index

    def give_up(self, reason: str, exc: BaseException | None, message: str, category: str | None = None) -> None:
        m = self.policy.metrics
        error_type = category if (reason in _GIVE_UP_ERRORS and category) else reason
        if m is not None:
            m.failure.labels(self.service, self.operation, error_type).inc()
            m.duration.labels(self.service, self.operation).observe(self.elapsed())
        self._log("error", 0.0, message)
        if reason == "non_retryable" and exc is not None:
            raise exc
        raise MaxRetriesExceeded(self.attempt, exc, self.elapsed(), reason) from exc

    def fire_by(self) -> float | None:
        if self.policy._max_elapsed_us is None:
            return None
        return self.start + self.policy._max_elapsed_us / 1e6

    def scheduled(self, sched: Any, message: str) -> float:
        if sched.give_up:
            self.give_up(sched.give_up, self.last_error, message)
        delay = sched.delay_us / 1e6
        self._log("info", delay, message)
        return delay


def _render(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RetryPolicy:
    """Retries by a :class:`RetryConfig`, every decision made by ricochet's core.

    ``retry_on``: the exception types that may be retried (default: any the classifier knows);
    within them the category decides (an HTTP 404 is not retried), and an eligible exception
    the classifier does not know counts as ``ServiceUnavailableError``. ``coordinator``: where
    retry slots come from (default: in memory; ``RedisCoordinator`` shares them with the fleet).
    ``idempotency_store``: for :meth:`execute_idempotent` (default: in memory). ``registry``: the
    prometheus_client registry for the seed's metrics (default: the global one); ``metrics=False``
    turns them off. ``logger``: a structlog logger (default: the seed's JSON lines on stderr;
    ``False`` for none). ``attempt_timeout``: seconds per attempt (async only).
    ``token_refresher``: called (awaited if async) when a token expired (HTTP 401 /
    ``AuthExpiredError``); a truthy result lets the call retry once.
    """

    def __init__(
        self,
        config: RetryConfig | None = None,
        *,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] | None = None,
        coordinator: Any = None,
        idempotency_store: Any = None,
        registry: Any = None,
        metrics: bool | RetryMetrics = True,
        logger: Any = None,
        attempt_timeout: float | None = None,
        token_refresher: Callable[[], Any] | None = None,
        coordination_deadline: float = DEFAULT_COORDINATION_DEADLINE,
        store_deadline: float = 0.1,
        lease: float = 30.0,
        wait: float = 30.0,
    ) -> None:
        if config is None:
            config = RetryConfig()
        if not isinstance(config, RetryConfig):
            raise TypeError(f"config must be a RetryConfig, got {type(config).__name__}")
        self.config = config
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if retry_on is not None:
            try:
                retry_on = tuple(retry_on)
            except TypeError:
                raise config_error("retry_on", retry_on, f"retry_on must be a tuple of exception types, got {retry_on!r}") from None
            for t in retry_on:
                if not (isinstance(t, type) and issubclass(t, BaseException)):
                    raise config_error("retry_on", t, f"retry_on must hold exception types, got {t!r}")
        self.retry_on = retry_on
        self.coordinator = coordinator if coordinator is not None else InMemoryCoordinator()
        self.idempotency_store = idempotency_store if idempotency_store is not None else InMemoryIdempotencyStore()
        if isinstance(metrics, RetryMetrics):
            self.metrics: RetryMetrics | None = metrics
        elif metrics:
            self.metrics = RetryMetrics.for_registry(registry)
        else:
            self.metrics = None
        self.logger = None if logger is False else (logger if logger is not None else default_logger())
        for name, value in (("attempt_timeout", attempt_timeout), ("coordination_deadline", coordination_deadline),
                            ("store_deadline", store_deadline), ("lease", lease), ("wait", wait)):
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not (value >= 0) or value == float("inf")):
                raise config_error(name, value, f"{name} must be a non-negative number of seconds, got {value!r}")
        self.attempt_timeout = attempt_timeout
        self.token_refresher = token_refresher
        self.coordination_deadline = coordination_deadline
        self.store_deadline = store_deadline
        self.lease = lease
        self.wait = wait
        self._max_elapsed_us = config.max_elapsed_us
        self._has_guards = config.circuit_breaker is not None or config.retry_budget is not None
        self._fast = attempt_timeout is None and self._max_elapsed_us is None and not self._has_guards
        self._breakers: dict[str, CircuitBreaker | None] = {}
        self._budgets: dict[str, RetryBudget | None] = {}

    def _guards(self, service: str) -> tuple[CircuitBreaker | None, RetryBudget | None]:
        if not self._has_guards:
            return None, None
        if service not in self._breakers:
            self._breakers[service] = CircuitBreaker.for_config(self.config)
            self._budgets[service] = RetryBudget.for_config(self.config)
        return self._breakers[service], self._budgets[service]

    def _categorize(self, exc: BaseException) -> tuple[int, int | None]:
        index, delay_us = classify(exc)
        if self.retry_on is not None:
            if not isinstance(exc, self.retry_on):
                return BUSINESS_INDEX, None
            if index is None:
                return UNAVAILABLE_INDEX, None
            return index, delay_us
        if index is None:
            return BUSINESS_INDEX, None
        return index, delay_us

    # --- async -----------------------------------------------------------------------------

    async def execute_with_retry(
        self,
        operation: Callable[[], Awaitable[T]],
        service_name: str = "default",
        operation_name: str | None = None,
    ) -> T:
        """Runs ``operation()`` (a coroutine function, awaited) with retries; its result, or
        ``MaxRetriesExceeded`` once the core gives up. A non-retryable error is re-raised as is."""
        if operation_name is None:
            operation_name = getattr(operation, "__name__", "operation")
        if self._fast:
            start = time.monotonic()
            try:
                result = await operation()
            except Exception as exc:  # noqa: BLE001 - classified below; CancelledError passes
                return await self._retrying(operation, service_name, operation_name, start, exc)
            m = self.metrics
            if m is not None:
                attempt, success, duration = m.first_try(service_name, operation_name)
                attempt.inc()
                success.inc()
                duration.observe(time.monotonic() - start)
            return result
        return await self._retrying(operation, service_name, operation_name, time.monotonic(), None)

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], service: str, op: str, start: float, first: BaseException | None
    ) -> T:
        call = _Call(self, service, op, start)
        pending = first
        if pending is not None:
            call.attempt = 1
            if self.metrics is not None:
                self.metrics.attempts.labels(service, op, "1").inc()
        while True:
            if pending is None:
                call.admit()
                timeout = call.attempt_timeout()
                try:
                    if timeout is None:
                        result = await operation()
                    else:
                        async with asyncio.timeout(timeout):
                            result = await operation()
                except Exception as exc:  # noqa: BLE001 - classified; CancelledError passes
                    pending = exc
                else:
                    call.succeeded()
                    return result
            exc, pending = pending, None
            refreshed = await self._refresh_token(call, exc)
            delay_us, slot, _ = call.failed(exc, refreshed)
            if slot is not None:
                sched = await schedule_retry(
                    self.coordinator, self.config, call._core_state().seed, slot[2], delay_us,
                    service, op, self.coordination_deadline, self.metrics, call.fire_by(),
                )
                delay = call.scheduled(sched, _render(exc))
            else:
                delay = delay_us / 1e6
                call._log("info", delay, _render(exc))
            await asyncio.sleep(delay)

    async def _refresh_token(self, call: _Call, exc: BaseException) -> bool:
        if self.token_refresher is None or self._categorize(exc)[0] != AUTH_EXPIRED_INDEX:
            return False
        if not call._core_state().may_retry_auth():
            return False
        refreshed = self.token_refresher()
        if inspect.isawaitable(refreshed):
            refreshed = await refreshed
        return bool(refreshed)

    # --- sync ------------------------------------------------------------------------------

    def execute_with_retry_sync(
        self, operation: Callable[[], T], service_name: str = "default", operation_name: str | None = None
    ) -> T:
        """:meth:`execute_with_retry` for a plain function, sleeping with ``time.sleep``."""
        if operation_name is None:
            operation_name = getattr(operation, "__name__", "operation")
        call = _Call(self, service_name, operation_name, time.monotonic())
        while True:
            call.admit()
            try:
                result = operation()
            except Exception as exc:  # noqa: BLE001 - classified below
                refreshed = False
                if self.token_refresher is not None and self._categorize(exc)[0] == AUTH_EXPIRED_INDEX \
                        and call._core_state().may_retry_auth():
                    refreshed = bool(self.token_refresher())
                delay_us, slot, _ = call.failed(exc, refreshed)
                if slot is not None:
                    sched = schedule_retry_sync(
                        self.coordinator, self.config, call._core_state().seed, slot[2], delay_us,
                        service_name, operation_name, self.metrics, call.fire_by(),
                    )
                    delay = call.scheduled(sched, _render(exc))
                else:
                    delay = delay_us / 1e6
                    call._log("info", delay, _render(exc))
                time.sleep(delay)
            else:
                call.succeeded()
                return result

    # --- idempotency -----------------------------------------------------------------------

    async def execute_idempotent(
        self,
        key: str,
        operation: Callable[[], Awaitable[T]],
        service_name: str = "default",
        operation_name: str | None = None,
        *,
        fingerprint: str = "",
    ) -> T:
        """Runs ``operation`` (with retries) at most once per ``(service, operation, key)``;
        a duplicate gets the stored (JSON) result. ``fingerprint`` identifies the payload: the
        same key with another fingerprint raises ``IdempotencyMismatch``. A store that is down
        or slower than ``store_deadline`` never fails a call: it runs without deduplication and
        ``retry_idempotency_fallback_total`` counts it."""
        if operation_name is None:
            operation_name = getattr(operation, "__name__", "operation")
        if not isinstance(key, str) or not key:
            raise config_error("key", key, f"idempotency key must be a non-empty string, got {key!r}")
        if not isinstance(fingerprint, str):
            raise config_error("fingerprint", fingerprint, f"fingerprint must be a string, got {fingerprint!r}")
        store = self.idempotency_store
        prefix = getattr(store, "key_prefix", "ricochet")
        record = _core.idempotency_record_key(prefix, service_name, operation_name, key)
        fp = hash_fingerprint(fingerprint)
        token = new_token()
        lease_ms = max(1, int(self.lease * 1000))
        waited_since = time.monotonic()
        poll = 0.005
        while True:
            try:
                async with asyncio.timeout(self.store_deadline):
                    kind, value = await store.begin(record, fp, token, lease_ms)
            except Exception as exc:  # noqa: BLE001 - the store is down or slow: run unguarded
                self._count_idempotency(service_name, operation_name, _store_reason(exc, prefix_for="begin"))
                _warn.warning("idempotency store unreachable; running without deduplication: %s", _scrub(store, exc))
                return await self.execute_with_retry(operation, service_name, operation_name)
            if kind == "started":
                break
            if kind == "completed":
                return json.loads(value)
            if kind == "mismatch":
                raise IdempotencyMismatch(
                    f"idempotency key {key!r} of {service_name}/{operation_name} was used with a different payload"
                )
            waited = time.monotonic() - waited_since
            if waited >= self.wait:
                raise IdempotencyInProgress(f"idempotency key {key!r} is in progress elsewhere")
            await asyncio.sleep(min(poll, self.wait - waited, max(value, 1) / 1000))
            poll = min(poll * 2, 0.1)
        renewer = asyncio.create_task(self._renew(store, record, token, lease_ms))
        try:
            result = await self.execute_with_retry(operation, service_name, operation_name)
        except BaseException:
            renewer.cancel()
            try:
                async with asyncio.timeout(self.store_deadline):
                    await store.fail(record, token)
            except Exception as exc:  # noqa: BLE001 - the claim expires with its lease
                _warn.warning("could not release the idempotency key after a failure: %s", _scrub(store, exc))
            raise
        renewer.cancel()
        try:
            payload = json.dumps(result, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            self._count_idempotency(service_name, operation_name, "serialize")
            try:
                async with asyncio.timeout(self.store_deadline):
                    await store.fail(record, token)
            except Exception:  # noqa: BLE001
                pass
            return result
        try:
            async with asyncio.timeout(self.store_deadline):
                await store.complete(record, fp, token, payload, max(1, self.config.idempotency_ttl_us // 1000))
        except NotHolder:
            self._count_idempotency(service_name, operation_name, "lease_lost")
        except Exception as exc:  # noqa: BLE001 - the result stands, unrecorded
            self._count_idempotency(service_name, operation_name, _store_reason(exc, prefix_for="store"))
        return result

    async def _renew(self, store: Any, record: str, token: str, lease_ms: int) -> None:
        period = max(lease_ms / 3000, 0.001)
        while True:
            await asyncio.sleep(period)
            try:
                async with asyncio.timeout(self.store_deadline):
                    await store.renew(record, token, lease_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep running; the result is still stored
                _warn.warning("could not renew the idempotency lease: %s", _scrub(store, exc))

    def _count_idempotency(self, service: str, operation: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.idempotency_fallback.labels(service, operation, reason).inc()


def _store_reason(exc: BaseException, prefix_for: str) -> str:
    if isinstance(exc, TimeoutError):
        kind = "timeout"
    else:
        kind = getattr(exc, "ricochet_reason", None) or "backend"
    return kind if prefix_for == "begin" else f"store_{kind}"


def _scrub(store: Any, exc: BaseException) -> str:
    conn = getattr(store, "connection", None)
    text = f"{type(exc).__name__}: {exc}"
    return conn.scrub(text) if conn is not None and hasattr(conn, "scrub") else text


def with_retry(
    retry_config: RetryConfig | None = None,
    retry_on: tuple[type[BaseException], ...] | type[BaseException] | None = None,
    service_name: str = "default",
    operation_name: str | None = None,
    *,
    policy: RetryPolicy | None = None,
    **policy_options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The seed's decorator, for ``async def`` (awaited, ``asyncio.sleep``) and plain ``def``
    (``time.sleep``). ``policy_options`` go to :class:`RetryPolicy` (``coordinator=…``,
    ``registry=…``, …); or pass a ready ``policy``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = operation_name or getattr(fn, "__name__", "operation")
        pol = policy or RetryPolicy(retry_config, retry_on=retry_on, **policy_options)
        if policy is not None and retry_on is not None:
            raise TypeError("with_retry: pass retry_on to the RetryPolicy when giving a policy")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await pol.execute_with_retry(lambda: fn(*args, **kwargs), service_name, name)

            run_async.retry_policy = pol  # type: ignore[attr-defined]
            return run_async

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            return pol.execute_with_retry_sync(lambda: fn(*args, **kwargs), service_name, name)

        run_sync.retry_policy = pol  # type: ignore[attr-defined]
        return run_sync

    return decorate
