"""The seed's error categories as exception classes, ``MaxRetriesExceeded``, and the classifier.

Which category an exception falls in is decided here (a Python type is a Python matter); whether
that category is retried, and after how long, is decided by the core. HTTP statuses and the
server's delay headers go through the Rust host's own table and parsers (``_core.classify_http``).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from . import _core

#: ``(name, snake_name, retryable_by_default)`` per category, in the core's order.
CATEGORIES: list[tuple[str, str, bool]] = _core.categories()
CATEGORY_INDEX: dict[str, int] = {}
for _i, (_name, _snake, _) in enumerate(CATEGORIES):
    CATEGORY_INDEX[_name] = _i
    CATEGORY_INDEX[_snake] = _i

_CONNECTION = CATEGORY_INDEX["ConnectionError"]
_TIMEOUT = CATEGORY_INDEX["TimeoutError"]
_UNAVAILABLE = CATEGORY_INDEX["ServiceUnavailableError"]
_BUSINESS = CATEGORY_INDEX["BusinessLogicError"]
_AUTH_EXPIRED = CATEGORY_INDEX["AuthExpired"]

RetryConfigError = _core.RetryConfigError
PolicyFileError = _core.PolicyFileError


def config_error(field: str, value: Any, message: str) -> RetryConfigError:
    """A ``RetryConfigError`` naming ``field`` and carrying ``value``, as the extension raises them."""
    e = RetryConfigError(message)
    e.field = field
    e.value = value
    return e


class RetryCategoryError(Exception):
    """An error that names its retry category. ``retry_after`` (seconds) is the server's delay."""

    category: ClassVar[str] = "BusinessLogicError"

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(RetryCategoryError):
    """The service is down or overloaded for a while (retryable)."""

    category = "ServiceUnavailableError"


class RateLimitExceededError(RetryCategoryError):
    """The caller is being throttled (retryable; honours ``retry_after``)."""

    category = "RateLimitExceededError"


class AuthenticationError(RetryCategoryError):
    """Credentials refused (not retryable)."""

    category = "AuthenticationError"


class AuthExpiredError(AuthenticationError):
    """A token expired: retried once, and only after the policy's ``token_refresher`` refreshed it."""

    category = "AuthExpired"


class ValidationError(RetryCategoryError):
    """The request is malformed (not retryable)."""

    category = "ValidationError"


class ResourceNotFoundError(RetryCategoryError):
    """What was asked for does not exist (not retryable)."""

    category = "ResourceNotFoundError"


class BusinessLogicError(RetryCategoryError):
    """The service refused for a reason of its own (not retryable)."""

    category = "BusinessLogicError"


class HTTPStatusError(RetryCategoryError):
    """A failed HTTP response, classified by the Rust host's status table and delay headers."""

    def __init__(self, status: int, headers: Any = (), message: str | None = None) -> None:
        pairs = _header_pairs(headers)
        index, delay_us = _core.classify_http(int(status), pairs)
        super().__init__(
            message or f"HTTP {status}",
            retry_after=None if delay_us is None else delay_us / 1e6,
        )
        self.status = int(status)
        self.headers = pairs
        self.category_index = index

    @property  # type: ignore[override]
    def category(self) -> str:  # noqa: D401 - per instance, from the status
        return CATEGORIES[self.category_index][0]


class MaxRetriesExceeded(Exception):
    """A call that gave up: ``attempts`` made, the ``last_error``, ``elapsed`` seconds, and the
    core's ``reason`` (``exhausted``, ``deadline``, ``circuit_open``, ``budget``,
    ``retry_after_too_long``)."""

    def __init__(
        self, attempts: int, last_error: BaseException | None, elapsed: float, reason: str
    ) -> None:
        self.attempts = attempts
        self.last_error = last_error
        self.elapsed = elapsed
        self.reason = reason
        super().__init__(
            f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.3f} s "
            f"({reason}): {last_error!r}"
        )


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]


def classify(exc: BaseException) -> tuple[int | None, int | None]:
    """``(category_index, server_delay_us)`` of an exception; ``None`` when it is unknown."""
    if isinstance(exc, HTTPStatusError):
        return exc.category_index, None if exc.retry_after is None else int(exc.retry_after * 1e6)
    if isinstance(exc, RetryCategoryError):
        delay = exc.retry_after
        index = CATEGORY_INDEX.get(type(exc).category, _BUSINESS)
        return index, None if delay is None else _seconds_to_us(delay)
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return _TIMEOUT, None
    if isinstance(exc, ConnectionError):
        return _CONNECTION, None
    module = type(exc).__module__
    if module.startswith("aiohttp"):
        return _classify_aiohttp(exc)
    if module.startswith("httpx"):
        return _classify_httpx(exc)
    return None, None


def _seconds_to_us(seconds: float) -> int | None:
    try:
        us = float(seconds) * 1e6
    except (TypeError, ValueError):
        return None
    if not us >= 0 or us == float("inf"):  # NaN, negative, infinite: no usable delay
        return None
    return int(min(us, 2**63))


def _classify_aiohttp(exc: BaseException) -> tuple[int | None, int | None]:
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None:
        return None, None
    if isinstance(exc, aiohttp.ClientResponseError):
        return _core.classify_http(int(exc.status), _header_pairs(exc.headers))
    if isinstance(exc, aiohttp.ClientError):
        return _CONNECTION, None
    return None, None


def _classify_httpx(exc: BaseException) -> tuple[int | None, int | None]:
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return None, None
    if isinstance(exc, httpx.HTTPStatusError):
        r = exc.response
        return _core.classify_http(int(r.status_code), _header_pairs(r.headers))
    if isinstance(exc, httpx.TimeoutException):
        return _TIMEOUT, None
    if isinstance(exc, httpx.TransportError):
        return _CONNECTION, None
    return None, None


def raise_for_response(response: Any) -> Any:
    """Raises ``HTTPStatusError`` for an aiohttp or httpx response with a status ≥ 400 (with
    its delay headers), else returns the response."""
    status = getattr(response, "status", None)
    if status is None:
        status = response.status_code
    if int(status) >= 400:
        raise HTTPStatusError(int(status), response.headers)
    return response


UNAVAILABLE_INDEX = _UNAVAILABLE
BUSINESS_INDEX = _BUSINESS
AUTH_EXPIRED_INDEX = _AUTH_EXPIRED
