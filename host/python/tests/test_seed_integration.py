"""The seed's integration scenarios against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ricochet import MaxRetriesExceeded, RetryConfig, RetryPolicy, raise_for_response, with_retry


class Server:
    """An aiohttp server whose handler follows a script of responses; records arrival times."""

    def __init__(self, script):
        self.script = script
        self.arrivals: list[float] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        step = self.script[min(len(self.arrivals), len(self.script)) - 1]
        return await step(request)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/data", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/data"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


def status(code, headers=None):
    async def respond(_request):
        return web.json_response({"status": code}, status=code, headers=headers or {})
    return respond


def stall(seconds):
    async def respond(_request):
        await asyncio.sleep(seconds)
        return web.json_response({"status": 200})
    return respond


def policy(config, **kw):
    return RetryPolicy(config, registry=CollectorRegistry(), logger=False, **kw)


async def test_service_temporary_unavailable_success_after_retries():
    config = RetryConfig(max_attempts=4, initial_delay=0.02, max_delay=0.2)
    async with Server([status(503), status(503), status(200)]) as server, aiohttp.ClientSession() as session:

        @with_retry(retry_config=config, retry_on=(aiohttp.ClientError, asyncio.TimeoutError), service_name="lake",
                    registry=CollectorRegistry(), logger=False)
        async def call_service():
            async with session.get(server.url, raise_for_status=True) as r:
                return await r.json()

        assert await call_service() == {"status": 200}
        assert len(server.arrivals) == 3


async def test_service_temporary_unavailable_direct_form_and_exhaustion():
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.1)
    async with Server([status(503)]) as server, aiohttp.ClientSession() as session:

        async def service_call():
            async with session.get(server.url, raise_for_status=True) as r:
                return await r.json()

        with pytest.raises(MaxRetriesExceeded) as info:
            await policy(config).execute_with_retry(operation=service_call, service_name="stream",
                                                   operation_name="data_fetch")
        assert info.value.attempts == 3
        assert isinstance(info.value.last_error, aiohttp.ClientResponseError)
        assert len(server.arrivals) == 3


async def test_network_timeout_exponential_backoff_visible():
    # No jitter, no slots: the gaps between arrivals are timeout + the core's 100/200/400 ms.
    config = RetryConfig(max_attempts=5, initial_delay=0.1, max_delay=1.0, jitter=False, coordination_enabled=False)
    timeout = aiohttp.ClientTimeout(total=0.05)
    async with Server([stall(1), stall(1), stall(1), status(200)]) as server, \
            aiohttp.ClientSession(timeout=timeout) as session:

        async def fetch():
            async with session.get(server.url) as r:
                return r.status

        assert await policy(config).execute_with_retry(fetch, "lake", "fetch") == 200
        gaps = [b - a for a, b in zip(server.arrivals, server.arrivals[1:])]
        sleeps = [g - 0.05 for g in gaps]  # each failed attempt took the 50 ms client timeout
        for got, want in zip(sleeps, [0.1, 0.2, 0.4]):
            assert want - 0.01 <= got < want + 0.09, (sleeps,)  # slack for a loaded machine
        assert sleeps[0] < sleeps[1] < sleeps[2]


async def test_rate_limit_exceeded_respects_retry_after_header():
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=5.0, coordination_enabled=False)
    async with Server([status(429, {"Retry-After": "1"}), status(200)]) as server, aiohttp.ClientSession() as session:

        async def fetch():
            async with session.get(server.url, raise_for_status=True) as r:
                return r.status

        assert await policy(config).execute_with_retry(fetch, "lake", "fetch") == 200
        gap = server.arrivals[1] - server.arrivals[0]
        assert 1.0 <= gap < 1.5, gap  # the server's 1 s, not the computed 10 ms


async def test_rate_limit_httpx_ratelimit_header_and_cap():
    # httpx responses through raise_for_response; a Retry-After beyond max_retry_after gives up.
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=5.0, max_retry_after=2.0,
                         coordination_enabled=False)
    async with Server([status(429, {"RateLimit": '"default";r=0;t=1'}), status(200)]) as server, \
            httpx.AsyncClient() as client:

        async def fetch():
            return raise_for_response(await client.get(server.url)).status_code

        assert await policy(config).execute_with_retry(fetch, "lake", "fetch") == 200
        assert server.arrivals[1] - server.arrivals[0] >= 1.0

    async with Server([status(503, {"Retry-After": "3600"})]) as server, httpx.AsyncClient() as client:

        async def fetch2():
            r = await client.get(server.url)
            r.raise_for_status()
            return r.status_code

        t0 = time.monotonic()
        with pytest.raises(MaxRetriesExceeded) as info:
            await policy(config).execute_with_retry(fetch2, "lake", "fetch")
        assert info.value.reason == "retry_after_too_long"
        assert time.monotonic() - t0 < 1.0
        assert len(server.arrivals) == 1


async def test_not_found_is_not_retried():
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.1)
    async with Server([status(404)]) as server, aiohttp.ClientSession() as session:

        async def fetch():
            async with session.get(server.url, raise_for_status=True) as r:
                return r.status

        with pytest.raises(aiohttp.ClientResponseError):
            await policy(config, retry_on=(aiohttp.ClientError,)).execute_with_retry(fetch, "lake", "fetch")
        assert len(server.arrivals) == 1


def test_sync_function_against_real_server():
    # A plain def with a blocking client (urllib) and time.sleep between attempts.
    import threading
    import urllib.error
    import urllib.request

    server_ready = threading.Event()
    box = {}

    def serve():
        loop = asyncio.new_event_loop()
        srv = Server([status(503), status(200)])

        async def main():
            async with srv:
                box["server"] = srv
                server_ready.set()
                while not box.get("stop"):
                    await asyncio.sleep(0.01)

        loop.run_until_complete(main())
        loop.close()

    t = threading.Thread(target=serve)
    t.start()
    server_ready.wait(5)
    try:
        srv = box["server"]

        @with_retry(retry_config=RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.1),
                    retry_on=(urllib.error.URLError,), service_name="lake", registry=CollectorRegistry(), logger=False)
        def fetch():
            with urllib.request.urlopen(srv.url, timeout=2) as r:
                return r.status

        assert fetch() == 200
        assert len(srv.arrivals) == 2
    finally:
        box["stop"] = True
        t.join()


async def test_connection_refused_is_retried_then_gives_up():
    # A real closed port: httpx's ConnectError and aiohttp's ClientConnectorError are connection errors.
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    config = RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.05, coordination_enabled=False)
    async with httpx.AsyncClient() as client:
        with pytest.raises(MaxRetriesExceeded) as info:
            await policy(config).execute_with_retry(lambda: client.get(url), "lake", "down")
    assert (info.value.attempts, info.value.reason) == (3, "exhausted")
    assert isinstance(info.value.last_error, httpx.ConnectError)
    async with aiohttp.ClientSession() as session:

        async def fetch():
            async with session.get(url) as r:
                return r.status

        with pytest.raises(MaxRetriesExceeded) as info:
            await policy(config, retry_on=(aiohttp.ClientError,)).execute_with_retry(fetch, "lake", "down")
    assert info.value.attempts == 3
