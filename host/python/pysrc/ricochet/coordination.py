"""Fleet-wide retry slots: tickets from a coordinator, turned into fire times by the core.

A coordinator hands out tickets ``0, 1, 2, …`` per ``(service, operation, window)`` on its own
clock (Redis: the server's ``TIME``, in the Rust host's own Lua script), so a herd of retries
from Python and Rust processes alike lands spread over the window's slots. :func:`schedule_retry`
is the Python twin of the Rust host's ``schedule_retry``: it asks within a deadline, lets the
core resolve the ticket (moving on while a window is full), and on a timeout or any error takes
the core's seeded local slot and counts ``retry_coordination_fallback_total``. Coordination
degrades; a retry never blocks or fails because of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from ._core import RetryConfig

#: How long a coordination may take before the local fallback slot is used (as in Rust: 25 ms).
DEFAULT_COORDINATION_DEADLINE = 0.025

_log = logging.getLogger("ricochet.coordination")


def wall_clock_us() -> int:
    """The local wall clock, µs since the Unix epoch."""
    return time.time_ns() // 1000


class Coordinator(Protocol):
    """Hands out slot tickets."""

    name: str

    async def acquire_slot(
        self, service: str, operation: str, delay_us: int, window_us: int
    ) -> tuple[int, int, int, int]:
        """``(ticket, window, earliest_us, now_us)`` for the window holding ``now + delay_us``."""
        ...


class InMemoryCoordinator:
    """Process-local tickets (the default): the same contract as Redis, nothing to run."""

    name = "memory"
    _WINDOWS_KEPT = 16

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], OrderedDict[int, int]] = {}

    def take(self, service: str, operation: str, delay_us: int, window_us: int) -> tuple[int, int, int, int]:
        now_us = wall_clock_us()
        earliest_us = now_us + delay_us
        window = earliest_us // max(window_us, 1)
        windows = self._windows.setdefault((service, operation), OrderedDict())
        ticket = windows.get(window, 0)
        windows[window] = ticket + 1
        while len(windows) > self._WINDOWS_KEPT:
            windows.popitem(last=False)
        return ticket, window, earliest_us, now_us

    async def acquire_slot(
        self, service: str, operation: str, delay_us: int, window_us: int
    ) -> tuple[int, int, int, int]:
        return self.take(service, operation, delay_us, window_us)


class Scheduled:
    """Where a retry goes: ``delay_us`` from now in ``slot``, or ``give_up`` with a reason."""

    __slots__ = ("delay_us", "slot", "fallback", "give_up")

    def __init__(
        self, delay_us: int = 0, slot: int = 0, fallback: str | None = None, give_up: str | None = None
    ) -> None:
        self.delay_us = delay_us
        self.slot = slot
        self.fallback = fallback
        self.give_up = give_up

    def __repr__(self) -> str:
        if self.give_up:
            return f"Scheduled(give_up={self.give_up!r})"
        return f"Scheduled(delay_us={self.delay_us}, slot={self.slot}, fallback={self.fallback!r})"


def _latest_on(now_us: int, fire_by: float | None) -> int | None:
    """``fire_by`` (a ``time.monotonic()`` instant) on a clock that reads ``now_us`` now."""
    if fire_by is None:
        return None
    return now_us + max(0, int((fire_by - time.monotonic()) * 1e6))


async def _coordinate(
    coordinator: Any,
    config: RetryConfig,
    seed: int,
    retry: int,
    delay_us: int,
    service: str,
    operation: str,
    fire_by: float | None,
) -> Scheduled:
    window_us = config.window_us
    ticket, window, earliest_us, now_us = await coordinator.acquire_slot(
        service, operation, delay_us, window_us
    )
    moves = 0
    while True:
        if config.window_index(earliest_us) != window:
            raise RuntimeError(f"coordinator put {earliest_us} µs in window {window}")
        outcome = config.resolve_ticket(
            earliest_us, window, retry, moves, _latest_on(now_us, fire_by), ticket, seed
        )
        kind = outcome[0]
        if kind == "fire":
            return Scheduled(delay_us=max(0, outcome[1] - now_us), slot=outcome[2])
        if kind == "give_up":
            return Scheduled(give_up=outcome[1])
        moves = outcome[3]
        ticket, window, earliest_us, now_us = await coordinator.acquire_slot(
            service, operation, max(0, outcome[1] - now_us), window_us
        )


def local_slot(
    config: RetryConfig, seed: int, retry: int, delay_us: int, reason: str, fire_by: float | None
) -> Scheduled:
    """The core's seeded fallback slot, on the local clock."""
    now_us = wall_clock_us()
    earliest_us = now_us + delay_us
    ticket = config.fallback_ticket(seed, retry)
    outcome = config.resolve_ticket(
        earliest_us, config.window_index(earliest_us), retry, 0, _latest_on(now_us, fire_by), ticket, seed
    )
    if outcome[0] == "fire":
        return Scheduled(delay_us=max(0, outcome[1] - now_us), slot=outcome[2], fallback=reason)
    if outcome[0] == "give_up":
        return Scheduled(give_up=outcome[1])
    return Scheduled(delay_us=delay_us, slot=ticket, fallback=reason)


async def schedule_retry(
    coordinator: Any,
    config: RetryConfig,
    seed: int,
    retry: int,
    delay_us: int,
    service: str,
    operation: str,
    deadline: float = DEFAULT_COORDINATION_DEADLINE,
    metrics: Any = None,
    fire_by: float | None = None,
) -> Scheduled:
    """Where a retry goes (see the module docs)."""
    if not config.coordination_enabled:
        return Scheduled(delay_us=delay_us)
    if isinstance(coordinator, InMemoryCoordinator):
        # No I/O: resolve in place, without a timer.
        return await _coordinate(coordinator, config, seed, retry, delay_us, service, operation, fire_by)
    try:
        async with asyncio.timeout(deadline):
            return await _coordinate(
                coordinator, config, seed, retry, delay_us, service, operation, fire_by
            )
    except TimeoutError:
        reason = "timeout"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - any coordinator failure degrades to a local slot
        reason = getattr(exc, "ricochet_reason", None) or _reason_of(exc)
        _log.debug("coordination failed; taking a local slot: %s", _scrub(coordinator, str(exc)))
    if metrics is not None:
        metrics.coordination_fallback.labels(service, operation, reason).inc()
    return local_slot(config, seed, retry, delay_us, reason, fire_by)


def schedule_retry_sync(
    coordinator: Any,
    config: RetryConfig,
    seed: int,
    retry: int,
    delay_us: int,
    service: str,
    operation: str,
    metrics: Any = None,
    fire_by: float | None = None,
) -> Scheduled:
    """:func:`schedule_retry` for plain ``def`` functions: the in-memory coordinator is asked in
    place; an asynchronous one (Redis) cannot be awaited there, so the core's local slot is taken
    and counted with reason ``sync``."""
    if not config.coordination_enabled:
        return Scheduled(delay_us=delay_us)
    if isinstance(coordinator, InMemoryCoordinator):
        ticket, window, earliest_us, now_us = coordinator.take(service, operation, delay_us, config.window_us)
        outcome = config.resolve_ticket(
            earliest_us, window, retry, 0, _latest_on(now_us, fire_by), ticket, seed
        )
        if outcome[0] == "fire":
            return Scheduled(delay_us=max(0, outcome[1] - now_us), slot=outcome[2])
        if outcome[0] == "give_up":
            return Scheduled(give_up=outcome[1])
        return local_slot(config, seed, retry, delay_us, "full", fire_by)
    if metrics is not None:
        metrics.coordination_fallback.labels(service, operation, "sync").inc()
    return local_slot(config, seed, retry, delay_us, "sync", fire_by)


def _reason_of(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Connection" in name or isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return "backend"


def _scrub(owner: Any, text: str) -> str:
    secret = getattr(owner, "_secret", None)
    return text.replace(secret, "***") if secret else text
