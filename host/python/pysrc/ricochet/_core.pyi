"""Type stubs of the PyO3 extension (host/python/src)."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

class RetryConfigError(ValueError):
    field: str | None
    value: Any

class PolicyFileError(RetryConfigError):
    errors: list[tuple[tuple[int, int] | None, str | None, str | None, str]]

class RetryConfig:
    PRESET_NAMES: list[str]
    def __init__(
        self,
        *,
        max_attempts: int | None = None,
        initial_delay: float | None = None,
        max_delay: float | None = None,
        exponential_base: float | None = None,
        jitter: bool | None = None,
        jitter_factor: float | None = None,
        slot_count: int | None = None,
        slot_width: float | None = None,
        coordination_enabled: bool | None = None,
        idempotency_ttl: float | None = None,
        strategy: Literal["none", "proportional", "full", "equal", "decorrelated"] | None = None,
        max_elapsed: float | None = None,
        max_retry_after: float | None = None,
        slot_capacity: int | None = None,
        retry_on: Sequence[str] | None = None,
        circuit_breaker: Mapping[str, float] | None = None,
        retry_budget: Mapping[str, float] | None = None,
    ) -> None: ...
    def replace(self, **fields: Any) -> RetryConfig: ...
    @staticmethod
    def preset(name: str) -> RetryConfig: ...
    max_attempts: int
    initial_delay: float
    max_delay: float
    exponential_base: float
    jitter: bool
    jitter_factor: float
    slot_count: int
    slot_width: float
    coordination_enabled: bool
    idempotency_ttl: float
    strategy: str
    max_elapsed: float | None
    max_retry_after: float
    slot_capacity: int | None
    retry_on: list[str]
    retry_on_indices: list[int]
    circuit_breaker: dict[str, float] | None
    retry_budget: dict[str, float] | None
    initial_delay_us: int
    max_delay_us: int
    slot_width_us: int
    idempotency_ttl_us: int
    max_elapsed_us: int | None
    window_us: int
    def plan(self, seed: int) -> list[tuple[int, int, int]]: ...
    def resolve_ticket(
        self, earliest_us: int, window: int, retry: int, moves: int, latest_us: int | None, ticket: int, seed: int
    ) -> tuple[Any, ...]: ...
    def window_index(self, t_us: int) -> int: ...
    def fallback_ticket(self, seed: int, retry: int) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

class RetryState:
    def __init__(self, config: RetryConfig, seed: int, started_us: int) -> None: ...
    def on_failure(
        self,
        category_index: int,
        now_us: int,
        server_delay_us: int | None = None,
        token_refreshed: bool = False,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
    ) -> tuple[int, str | None, tuple[int, int, int, int | None] | None]: ...
    def on_success(self, now_us: int, breaker: CircuitBreaker | None = None, budget: RetryBudget | None = None) -> None: ...
    def time_left_us(self, now_us: int) -> int | None: ...
    def may_retry_auth(self) -> bool: ...
    calls: int
    seed: int

class CircuitBreaker:
    @staticmethod
    def for_config(config: RetryConfig) -> CircuitBreaker | None: ...
    def admit(self, now_us: int) -> tuple[str, int]: ...
    def record(self, success: bool, now_us: int) -> None: ...
    def release(self) -> None: ...
    def state(self, now_us: int) -> tuple[str, int | None]: ...

class RetryBudget:
    @staticmethod
    def for_config(config: RetryConfig) -> RetryBudget | None: ...
    def on_success(self) -> None: ...
    def on_failure(self) -> None: ...
    def can_retry(self) -> bool: ...
    tokens_milli: int

ENV_VARS: list[str]
SCRIPTS: dict[str, str]

def load_policy_file(path: str) -> dict[str, RetryConfig]: ...
def parse_policy_text(text: str, path: str = ...) -> dict[str, RetryConfig]: ...
def load_policy(name: str, path: str | None, environ: Mapping[str, str]) -> RetryConfig: ...
def apply_env(config: RetryConfig, environ: Mapping[str, str]) -> RetryConfig: ...
def categories() -> list[tuple[str, str, bool]]: ...
def classify_http(status: int, headers: list[tuple[str, str]]) -> tuple[int, int | None]: ...
def parse_server_delay(name: str, value: str, now_unix_us: int) -> int | None: ...
def trace_id_from_traceparent(traceparent: str) -> str | None: ...
def sha256_hex(text: str) -> str: ...
def slot_key_stem(prefix: str, service: str, operation: str) -> str: ...
def idempotency_record_key(prefix: str, service: str, operation: str, key: str) -> str: ...
