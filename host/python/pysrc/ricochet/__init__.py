"""ricochet for Python: the seed's retry API on ricochet's Rust core.

Every decision — delays, jitter, slot tickets, categories, ``Retry-After``, the circuit breaker,
the retry budget, config validation — is made by ``ricochet-core`` through a PyO3 extension, so
a Python service computes bit for bit the schedule the Rust services compute, and (with Redis)
shares their slot windows and idempotency records.
"""

from ._core import PolicyFileError, RetryConfig, RetryConfigError
from .config import PRESETS, from_env, load_policies, load_policy
from .coordination import InMemoryCoordinator
from .errors import (
    CATEGORIES,
    AuthenticationError,
    AuthExpiredError,
    BusinessLogicError,
    HTTPStatusError,
    MaxRetriesExceeded,
    RateLimitExceededError,
    ResourceNotFoundError,
    RetryCategoryError,
    ServiceUnavailableError,
    ValidationError,
    classify,
    raise_for_response,
)
from .idempotency import IdempotencyInProgress, IdempotencyMismatch, InMemoryIdempotencyStore
from .observability import RetryMetrics, current_trace_id, traceparent
from .policy import RetryPolicy, with_retry

__all__ = [
    "CATEGORIES",
    "PRESETS",
    "AuthExpiredError",
    "AuthenticationError",
    "BusinessLogicError",
    "HTTPStatusError",
    "IdempotencyInProgress",
    "IdempotencyMismatch",
    "InMemoryCoordinator",
    "InMemoryIdempotencyStore",
    "MaxRetriesExceeded",
    "PolicyFileError",
    "RateLimitExceededError",
    "ResourceNotFoundError",
    "RetryCategoryError",
    "RetryConfig",
    "RetryConfigError",
    "RetryMetrics",
    "RetryPolicy",
    "ServiceUnavailableError",
    "ValidationError",
    "classify",
    "current_trace_id",
    "from_env",
    "load_policies",
    "load_policy",
    "raise_for_response",
    "traceparent",
    "with_retry",
]
