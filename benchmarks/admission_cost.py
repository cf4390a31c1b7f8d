"""What admitting one call costs: the checks every new call passes before its pipeline starts (issue 11).

A browser call checks its page token (HMAC, ``voxpipe.security.browser_access``) and counts against the
per-client rate and takes a concurrency slot (given back when the call ends); a Twilio call spends its
binding token once (``voxpipe.security.spent_tokens``). Rate windows, slot leases and spent tokens live
beside the deployment's sessions so that every process counts together, which puts store round trips on
each admission (the window, the slot, and giving the slot back are measured together). This prints the
median and p99 cost of each step, per store::

    python benchmarks/admission_cost.py [--n 2000] [--redis redis://127.0.0.1:6379/0]

Memory and SQLite always run (SQLite on a temporary file, WAL mode, as the sessions store uses it); Redis
only when ``--redis`` names a server (its numbers include the local network round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from voxpipe.security.browser_access import BrowserAccess
from voxpipe.security.limits import DeploymentLimits, SharedWindows
from voxpipe.security.spent_tokens import MemorySpentTokens, SpentTokens
from voxpipe.security.tokens import Signer
from voxpipe.sessions.sqlite_limits import SQLiteWindows
from voxpipe.sessions.sqlite_spent import SQLiteSpentTokens

ORIGIN = "https://app.example.com"


async def timed(n: int, step: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Median and p99 of ``n`` runs of ``step(i)``, in microseconds."""
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await step(i)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (n - 1))]


async def run(n: int, redis: str | None) -> None:
    signer = Signer(secrets.token_bytes(32))
    access = BrowserAccess([ORIGIN], signer, 600)
    token = access.issue(ORIGIN).token

    async def check(_: int) -> None:
        access.check(token, ORIGIN)

    print(f"{'step':<44}{'median us':>12}{'p99 us':>10}")
    print(
        f"{'page token check (HMAC)':<44}"
        + "".join(f"{v:>{w}.1f}" for v, w in zip(await timed(n, check), (12, 10), strict=True))
    )
    folder = Path(tempfile.mkdtemp(prefix="voxpipe-admission-"))
    stores: list[tuple[str, SharedWindows | None, SpentTokens]] = [
        ("memory", None, MemorySpentTokens()),
        ("sqlite", SQLiteWindows(folder / "s.db", "bench"), SQLiteSpentTokens(folder / "s.db")),
    ]
    if redis:
        from voxpipe.sessions.redis_limits import RedisWindows
        from voxpipe.sessions.redis_spent import RedisSpentTokens

        stores.append(("redis", RedisWindows(redis, "bench"), RedisSpentTokens(redis)))
    for name, windows, spent in stores:
        await measure_store(name, windows, spent, signer, n)


async def measure_store(name: str, windows: SharedWindows | None, spent: SpentTokens, signer: Signer, n: int) -> None:
    """Admitting a call (its rate window, then a slot) and spending a call token, on one store."""
    limits = DeploymentLimits(10**9, 10**9, 10**9, shared=windows)
    tokens = [signer.mint("call:twilio", f"CA{i}", 120) for i in range(n)]

    async def admit(i: int) -> None:
        await (await limits.admit_call(f"198.51.100.{i % 250}")).release()

    async def spend(i: int) -> None:
        if not await spent.spend(tokens[i], 120):
            raise RuntimeError("a fresh token counted as spent")

    for label, step in [(f"{name}: admit a call (rate window + slot)", admit), (f"{name}: spend a call token", spend)]:
        median, p99 = await timed(n, step)
        print(f"{label:<44}{median:>12.1f}{p99:>10.1f}")
    if windows is not None:
        await windows.close()
    await spent.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="admissions per step")
    parser.add_argument("--redis", help="a Redis URL to measure too (e.g. redis://127.0.0.1:6379/0)")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.n, arguments.redis))


if __name__ == "__main__":
    main()
