"""Redis (redis.asyncio) backends, wire-compatible with the Rust host's.

One Python process and one Rust service pointed at the same Redis with the same key prefix
share slot windows and idempotency records: the keys come from ``_core`` (the Rust formulas,
pinned by ``tests/test_fleet.py``) and the Lua scripts are the Rust host's own files
(``_core.SCRIPTS``). A password in the URL never reaches a ``repr``, a log line or an exception
that ricochet raises: URLs are shown redacted and error texts are scrubbed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import _core
from .coordination import wall_clock_us
from .idempotency import BeginResult, NotHolder

DEFAULT_KEY_PREFIX = "ricochet"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable redis url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class RedisBackendError(Exception):
    """A Redis failure, with every secret scrubbed from its text. ``ricochet_reason`` is the
    fallback counter's label: ``connection`` or ``backend``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.ricochet_reason = reason


class RedisConnection:
    """A ``redis.asyncio`` client opened lazily from a ``redis://``/``rediss://`` URL (or given)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: float = 1.0,
        **client_options: Any,
    ) -> None:
        """``client_options`` go to ``redis.asyncio.Redis.from_url`` (e.g. ``ssl_ca_certs=`` for a
        ``rediss://`` server signed by a private CA)."""
        if url is None and client is None:
            raise ValueError("RedisConnection needs a url or a client")
        self._url = url
        self._secret = urlsplit(url).password if url else None
        self.key_prefix = key_prefix
        self._client = client
        self._socket_timeout = socket_timeout
        self._client_options = client_options
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # ricochet bounds every round trip itself and falls back: no client-side retries.
            self._client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                retry=Retry(NoBackoff(), 0),
                **self._client_options,
            )
        return self._client

    def script(self, name: str) -> Any:
        s = self._scripts.get(name)
        if s is None:
            s = self.client.register_script(_core.SCRIPTS[name])
            self._scripts[name] = s
        return s

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def wrap(self, exc: BaseException) -> RedisBackendError:
        import redis.exceptions as rex

        reason = (
            "connection"
            if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, OSError, rex.AuthenticationError))
            else "backend"
        )
        return RedisBackendError(self.scrub(f"{type(exc).__name__}: {exc}"), reason)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def __repr__(self) -> str:
        where = redact_url(self._url) if self._url else "<client>"
        return f"RedisConnection({where!r}, key_prefix={self.key_prefix!r})"


class RedisCoordinator:
    """Slot tickets from Redis in one round trip, on the server's clock (the Rust host's script)."""

    name = "redis"

    def __init__(self, connection: RedisConnection | str, *, key_prefix: str | None = None) -> None:
        if isinstance(connection, str):
            connection = RedisConnection(connection, key_prefix=key_prefix or DEFAULT_KEY_PREFIX)
        self.connection = connection
        self._secret = connection._secret
        self.clock_offset_us = 0

    def slot_key_stem(self, service: str, operation: str) -> str:
        return _core.slot_key_stem(self.connection.key_prefix, service, operation)

    async def acquire_slot(
        self, service: str, operation: str, delay_us: int, window_us: int
    ) -> tuple[int, int, int, int]:
        stem = self.slot_key_stem(service, operation)
        sent = wall_clock_us()
        try:
            reply = await self.connection.script("slot")(keys=[stem], args=[int(delay_us), max(int(window_us), 1)])
        except Exception as exc:  # noqa: BLE001 - scrubbed and classified
            raise self.connection.wrap(exc) from None
        ticket, window, earliest_us, now_us = (int(x) for x in reply)
        received = wall_clock_us()
        self.clock_offset_us = now_us - (sent + (received - sent) // 2)
        return ticket, window, earliest_us, now_us

    def __repr__(self) -> str:
        return f"RedisCoordinator({self.connection!r})"


class RedisIdempotencyStore:
    """Idempotency records on Redis: the Rust host's layout and scripts.

    One string per record key: ``P``/``C``, the fingerprint's SHA-256 hex (64), the holder token
    (32 hex digits), then the JSON result (completed only)."""

    name = "redis"

    def __init__(self, connection: RedisConnection | str, *, key_prefix: str | None = None) -> None:
        if isinstance(connection, str):
            connection = RedisConnection(connection, key_prefix=key_prefix or DEFAULT_KEY_PREFIX)
        self.connection = connection
        self.key_prefix = connection.key_prefix

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:  # noqa: BLE001 - scrubbed and classified
            raise self.connection.wrap(exc) from None

    async def begin(self, record_key: str, fingerprint: str, token: str, lease_ms: int) -> BeginResult:
        claim = b"P" + fingerprint.encode() + token.encode()
        lease_ms = max(int(lease_ms), 1)
        claimed = await self._call(self.connection.client.set(record_key, claim, nx=True, px=lease_ms))
        if claimed:
            return ("started", None)
        reply = await self._call(
            self.connection.script("begin")(keys=[record_key], args=[fingerprint, token, lease_ms])
        )
        kind = int(reply[0])
        if kind == 0:
            return ("started", None)
        if kind == 1:
            return ("completed", bytes(reply[1]))
        if kind == 2:
            return ("in_progress", max(0, int(reply[1])))
        return ("mismatch", None)

    async def complete(self, record_key: str, fingerprint: str, token: str, result: bytes, ttl_ms: int) -> None:
        ok = await self._call(
            self.connection.script("complete")(
                keys=[record_key], args=[fingerprint, token, result, max(int(ttl_ms), 1)]
            )
        )
        if int(ok) != 1:
            raise NotHolder()

    async def fail(self, record_key: str, token: str) -> None:
        ok = await self._call(self.connection.script("fail")(keys=[record_key], args=[token]))
        if int(ok) != 1:
            raise NotHolder()

    async def renew(self, record_key: str, token: str, lease_ms: int) -> None:
        ok = await self._call(
            self.connection.script("renew")(keys=[record_key], args=[token, max(int(lease_ms), 1)])
        )
        if int(ok) != 1:
            raise NotHolder()

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore({self.connection!r})"


