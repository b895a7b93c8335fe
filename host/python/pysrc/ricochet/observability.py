"""The seed's metrics (prometheus_client) and JSON log lines (structlog).

Metrics: exactly the seed's names, labels and buckets, plus the fallback counters the Rust host
has, on a registry the caller passes (prometheus_client's default registry otherwise). A library
emits and an application installs: these are registered once per registry, and a name already
taken there is reused rather than raising.

Logs: one JSON object per line with exactly the seed's fields — ``timestamp`` (RFC 3339, UTC),
``level``, ``service``, ``operation``, ``attempt``, ``delay``, ``error``, ``trace_id`` — as the
Rust host writes them: WARNING when an attempt fails, INFO when a retry is scheduled, ERROR when
the call gives up. ``trace_id`` is the trace id of the W3C ``traceparent`` set with
:func:`traceparent` (a context variable), else a fresh UUID per call.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from . import _core

#: The seed's buckets for ``retry_duration_seconds``.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)

_LABELS = ("service", "operation")


class RetryMetrics:
    """The seed's metrics on one registry. Get one with :meth:`for_registry`."""

    _by_registry: dict[int, RetryMetrics] = {}
    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, extra: str | None) -> Counter:
            labels = _LABELS + ((extra,) if extra else ())
            return self._metric(Counter, name, doc, labels)

        self.attempts = counter(
            "retry_attempts_total", "Calls made, by attempt number (1 = first call).", "attempt"
        )
        self.success = counter(
            "retry_success_total", "Operations that succeeded, by attempts needed.", "attempts_needed"
        )
        self.failure = counter(
            "retry_failure_total", "Operations that failed for good, by error type.", "error_type"
        )
        self.coordination_fallback = counter(
            "retry_coordination_fallback_total",
            "Retries that took a local slot because the coordinator did not answer in time.",
            "reason",
        )
        self.idempotency_fallback = counter(
            "retry_idempotency_fallback_total",
            "Idempotent calls that ran without deduplication or could not record their result.",
            "reason",
        )
        self.circuit_rejected = counter(
            "retry_circuit_rejected_total", "Calls a circuit breaker refused (no call was made).", None
        )
        self.duration = self._metric(
            Histogram,
            "retry_duration_seconds",
            "Duration of whole operations, retries included.",
            _LABELS,
            buckets=DURATION_BUCKETS,
        )
        self._first_try: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def _metric(self, kind: Any, name: str, doc: str, labels: tuple[str, ...], **kw: Any) -> Any:
        try:
            return kind(name, doc, labels, registry=self.registry, **kw)
        except ValueError:
            # Already registered on this registry (by another RetryMetrics, or the application):
            # reuse the collector that holds the name.
            base = name[: -len("_total")] if name.endswith("_total") else name
            collector = getattr(self.registry, "_names_to_collectors", {}).get(base) or getattr(
                self.registry, "_names_to_collectors", {}
            ).get(name)
            if collector is not None and tuple(getattr(collector, "_labelnames", ())) == labels:
                return collector
            # The application took the name for something else: record into an unregistered
            # metric rather than fail calls (a library never breaks the application's registry).
            logging.getLogger("ricochet").warning(
                "metric %s is registered with other labels on this registry; ricochet's is not exported", name
            )
            return kind(name, doc, labels, registry=None, **kw)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> RetryMetrics:
        """The metrics on ``registry`` (prometheus_client's default one when ``None``)."""
        registry = REGISTRY if registry is None else registry
        key = id(registry)
        found = cls._by_registry.get(key)
        if found is not None and found.registry is registry:
            return found
        with cls._lock:
            found = cls._by_registry.get(key)
            if found is None or found.registry is not registry:
                found = cls(registry)
                cls._by_registry[key] = found
            return found

    def first_try(self, service: str, operation: str) -> tuple[Any, Any, Any]:
        """The series a first-try success touches, cached per (service, operation)."""
        key = (service, operation)
        series = self._first_try.get(key)
        if series is None:
            series = (
                self.attempts.labels(service, operation, "1"),
                self.success.labels(service, operation, "1"),
                self.duration.labels(service, operation),
            )
            if len(self._first_try) < 1024:
                self._first_try[key] = series
        return series


# --- logs -----------------------------------------------------------------------------------

_TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ricochet_traceparent", default=None
)


@contextlib.contextmanager
def traceparent(value: str) -> Iterator[None]:
    """Within this block, retry log lines carry the trace id of this W3C ``traceparent``."""
    token = _TRACEPARENT.set(value)
    try:
        yield
    finally:
        _TRACEPARENT.reset(token)


def current_trace_id() -> str:
    """The trace id of the ``traceparent`` in context, else a new UUID (32 hex digits)."""
    tp = _TRACEPARENT.get()
    if tp is not None:
        found = _core.trace_id_from_traceparent(tp)
        if found is not None:
            return found
    return uuid.uuid4().hex


_SEED_FIELDS = ("timestamp", "level", "service", "operation", "attempt", "delay", "error", "trace_id")


def _seed_fields(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["level"] = method.upper()
    return {k: event[k] for k in _SEED_FIELDS if k in event}


def default_logger(file: Any = None) -> Any:
    """A structlog logger that writes the seed's JSON lines to ``file`` (stderr by default),
    whatever the application configured globally."""
    return structlog.wrap_logger(
        structlog.PrintLogger(file=file if file is not None else sys.stderr),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _seed_fields,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.BoundLogger,
        cache_logger_on_first_use=False,
    )
