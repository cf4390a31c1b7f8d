"""A failing provider's cooldown shared through Redis (``voxpipe.sessions.redis_health``), on a real redis-server.

Two ``ProviderHealth``s with a board each stand for two processes of a fleet: a failure one sees is skipped by
the other's next calls, and both retry the primary at the same moment. A served app whose sessions are in
Redis shares the process's ``HEALTH`` both ways.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.simulators.server import RunningServer
from tests.test_session_backends import redis_url  # noqa: F401 (a pytest fixture, by name)
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.fallback import HEALTH, ProviderHealth
from voxpipe.sessions.redis_health import PREFIX, RedisHealthBoard
from voxpipe.web.app import create_app


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_processes_skip_the_failed_primary_and_retry_it_together(redis_url: str) -> None:  # noqa: F811
    await Redis.from_url(redis_url).flushdb()
    first, second = ProviderHealth(cooldown_secs=1.5), ProviderHealth(cooldown_secs=1.5)
    boards = [RedisHealthBoard(redis_url, first, 0.05), RedisHealthBoard(redis_url, second, 0.05)]
    running = [asyncio.ensure_future(board.run()) for board in boards]
    try:
        await asyncio.sleep(0.1)
        first.failed("llm", "openai_llm")
        await _until(lambda: second.cooling_down("llm", "openai_llm") is not None)
        assert second.cooling_down("llm", "deepgram") is None and second.cooling_down("stt", "openai_llm") is None
        # The same failure time on both: the cooldowns end together (within the test's polling).
        assert (
            abs((first.cooling_down("llm", "openai_llm") or 0) - (second.cooling_down("llm", "openai_llm") or 0)) < 0.05
        )
        await _until(lambda: first.cooling_down("llm", "openai_llm") is None, timeout=3)
        await _until(lambda: second.cooling_down("llm", "openai_llm") is None, timeout=0.1)
        assert await Redis.from_url(redis_url).keys(PREFIX + "*") == []  # Redis forgot it on time
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for board in boards:
            await board.close()


async def test_a_served_app_on_redis_sessions_shares_its_health(redis_url: str, registry: object) -> None:  # noqa: F811
    redis = Redis.from_url(redis_url, decode_responses=True)
    await redis.flushdb()
    deployment = parse_deployment(
        "name: desk\nagent: {instructions: Hi.}\nvad: {provider: testkit_vad}\nstt: {provider: testkit_stt}\n"
        "llm: {provider: testkit_llm}\ntts: {provider: testkit_tts}\n"
        f"sessions: {{store: redis, url: '{redis_url}'}}\n"
    )
    HEALTH.clear()
    try:
        with RunningServer(create_app([deployment], warm_up=False)):
            await asyncio.sleep(0.2)
            HEALTH.failed("tts", "elevenlabs")  # seen in this process: written to Redis
            await _wait_key(redis, f"{PREFIX}tts:elevenlabs")
            await redis.set(f"{PREFIX}stt:deepgram", repr(time.time()), px=30_000)  # seen by another process
            await _until(lambda: HEALTH.cooling_down("stt", "deepgram") is not None, timeout=5)
    finally:
        HEALTH.clear()
        await redis.aclose()


async def _wait_key(redis: Redis, key: str) -> None:
    for _ in range(100):
        if await redis.exists(key):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{key} was not written")
