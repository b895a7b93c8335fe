"""The seed's log lines (structlog JSON) and metrics (prometheus_client), exactly as named."""

from __future__ import annotations

import io
import json
import re

import pytest
from prometheus_client import CollectorRegistry

from ricochet import MaxRetriesExceeded, RetryConfig, RetryPolicy, ServiceUnavailableError, traceparent
from ricochet.observability import default_logger

CONFIG = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05, coordination_enabled=False)
SEED_FIELDS = {"timestamp", "level", "service", "operation", "attempt", "delay", "error", "trace_id"}


class Flaky:
    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    async def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ServiceUnavailableError("HTTP 503")
        return "ok"


async def test_log_lines_have_exactly_the_seeds_fields():
    out = io.StringIO()
    policy = RetryPolicy(CONFIG, registry=CollectorRegistry(), logger=default_logger(out))
    assert await policy.execute_with_retry(Flaky(1), "lake", "fetch") == "ok"
    with pytest.raises(MaxRetriesExceeded):
        await policy.execute_with_retry(Flaky(9), "lake", "fetch")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["WARNING", "INFO", "WARNING", "INFO", "WARNING", "INFO", "WARNING", "ERROR"]
    for line in lines:
        assert set(line) == SEED_FIELDS, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
        assert (line["service"], line["operation"]) == ("lake", "fetch")
        assert line["error"] == "ServiceUnavailableError: HTTP 503"
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    assert lines[1]["delay"] > 0 and lines[0]["delay"] == 0.0
    assert [line["attempt"] for line in lines[2:]] == [1, 1, 2, 2, 3, 3]
    # one trace id per call
    assert lines[0]["trace_id"] == lines[1]["trace_id"] != lines[2]["trace_id"]


async def test_trace_id_comes_from_traceparent():
    out = io.StringIO()
    policy = RetryPolicy(CONFIG, registry=CollectorRegistry(), logger=default_logger(out))
    with traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        await policy.execute_with_retry(Flaky(1), "lake", "fetch")
    ids = {json.loads(line)["trace_id"] for line in out.getvalue().splitlines()}
    assert ids == {"4bf92f3577b34da6a3ce929d0e0e4736"}


async def test_metrics_have_the_seeds_names_labels_and_buckets():
    registry = CollectorRegistry()
    policy = RetryPolicy(CONFIG, registry=registry, logger=False)
    assert await policy.execute_with_retry(Flaky(0), "lake", "fetch") == "ok"
    assert await policy.execute_with_retry(Flaky(2), "lake", "fetch") == "ok"
    with pytest.raises(MaxRetriesExceeded):
        await policy.execute_with_retry(Flaky(9), "lake", "fetch")
    v = registry.get_sample_value
    lab = {"service": "lake", "operation": "fetch"}
    assert v("retry_attempts_total", {**lab, "attempt": "1"}) == 3
    assert v("retry_attempts_total", {**lab, "attempt": "2"}) == 2
    assert v("retry_attempts_total", {**lab, "attempt": "3"}) == 2
    assert v("retry_success_total", {**lab, "attempts_needed": "1"}) == 1
    assert v("retry_success_total", {**lab, "attempts_needed": "3"}) == 1
    assert v("retry_failure_total", {**lab, "error_type": "ServiceUnavailableError"}) == 1
    assert v("retry_duration_seconds_count", lab) == 3
    buckets = sorted(float(s.labels["le"]) for m in registry.collect() if m.name == "retry_duration_seconds"
                     for s in m.samples if s.name.endswith("_bucket"))
    assert buckets == [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf")]


def test_two_policies_share_a_registry_without_clashing():
    registry = CollectorRegistry()
    a = RetryPolicy(CONFIG, registry=registry, logger=False)
    b = RetryPolicy(CONFIG, registry=registry, logger=False)
    assert a.metrics is b.metrics
    assert RetryPolicy(CONFIG, metrics=False, logger=False).metrics is None


async def test_a_name_taken_by_the_application_never_fails_a_call():
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("retry_attempts_total", "the application's own", ["path"], registry=registry)
    policy = RetryPolicy(CONFIG, registry=registry, logger=False)
    assert await policy.execute_with_retry(Flaky(1), "lake", "fetch") == "ok"
    assert registry.get_sample_value("retry_success_total", {"service": "lake", "operation": "fetch",
                                                             "attempts_needed": "2"}) == 1
