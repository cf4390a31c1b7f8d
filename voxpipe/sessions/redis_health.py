"""A failing provider's cooldown, shared by every process on one Redis (``voxpipe serve`` workers, replicas).

``pipeline.fallback.HEALTH`` remembers, per process, when each ``(role, provider)`` last failed, so calls
starting within the cooldown begin on the backup. In a fleet each process would otherwise find the failing
primary on its own, one failed call per process, and retry it at different moments. ``RedisHealthBoard``
shares the memory through the deployment's session Redis:

- a failure seen here is written at once as ``voxpipe:health:<role>:<provider>`` = its wall-clock time,
  expiring with the cooldown (Redis forgets it on time);
- every ``interval_secs`` the process reads those keys and ``learn``s the failures other processes saw.

Each process counts the cooldown from the same failure time, so the whole fleet tries the primary again
together. A Redis that cannot be reached only loses the sharing (logged); calls never wait for it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from loguru import logger
from redis.exceptions import RedisError

from voxpipe.pipeline.fallback import HEALTH, ProviderHealth
from voxpipe.sessions.redis import redis_client

PREFIX = "voxpipe:health:"


class RedisHealthBoard:
    """Shares ``health`` through the Redis at ``url`` while ``run()`` runs."""

    def __init__(self, url: str, health: ProviderHealth = HEALTH, interval_secs: float = 1.0):
        self.health = health
        self.interval_secs = interval_secs
        self._redis = redis_client(url, decode_responses=True)
        self._writes: set[Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Publish this process's failures and learn the others' until cancelled."""
        self._loop = asyncio.get_running_loop()
        self.health.listeners.append(self._failed)
        try:
            while True:
                await self.sync()
                await asyncio.sleep(self.interval_secs)
        finally:
            self.health.listeners.remove(self._failed)

    def _failed(self, role: str, provider: str, at_wall: float) -> None:
        """Told by ``health`` (from any thread): the write runs on the loop that owns the Redis client."""
        assert self._loop is not None  # noqa: S101 — listening starts in run(), after the loop is known
        write = asyncio.run_coroutine_threadsafe(self._publish(role, provider, at_wall), self._loop)
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _publish(self, role: str, provider: str, at_wall: float) -> None:
        try:
            await self._redis.set(f"{PREFIX}{role}:{provider}", repr(at_wall), px=int(self.health.cooldown_secs * 1000))
        except RedisError as exc:
            logger.warning(f"provider health: could not share {role} {provider}'s failure: {exc!r}")

    async def sync(self) -> None:
        """Learn the failures every process has shared that are still cooling down."""
        try:
            keys = [key async for key in self._redis.scan_iter(match=PREFIX + "*")]
            values = await self._redis.mget(keys) if keys else []
        except RedisError as exc:
            logger.warning(f"provider health: could not read the shared failures: {exc!r}")
            return
        for key, value in zip(keys, values, strict=True):
            role, _, provider = key.removeprefix(PREFIX).partition(":")
            try:
                at_wall = float(value)
            except (TypeError, ValueError):
                continue  # expired between SCAN and MGET, or not ours
            self.health.learn(role, provider, at_wall)

    async def close(self) -> None:
        await asyncio.gather(*map(asyncio.wrap_future, self._writes), return_exceptions=True)
        await self._redis.aclose()
