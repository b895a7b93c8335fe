"""ricochet for Python, measured: `python host/python/bench/bench.py` (after host/python/test.sh,
with its virtualenv: `$CARGO_TARGET_DIR/python-venv/bin/python`). Prints the figures that go
into BENCHMARKS.md ("python"). Nothing here asserts a time.

1. First-try success of `async def op(): return 1` in one coroutine, same process, same run:
   ricochet's `execute_with_retry` with the seed's metrics on (a fresh prometheus registry),
   tenacity's `@retry` (exponential jitter, 3 attempts) and stamina's `@retry` (3 attempts).
2. One core decision from Python (`RetryState.on_failure`).
3. 10 000 concurrent asyncio tasks that fail twice and then succeed, coordinated in memory:
   wall time, peak RSS, tasks left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time

import stamina
import tenacity
from prometheus_client import CollectorRegistry

from ricochet import CATEGORIES, RetryConfig, RetryPolicy, ServiceUnavailableError, _core


async def op():
    return 1


async def per_call(fn, n: int, rounds: int) -> float:
    """Best (lowest) mean seconds per call over `rounds` rounds of `n` awaited calls."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


async def first_try(n: int, rounds: int) -> dict[str, float]:
    policy = RetryPolicy(RetryConfig(), registry=CollectorRegistry())  # metrics on, JSON logs on

    async def with_ricochet():
        return await policy.execute_with_retry(op, "bench", "op")

    @tenacity.retry(wait=tenacity.wait_exponential_jitter(), stop=tenacity.stop_after_attempt(3))
    async def with_tenacity():
        return await op()

    @stamina.retry(on=Exception, attempts=3)
    async def with_stamina():
        return await op()

    bare = await per_call(op, n, rounds)
    return {
        "bare await": bare,
        "ricochet": await per_call(with_ricochet, n, rounds),
        "tenacity": await per_call(with_tenacity, n, rounds),
        "stamina": await per_call(with_stamina, n, rounds),
    }


def decision_ns(batches: int) -> float:
    config = RetryConfig(max_attempts=1000, coordination_enabled=False)
    unavailable = [i for i, c in enumerate(CATEGORIES) if c[0] == "ServiceUnavailableError"][0]
    per_batch = 900
    best = float("inf")
    for _ in range(5):
        total = 0.0
        for _ in range(batches):
            state = _core.RetryState(config, 42, 0)
            on_failure = state.on_failure
            t0 = time.perf_counter()
            for now in range(per_batch):
                on_failure(unavailable, now)
            total += time.perf_counter() - t0
        best = min(best, total / (batches * per_batch))
    return best * 1e9


async def herd(tasks: int) -> dict[str, float]:
    config = RetryConfig(max_attempts=3, initial_delay=0.1, max_delay=1.0)
    policy = RetryPolicy(config, registry=CollectorRegistry(), logger=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def make():
        calls = 0

        async def flaky():
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise ServiceUnavailableError("down")
            return calls

        return flaky

    t0 = time.perf_counter()
    results = await asyncio.gather(*(policy.execute_with_retry(make(), "herd", "op") for _ in range(tasks)))
    wall = time.perf_counter() - t0
    left = len(asyncio.all_tasks()) - 1
    return {
        "tasks": tasks,
        "all_succeeded_on_third_call": all(r == 3 for r in results),
        "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before,
        "tasks_left": left,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=10_000)
    args = ap.parse_args()

    ft = asyncio.run(first_try(args.calls, args.rounds))
    print(f"first-try success, per call (best of {args.rounds} x {args.calls}):")
    for name, s in ft.items():
        print(f"  {name:<11} {s * 1e6:8.2f} µs")
    print(f"  ricochet / tenacity = {ft['ricochet'] / ft['tenacity']:.3f}x   "
          f"ricochet / stamina = {ft['ricochet'] / ft['stamina']:.3f}x")
    print(f"core decision (RetryState.on_failure) from Python: {decision_ns(20):.0f} ns")
    h = asyncio.run(herd(args.tasks))
    print(f"{h['tasks']} concurrent retrying tasks (2 failures each, coordinated in memory): "
          f"{h['wall_s']:.2f} s, peak RSS {h['peak_rss_mib']:.0f} MiB (before: {h['rss_before_mib']:.0f} MiB), "
          f"all succeeded: {h['all_succeeded_on_third_call']}, tasks left: {h['tasks_left']}")


if __name__ == "__main__":
    main()
