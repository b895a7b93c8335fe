"""Idempotency: run a logical operation once, however often it is retried or duplicated.

The same semantics as the Rust host (and, on Redis, the same records): a key moves
``absent → in progress (lease) → completed (result, ttl)``; a duplicate of a completed call gets
the stored result; a duplicate of a running one waits for it; a failed run releases the key; an
expired lease can be taken over; the same key with another fingerprint is an error. Keys are
scoped by service and operation and hashed (``_core.idempotency_record_key``), fingerprints are
hashed (``_core.sha256_hex``), results are JSON — so a key completed by a Rust service is
replayed here, and the other way round.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

from . import _core

#: What ``begin`` found: ``("started", None)``, ``("completed", result_bytes)``,
#: ``("in_progress", lease_remaining_ms)`` or ``("mismatch", None)``.
BeginResult = tuple[str, Any]


class IdempotencyInProgress(Exception):
    """A duplicate waited for the running call longer than allowed."""


class IdempotencyMismatch(ValueError):
    """The key was used before with a different payload fingerprint."""


class NotHolder(Exception):
    """The lease was lost to another caller."""


def new_token() -> str:
    """A holder token: 32 lowercase hex digits, unique per claim."""
    return secrets.token_hex(16)


class IdempotencyStore(Protocol):
    """Records which logical operations ran and what they returned (keys are record keys)."""

    name: str

    async def begin(self, record_key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult: ...
    async def complete(self, record_key: str, fingerprint: str, token: str, result: bytes, ttl_ms: int) -> None: ...
    async def fail(self, record_key: str, token: str) -> None: ...
    async def renew(self, record_key: str, token: str, lease_ms: int) -> None: ...


class InMemoryIdempotencyStore:
    """The embedded default: records in this process, with leases and TTLs on the monotonic clock."""

    name = "memory"

    def __init__(self, max_records: int = 100_000) -> None:
        # record key -> (state, fingerprint, token, result, expires_at)
        self._records: dict[str, tuple[str, str, str, bytes, float]] = {}
        self._max = max_records

    def _live(self, key: str) -> tuple[str, str, str, bytes, float] | None:
        r = self._records.get(key)
        if r is not None and r[4] <= time.monotonic():
            del self._records[key]
            return None
        return r

    def _prune(self) -> None:
        if len(self._records) < self._max:
            return
        now = time.monotonic()
        for k in [k for k, r in self._records.items() if r[4] <= now]:
            del self._records[k]

    async def begin(self, record_key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        r = self._live(record_key)
        if r is None:
            self._prune()
            self._records[record_key] = ("P", fingerprint, token, b"", time.monotonic() + lease_ms / 1000)
            return ("started", None)
        if r[1] != fingerprint:
            return ("mismatch", None)
        if r[0] == "C":
            return ("completed", r[3])
        return ("in_progress", max(0, int((r[4] - time.monotonic()) * 1000)))

    async def complete(self, record_key: str, fingerprint: str, token: str, result: bytes, ttl_ms: int) -> None:
        r = self._live(record_key)
        if r is not None and (r[0] != "P" or r[2] != token):
            raise NotHolder()
        self._records[record_key] = ("C", fingerprint, token, bytes(result), time.monotonic() + ttl_ms / 1000)

    async def fail(self, record_key: str, token: str) -> None:
        r = self._live(record_key)
        if r is None:
            return
        if r[0] == "P" and r[2] == token:
            del self._records[record_key]
            return
        raise NotHolder()

    async def renew(self, record_key: str, token: str, lease_ms: int) -> None:
        r = self._live(record_key)
        if r is not None and r[0] == "P" and r[2] == token:
            self._records[record_key] = (r[0], r[1], r[2], r[3], time.monotonic() + lease_ms / 1000)
            return
        raise NotHolder()


def hash_fingerprint(fingerprint: str) -> str:
    """The fingerprint as stores keep it (SHA-256 hex, as the Rust host keeps it)."""
    return _core.sha256_hex(fingerprint)
