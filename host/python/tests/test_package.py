"""The package as installed: typed, and carrying the Rust host's scripts rather than copies."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from prometheus_client import CollectorRegistry

import ricochet
from ricochet import RetryConfig, RetryPolicy, ServiceUnavailableError, _core
from ricochet.redis_backends import RedisCoordinator

REPO = Path(__file__).resolve().parents[3]


def test_typed_package():
    files = importlib.resources.files("ricochet")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_core.pyi").is_file()
    assert set(ricochet.__all__) <= set(dir(ricochet))


def test_scripts_are_the_rust_hosts_files():
    scripts_dir = REPO / "host" / "ricochet" / "src" / "redis" / "scripts"
    on_disk = {p.stem: p.read_text() for p in scripts_dir.glob("*.lua")}
    assert set(on_disk) == {"slot", "begin", "complete", "fail", "renew"}
    assert _core.SCRIPTS == on_disk


def test_sync_functions_take_a_local_slot_with_an_async_coordinator(redis_server):
    registry = CollectorRegistry()
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05, slot_width=0.01)
    policy = RetryPolicy(config, coordinator=RedisCoordinator(redis_server.url), registry=registry, logger=False)
    calls = 0

    def flaky():
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ServiceUnavailableError("down")
        return "ok"

    assert policy.execute_with_retry_sync(flaky, "lake", "sync") == "ok"
    assert registry.get_sample_value(
        "retry_coordination_fallback_total", {"service": "lake", "operation": "sync", "reason": "sync"}
    ) == 2
