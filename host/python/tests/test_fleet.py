"""One fleet, two languages: a Python process and the Rust `ricochet` binary on one Redis.

- Slot windows: Rust (`ricochet plan --redis`, the native coordinator) and Python take tickets for
  the same (service, operation) at the same time; every ticket of the window is handed out once.
- Idempotency: a key completed by Rust (`ricochet run --idempotency-key`) is replayed by Python
  without running, and a key completed by Python is replayed by Rust.
- Keys: the Redis keys Rust wrote are exactly the ones `_core` computes — the pin on the key
  formulas (if the Rust side changes them, these tests fail until `host/python/src/fleet.rs`
  follows).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

from prometheus_client import CollectorRegistry

from ricochet import RetryConfig, RetryPolicy, _core
from ricochet.redis_backends import RedisCoordinator, RedisIdempotencyStore

# One window of 100 000 s (the herd cannot straddle two); slot = ticket, as slot_count is large.
POLICY_FILE = """retry_policies:
  fleet:
    max_attempts: 5
    initial_delay: 0.01
    max_delay: 0.05
    slot_count: 100000
    slot_width: 1.0
"""

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def coordinated_slots(plans: list[dict]) -> list[int]:
    """The slots Redis handed to the Rust side (slot = ticket here). A Rust retry whose round
    trip missed its 25 ms deadline on this loaded machine took a local fallback slot instead, as
    designed; those never touched Redis and are left out — but most must have been coordinated."""
    slots = [s for p in plans for s, f in zip(p["slots"], p["fallbacks"]) if f is None]
    total = sum(len(p["slots"]) for p in plans)
    assert len(slots) * 2 >= total, f"only {len(slots)} of {total} Rust retries got a Redis ticket"
    return slots


async def rust(*args: str) -> subprocess.CompletedProcess:
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_python_and_rust_share_one_slot_window(redis_server, ricochet_bin, tmp_path):
    policy_file = tmp_path / "fleet.yaml"
    policy_file.write_text(POLICY_FILE)
    config = _core.load_policy("fleet", str(policy_file), {})
    coordinator = RedisCoordinator(redis_server.url)
    rust_runs = 6  # each `plan` takes one ticket per retry: 4
    python_tickets = 40

    async def python_side():
        return await asyncio.gather(*(
            coordinator.acquire_slot("fleet", "sync", 10_000, config.window_us) for _ in range(python_tickets)
        ))

    async def rust_side(seed):
        r = await rust(ricochet_bin, "plan", "--config", str(policy_file), "--policy", "fleet", "--seed", str(seed),
                       "--redis", redis_server.url, "--service", "fleet", "--operation", "sync", "--format", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    results = await asyncio.gather(python_side(), *(rust_side(s) for s in range(rust_runs)))
    py_grants, rust_plans = results[0], results[1:]
    py_tickets = [g[0] for g in py_grants]
    rust_tickets = coordinated_slots(rust_plans)
    assert len({g[1] for g in py_grants}) == 1
    window = py_grants[0][1]
    every = sorted(py_tickets + rust_tickets)
    assert every == list(range(len(every))), "a ticket was handed out twice (or skipped)"
    assert len(set(py_tickets) & set(rust_tickets)) == 0
    # the key Rust incremented is the key Python computes
    keys = redis_server.cli("KEYS", "*").split()
    assert keys == [_core.slot_key_stem("ricochet", "fleet", "sync") + str(window)], keys
    assert rust_plans[0]["ticket_keys"] == _core.slot_key_stem("ricochet", "fleet", "sync") + "*"
    await coordinator.connection.close()


async def test_a_key_completed_by_rust_is_replayed_by_python(redis_server, ricochet_bin, tmp_path):
    marker = tmp_path / "ran"
    command = ["sh", "-c", f"echo ran >> {marker}"]
    r = await rust(ricochet_bin, "run", "--quiet", "--redis", redis_server.url, "--idempotency-key", "order-7",
                   "--service", "fleet", "--operation", "job", "--", *command)
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == "ran\n"
    record = _core.idempotency_record_key("ricochet", "fleet", "job", "order-7")
    assert redis_server.cli("KEYS", "ricochet:idem:*").split() == [record]

    policy = RetryPolicy(RetryConfig(), idempotency_store=RedisIdempotencyStore(redis_server.url),
                         registry=CollectorRegistry(), logger=False)
    calls = 0

    async def job():
        nonlocal calls
        calls += 1
        return 99

    # the same payload: Rust's fingerprint of a command is its argv joined by \x1f
    replayed = await policy.execute_idempotent("order-7", job, "fleet", "job", fingerprint="\x1f".join(command))
    assert (replayed, calls) == (0, 0)  # Rust's stored exit status, and the job did not run
    assert marker.read_text() == "ran\n"


async def test_a_key_completed_by_python_is_replayed_by_rust(redis_server, ricochet_bin, tmp_path):
    marker = tmp_path / "ran"
    command = ["sh", "-c", f"echo ran >> {marker}; exit 3"]
    policy = RetryPolicy(RetryConfig(), idempotency_store=RedisIdempotencyStore(redis_server.url),
                         registry=CollectorRegistry(), logger=False)

    async def job():
        return 0  # the exit status the Rust side stores for a command

    assert await policy.execute_idempotent("order-8", job, "fleet", "job", fingerprint="\x1f".join(command)) == 0
    record = _core.idempotency_record_key("ricochet", "fleet", "job", "order-8")
    assert redis_server.cli("KEYS", "ricochet:idem:*").split() == [record]

    r = await rust(ricochet_bin, "run", "--quiet", "--redis", redis_server.url, "--idempotency-key", "order-8",
                   "--service", "fleet", "--operation", "job", "--", *command)
    assert r.returncode == 0, r.stderr  # the stored status, not the command's 3
    assert not marker.exists()  # the command did not run

    # the same key with another payload is refused by Rust too
    r = await rust(ricochet_bin, "run", "--quiet", "--redis", redis_server.url, "--idempotency-key", "order-8",
                   "--service", "fleet", "--operation", "job", "--", "sh", "-c", "true")
    assert r.returncode != 0
    assert "order-8" in r.stderr


async def test_python_retries_and_rust_retries_share_the_windows(redis_server, ricochet_bin, tmp_path):
    """Both sides through their real retry paths: Python's executor (failing calls retried with a
    Redis coordinator) and Rust's `schedule_retry` (`ricochet plan --redis`), at the same time.
    Windows are 1 s here, so the herd may straddle two; whatever the split, the tickets handed out
    must be exactly 0..n-1 of each window's counter — none twice, none lost."""
    policy_file = tmp_path / "fleet.yaml"
    policy_file.write_text(
        "retry_policies:\n  fleet:\n    max_attempts: 2\n    initial_delay: 0.001\n    max_delay: 0.01\n"
        "    slot_count: 100000\n    slot_width: 0.00001\n"
    )
    config = _core.load_policy("fleet", str(policy_file), {})
    grants = []

    class Recording(RedisCoordinator):
        async def acquire_slot(self, *args):
            grant = await super().acquire_slot(*args)
            grants.append(grant)
            return grant

    registry = CollectorRegistry()
    policy = RetryPolicy(config, coordinator=Recording(redis_server.url), registry=registry, logger=False,
                         coordination_deadline=1.0)

    def flaky():
        calls = 0

        async def op():
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("reset")
            return calls

        return op

    async def rust_side(seed):
        r = await rust(ricochet_bin, "plan", "--config", str(policy_file), "--policy", "fleet", "--seed", str(seed),
                       "--redis", redis_server.url, "--service", "fleet", "--operation", "herd", "--format", "json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    python_calls = 30
    rust_runs = 8  # one retry each (max_attempts 2): one ticket each
    results = await asyncio.gather(
        asyncio.gather(*(policy.execute_with_retry(flaky(), "fleet", "herd") for _ in range(python_calls))),
        *(rust_side(s) for s in range(rust_runs)),
    )
    assert results[0] == [2] * python_calls
    rust_plans = results[1:]
    for reason in ("connection", "timeout", "backend"):
        assert registry.get_sample_value("retry_coordination_fallback_total",
                                         {"service": "fleet", "operation": "herd", "reason": reason}) is None
    py_tickets = [g[0] for g in grants]
    rust_tickets = coordinated_slots(rust_plans)
    assert len(py_tickets) == python_calls
    counters = {}
    for key in redis_server.cli("KEYS", "*").split():
        assert key.startswith(_core.slot_key_stem("ricochet", "fleet", "herd")), key
        counters[key] = int(redis_server.cli("GET", key))
    handed_out = sorted(t for n in counters.values() for t in range(n))
    assert sorted(py_tickets + rust_tickets) == handed_out
