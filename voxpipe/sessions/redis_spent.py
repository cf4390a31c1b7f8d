"""Spent call-binding tokens in the deployment's Redis, so a token spent on one server is refused by all.

One key per spent token, ``voxpipe:spent:<sha256 of the token>``, written with ``SET NX`` (only the first
writer wins: two servers racing on the same token cannot both accept it) and expiring with the token, so
Redis forgets it on time. See ``voxpipe.security.spent_tokens``.
"""

from __future__ import annotations

import math

from voxpipe.security.spent_tokens import digest
from voxpipe.sessions.redis import redis_client

PREFIX = "voxpipe:spent"


class RedisSpentTokens:
    """``SpentTokens`` in one Redis database (``url`` as redis-py takes it)."""

    def __init__(self, url: str):
        self._redis = redis_client(url)

    async def spend(self, token: str, keep_secs: float) -> bool:
        first = await self._redis.set(f"{PREFIX}:{digest(token)}", b"1", nx=True, ex=max(1, math.ceil(keep_secs)))
        return bool(first)

    async def close(self) -> None:
        await self._redis.aclose()
