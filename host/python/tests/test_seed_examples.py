"""The seed's examples, as written (only the import line is ricochet's), against a real server."""

from __future__ import annotations

import asyncio

import aiohttp
import structlog
from aiohttp import web

from ricochet import MaxRetriesExceeded, RetryConfig, RetryPolicy, with_retry  # the import line

logger = structlog.get_logger()


class CustomError(Exception):
    pass


async def start(script):
    hits = []

    async def handle(_request):
        hits.append(1)
        return web.json_response({}, status=script[min(len(hits), len(script)) - 1])

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/", hits


async def test_the_seeds_examples_run_as_written():
    runner, url, hits = await start([503, 200, 503, 200, 503, 200, 503, 200, 503])
    try:
        async def make_request():
            async with aiohttp.ClientSession() as s, s.get(url, raise_for_status=True) as r:
                return r.status

        async def complex_request():
            try:
                return await make_request()
            except aiohttp.ClientResponseError as e:
                raise CustomError(str(e)) from e

        service_call = make_request

        # --- Decorator Usage (seed) ---
        @with_retry(
            retry_config=RetryConfig(max_attempts=3),
            retry_on=(aiohttp.ClientError, asyncio.TimeoutError),
            service_name="lake"
        )
        async def call_service():
            # Service call implementation
            return await make_request()

        assert await call_service() == 200

        # --- Direct Usage (seed) ---
        retry_policy = RetryPolicy(RetryConfig(max_attempts=3))
        result = await retry_policy.execute_with_retry(
            operation=service_call,
            service_name="stream",
            operation_name="data_fetch"
        )
        assert result == 200

        # --- Basic Implementation (seed) ---
        @with_retry(
            retry_config=RetryConfig(),
            service_name="example"
        )
        async def basic_operation():
            return await make_request()

        assert await basic_operation() == 200

        # --- Advanced Configuration (seed) ---
        @with_retry(
            retry_config=RetryConfig(
                max_attempts=5,
                initial_delay=0.1,
                max_delay=5.0,
                jitter=True
            ),
            retry_on=(CustomError, TimeoutError),
            service_name="advanced",
            operation_name="complex_operation"
        )
        async def advanced_operation():
            return await complex_request()

        assert await advanced_operation() == 200

        # --- Error Handling (seed) ---
        @with_retry(retry_config=RetryConfig(max_attempts=1), retry_on=(aiohttp.ClientError,), service_name="example")
        async def operation_with_retry():
            return await make_request()

        handled = False
        try:
            result = await operation_with_retry()
        except MaxRetriesExceeded as e:
            logger.error("Operation failed after max retries", error=str(e))
            # Handle failure
            handled = True
        assert handled
        assert len(hits) == 9
    finally:
        await runner.cleanup()
