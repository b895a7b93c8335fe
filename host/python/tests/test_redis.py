"""Redis coordination and idempotency on our own redis-server processes, with kill/pause faults.
The idempotency semantics run against both stores (memory and Redis) from one suite."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from ricochet import (
    IdempotencyInProgress,
    IdempotencyMismatch,
    InMemoryIdempotencyStore,
    RetryConfig,
    RetryPolicy,
    ServiceUnavailableError,
    _core,
)
from ricochet import _core
from ricochet.idempotency import NotHolder, hash_fingerprint, new_token
from ricochet.observability import default_logger
from ricochet.redis_backends import RedisConnection, RedisCoordinator, RedisIdempotencyStore, redact_url


def metric(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


class Flaky:
    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ServiceUnavailableError("down")
        return "ok"


async def test_tickets_are_unique_in_one_window(redis_server):
    coord = RedisCoordinator(redis_server.url)
    grants = await asyncio.gather(*(coord.acquire_slot("lake", "fetch", 1000, 10**11) for _ in range(50)))
    assert sorted(g[0] for g in grants) == list(range(50))
    assert len({g[1] for g in grants}) == 1
    window = grants[0][1]
    assert redis_server.cli("GET", _core.slot_key_stem("ricochet", "lake", "fetch") + str(window)).strip() == "50"
    await coord.connection.close()


async def test_a_herd_spreads_over_the_slots(redis_server):
    registry = CollectorRegistry()
    # A 1 s window: its counters live at least a second after the herd, so a loaded machine still
    # finds them when it counts below.
    config = RetryConfig(max_attempts=2, initial_delay=0.01, max_delay=0.1, jitter=False, slot_count=10, slot_width=0.1)
    coordinator = RedisCoordinator(redis_server.url)
    # redis.asyncio opens a connection per concurrent command: open the pool's 40 first, so the
    # herd measures coordination, not 40 TCP handshakes racing the 25 ms deadline.
    await asyncio.gather(*(coordinator.acquire_slot("warm", "up", 0, 1000) for _ in range(40)))
    # A generous deadline: this test is about sharing the window, not about a loaded machine's
    # round-trip times (the deadline has its own test below).
    policy = RetryPolicy(config, coordinator=coordinator, registry=registry, logger=False, coordination_deadline=1.0)
    ops = [Flaky(1) for _ in range(40)]
    t0 = time.monotonic()
    results = await asyncio.gather(*(policy.execute_with_retry(op, "lake", "herd") for op in ops))
    assert results == ["ok"] * 40
    assert time.monotonic() - t0 < 3.0
    for reason in ("connection", "timeout", "backend"):
        assert metric(registry, "retry_coordination_fallback_total", service="lake", operation="herd", reason=reason) == 0
    keys = redis_server.cli("KEYS", _core.slot_key_stem("ricochet", "lake", "herd") + "*").split()
    total = sum(int(redis_server.cli("GET", k)) for k in keys)
    assert total == 40


async def test_redis_killed_never_fails_a_call(redis_server):
    registry = CollectorRegistry()
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05)
    policy = RetryPolicy(config, coordinator=RedisCoordinator(redis_server.url),
                         idempotency_store=RedisIdempotencyStore(redis_server.url), registry=registry, logger=False)
    redis_server.kill()
    assert await policy.execute_with_retry(Flaky(2), "lake", "down") == "ok"
    assert metric(registry, "retry_coordination_fallback_total", service="lake", operation="down", reason="connection") == 2
    op = Flaky(1)
    assert await policy.execute_idempotent("k1", op, "lake", "down") == "ok"
    assert metric(registry, "retry_idempotency_fallback_total", service="lake", operation="down", reason="connection") == 1


async def test_redis_paused_costs_at_most_the_deadline(redis_server):
    registry = CollectorRegistry()
    # A 100 ms window: the local fallback slot lands within it.
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05, slot_width=0.01)
    policy = RetryPolicy(config, coordinator=RedisCoordinator(redis_server.url),
                         idempotency_store=RedisIdempotencyStore(redis_server.url), registry=registry, logger=False)
    # warm the connection so the pause hits an established one
    assert await policy.execute_idempotent("warm", Flaky(0), "lake", "paused") == "ok"
    redis_server.pause()
    try:
        t0 = time.monotonic()
        assert await policy.execute_with_retry(Flaky(2), "lake", "paused") == "ok"
        elapsed = time.monotonic() - t0
        # two 25 ms deadlines, ~30 ms of backoff, two slots in a 100 ms window (~0.3 s); without the
        # deadline each round trip would wait for the 1 s socket timeout
        assert elapsed < 0.9, elapsed
        assert metric(registry, "retry_coordination_fallback_total", service="lake", operation="paused", reason="timeout") == 2
        t0 = time.monotonic()
        assert await policy.execute_idempotent("k2", Flaky(0), "lake", "paused") == "ok"
        assert time.monotonic() - t0 < 0.9  # one 100 ms store deadline, not the 1 s socket timeout
        assert metric(registry, "retry_idempotency_fallback_total", service="lake", operation="paused", reason="timeout") == 1
    finally:
        redis_server.resume()


async def test_auth_password_never_leaks(redis_server_factory, caplog):
    secret = "s3cret-pa55word"
    server = redis_server_factory(password=secret)
    good = RedisCoordinator(server.url)
    grant = await good.acquire_slot("lake", "auth", 0, 1_000_000)
    assert grant[0] == 0
    assert secret not in repr(good) and secret not in repr(good.connection)
    assert "***" in repr(good.connection)
    assert secret not in redact_url(server.url)

    wrong_url = server.url.replace(secret, "wrong-" + secret)
    registry = CollectorRegistry()
    log = io.StringIO()
    policy = RetryPolicy(RetryConfig(max_attempts=2, initial_delay=0.01, max_delay=0.05),
                         coordinator=RedisCoordinator(wrong_url), idempotency_store=RedisIdempotencyStore(wrong_url),
                         registry=registry, logger=default_logger(log))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as info:
        await RedisCoordinator(wrong_url).acquire_slot("lake", "auth", 0, 1_000_000)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert await policy.execute_with_retry(Flaky(1), "lake", "auth") == "ok"
    assert await policy.execute_idempotent("k", Flaky(0), "lake", "auth") == "ok"
    assert metric(registry, "retry_coordination_fallback_total", service="lake", operation="auth", reason="connection") == 1
    assert secret not in log.getvalue()
    assert secret not in caplog.text
    assert secret not in repr(policy.coordinator) + repr(policy.idempotency_store)


# --- one conformance suite for both stores ---------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def store(request, redis_server):
    if request.param == "memory":
        return InMemoryIdempotencyStore()
    return RedisIdempotencyStore(redis_server.url)


async def test_store_lifecycle(store):
    key = _core.idempotency_record_key("ricochet", "svc", "op", "order-1")
    fp = hash_fingerprint("payload")
    t1 = new_token()
    assert await store.begin(key, fp, t1, 10_000) == ("started", None)
    kind, lease_left = await store.begin(key, fp, new_token(), 10_000)
    assert kind == "in_progress" and 0 < lease_left <= 10_000
    assert await store.begin(key, hash_fingerprint("other"), new_token(), 10_000) == ("mismatch", None)
    await store.complete(key, fp, t1, b'{"id":1}', 60_000)
    assert await store.begin(key, fp, new_token(), 10_000) == ("completed", b'{"id":1}')
    with pytest.raises(NotHolder):
        await store.complete(key, fp, new_token(), b"2", 60_000)


async def test_store_fail_releases_and_lease_expiry_is_taken_over(store):
    key = _core.idempotency_record_key("ricochet", "svc", "op", "order-2")
    fp = hash_fingerprint("p")
    t1 = new_token()
    assert (await store.begin(key, fp, t1, 10_000))[0] == "started"
    with pytest.raises(NotHolder):
        await store.fail(key, new_token())
    await store.fail(key, t1)
    t2 = new_token()
    assert (await store.begin(key, fp, t2, 50))[0] == "started"
    await asyncio.sleep(0.1)
    t3 = new_token()
    assert (await store.begin(key, fp, t3, 10_000))[0] == "started"  # expired lease taken over
    with pytest.raises(NotHolder):
        await store.renew(key, t2, 10_000)
    await store.renew(key, t3, 10_000)


async def test_execute_idempotent_runs_once(store):
    policy = RetryPolicy(RetryConfig(initial_delay=0.01, max_delay=0.05), idempotency_store=store,
                         registry=CollectorRegistry(), logger=False)
    calls = 0

    async def charge():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"charged": 42}

    first, second = await asyncio.gather(
        policy.execute_idempotent("pay-1", charge, "billing", "charge", fingerprint="42"),
        policy.execute_idempotent("pay-1", charge, "billing", "charge", fingerprint="42"),
    )
    assert first == second == {"charged": 42}
    assert await policy.execute_idempotent("pay-1", charge, "billing", "charge", fingerprint="42") == {"charged": 42}
    assert calls == 1
    with pytest.raises(IdempotencyMismatch):
        await policy.execute_idempotent("pay-1", charge, "billing", "charge", fingerprint="43")
    # another operation with the same key is another record
    assert await policy.execute_idempotent("pay-1", charge, "billing", "refund", fingerprint="42") == {"charged": 42}
    assert calls == 2


async def test_execute_idempotent_failure_releases_the_key(store):
    policy = RetryPolicy(RetryConfig(max_attempts=2, initial_delay=0.01, max_delay=0.05), idempotency_store=store,
                         registry=CollectorRegistry(), logger=False)
    op = Flaky(2)
    with pytest.raises(Exception):
        await policy.execute_idempotent("job-1", op, "svc", "job")
    assert await policy.execute_idempotent("job-1", op, "svc", "job") == "ok"
    assert op.calls == 3


async def test_duplicate_waits_then_gives_up(store):
    policy = RetryPolicy(RetryConfig(), idempotency_store=store, registry=CollectorRegistry(), logger=False, wait=0.1)

    async def slow():
        await asyncio.sleep(0.5)
        return 1

    task = asyncio.create_task(policy.execute_idempotent("slow-1", slow, "svc", "slow"))
    await asyncio.sleep(0.02)
    with pytest.raises(IdempotencyInProgress):
        await policy.execute_idempotent("slow-1", slow, "svc", "slow")
    assert await task == 1


async def test_lease_is_renewed_while_running(redis_server):
    store = RedisIdempotencyStore(redis_server.url)
    policy = RetryPolicy(RetryConfig(), idempotency_store=store, registry=CollectorRegistry(), logger=False,
                         lease=0.15, wait=0)

    async def long():
        await asyncio.sleep(0.5)
        return "done"

    task = asyncio.create_task(policy.execute_idempotent("long-1", long, "svc", "long"))
    await asyncio.sleep(0.35)  # past two leases: still held thanks to renewals
    with pytest.raises(IdempotencyInProgress):
        await policy.execute_idempotent("long-1", long, "svc", "long")
    assert await task == "done"


async def test_rediss_with_auth(redis_server_factory):
    secret = "tls-s3cret"
    server = redis_server_factory(password=secret, tls=True)
    conn = RedisConnection(server.url, ssl_ca_certs=server.ca_file)
    coordinator = RedisCoordinator(conn)
    store = RedisIdempotencyStore(conn)
    registry = CollectorRegistry()
    policy = RetryPolicy(RetryConfig(max_attempts=2, initial_delay=0.01, max_delay=0.05), coordinator=coordinator,
                         idempotency_store=store, registry=registry, logger=False, coordination_deadline=1.0,
                         store_deadline=1.0)
    assert await policy.execute_with_retry(Flaky(1), "lake", "tls") == "ok"
    assert await policy.execute_idempotent("k", Flaky(0), "lake", "tls") == "ok"
    for reason in ("connection", "timeout", "backend"):
        assert metric(registry, "retry_coordination_fallback_total", service="lake", operation="tls", reason=reason) == 0
        assert metric(registry, "retry_idempotency_fallback_total", service="lake", operation="tls", reason=reason) == 0
    assert server.cli("KEYS", "ricochet:idem:*").split() == [_core.idempotency_record_key("ricochet", "lake", "tls", "k")]
    assert secret not in repr(conn) and conn.__repr__().startswith("RedisConnection('rediss://:***@")
    await conn.close()
