"""The core's decisions as Python sees them: categories, server delays, slots, breaker, budget."""

from __future__ import annotations

import pytest

from ricochet import CATEGORIES, RetryConfig, _core, classify
from ricochet import (
    AuthenticationError, BusinessLogicError, RateLimitExceededError, ResourceNotFoundError,
    ServiceUnavailableError, ValidationError, HTTPStatusError,
)


def test_categories_are_the_seeds():
    names = [c[0] for c in CATEGORIES]
    retryable = {c[0] for c in CATEGORIES if c[2]}
    assert retryable == {"ConnectionError", "TimeoutError", "ServiceUnavailableError", "RateLimitExceededError",
                         "RateLimited"}
    for n in ["AuthenticationError", "ValidationError", "ResourceNotFoundError", "BusinessLogicError"]:
        assert n in names and n not in retryable


@pytest.mark.parametrize("exc,category", [
    (ConnectionRefusedError(), "ConnectionError"),
    (ConnectionResetError(), "ConnectionError"),
    (TimeoutError(), "TimeoutError"),
    (ServiceUnavailableError(), "ServiceUnavailableError"),
    (RateLimitExceededError(), "RateLimitExceededError"),
    (AuthenticationError(), "AuthenticationError"),
    (ValidationError(), "ValidationError"),
    (ResourceNotFoundError(), "ResourceNotFoundError"),
    (BusinessLogicError(), "BusinessLogicError"),
    (HTTPStatusError(404), "ResourceNotFoundError"),
    (HTTPStatusError(503), "ServiceUnavailableError"),
    (HTTPStatusError(503, {"Retry-After": "2"}), "RateLimited"),
    (HTTPStatusError(429), "RateLimited"),
    (HTTPStatusError(401), "AuthExpired"),
])
def test_classification(exc, category):
    index, _ = classify(exc)
    assert CATEGORIES[index][0] == category


def test_unknown_exceptions_are_unknown():
    assert classify(KeyError("x")) == (None, None)


def test_server_delay_headers_are_parsed_by_the_core():
    now = 1_700_000_000_000_000
    assert _core.parse_server_delay("Retry-After", "120", now) == 120_000_000
    assert _core.parse_server_delay("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT", 784111777_000_000 - 5_000_000) == 5_000_000
    assert _core.parse_server_delay("Retry-After", "soon", now) is None
    assert _core.parse_server_delay("RateLimit", '"default";r=0;t=30', now) == 30_000_000
    assert _core.parse_server_delay("X-RateLimit-Reset", "1700000010", now) == 10_000_000
    assert _core.parse_server_delay("X-Unknown", "1", now) is None
    assert HTTPStatusError(429, [("Retry-After", "3")]).retry_after == 3.0
    assert HTTPStatusError(429, [("Retry-After", "garbage")]).retry_after is None


def test_a_decision_is_the_cores():
    c = RetryConfig(max_attempts=3, jitter=False)
    state = _core.RetryState(c, 42, 0)
    unavailable = [i for i, x in enumerate(CATEGORIES) if x[0] == "ServiceUnavailableError"][0]
    delay_us, reason, slot = state.on_failure(unavailable, 1_000_000)
    assert (delay_us, reason) == (100_000, None)
    earliest_us, window, retry, latest = slot
    assert (earliest_us, window, retry, latest) == (1_100_000, 1, 1, None)
    delay_us, reason, _ = state.on_failure(unavailable, 2_000_000)
    assert (delay_us, reason) == (200_000, None)
    assert state.on_failure(unavailable, 3_000_000) == (0, "exhausted", None)
    validation = [i for i, x in enumerate(CATEGORIES) if x[0] == "ValidationError"][0]
    assert _core.RetryState(c, 1, 0).on_failure(validation, 0)[1] == "non_retryable"
    with pytest.raises(ValueError, match="category"):
        _core.RetryState(c, 1, 0).on_failure(99, 0)
    with pytest.raises(OverflowError):
        _core.RetryState(c, -1, 0)


def test_slots_spread_a_herd_and_fallback_is_local():
    c = RetryConfig()
    per_slot = [0] * 10
    for ticket in range(1000):
        kind, fire_at, slot = c.resolve_ticket(5_000_000, 5, 1, 0, None, ticket, ticket)
        assert kind == "fire"
        assert 5_000_000 + slot * 100_000 <= fire_at < 5_000_000 + (slot + 1) * 100_000
        per_slot[slot] += 1
    assert per_slot == [100] * 10
    full = RetryConfig(slot_capacity=2)
    assert full.resolve_ticket(1_050_000, 1, 1, 0, None, 20, 0)[0] == "next"
    assert full.resolve_ticket(1_050_000, 1, 1, 4, None, 20, 0) == ("give_up", "budget")
    assert {c.fallback_ticket(s, 1) for s in range(1000)} == set(range(10))
    assert c.window_us == 1_000_000 and c.window_index(2_500_000) == 2


def test_breaker_and_budget_are_the_cores():
    c = RetryConfig(circuit_breaker={"failure_threshold": 2, "failure_rate": 0, "minimum_calls": 1, "window": 10,
                                     "cool_down": 1, "half_open_probes": 1},
                    retry_budget={"max_tokens": 3, "token_ratio": 0.5})
    b = _core.CircuitBreaker.for_config(c)
    assert b.admit(0) == ("allowed", 0)
    b.record(False, 0)
    b.admit(1)
    b.record(False, 1)
    assert b.state(2)[0] == "open"
    assert b.admit(2)[0] == "rejected"
    assert b.admit(1_000_001)[0] == "probe"
    b.record(True, 1_000_002)
    assert b.state(1_000_003) == ("closed", None)
    budget = _core.RetryBudget.for_config(c)
    assert budget.tokens_milli == 3000
    budget.on_failure()
    budget.on_failure()
    assert not budget.can_retry()
    assert _core.CircuitBreaker.for_config(RetryConfig()) is None


def test_a_delay_header_given_line_by_line_takes_its_longest_line() -> None:
    # aiohttp's CIMultiDict hands over each field line; httpx joins them ("0, 1"): either way the
    # longest line holds, as in the Rust layer, so a retry never comes sooner than any line asked.
    for pairs in (
        [("Retry-After", "1"), ("Retry-After", "0")],
        [("Retry-After", "0"), ("Retry-After", "1")],
        [("Retry-After", "0, 1")],
    ):
        _, delay_us = _core.classify_http(429, pairs)
        assert delay_us == 1_000_000, pairs
