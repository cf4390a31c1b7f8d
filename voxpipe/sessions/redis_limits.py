"""The ``limits:`` rate windows in the deployment's Redis, so every ``voxpipe serve`` of a fleet counts together.

One sorted set per deployment, window and key, ``voxpipe:limit:<deployment>:<name>:{<key>}``, scored by the
time of each event; a Lua script drops the events older than the window, refuses when ``limit`` remain
(answering when the oldest ages out, for ``Retry-After``) and otherwise adds this one, all in one atomic
step, so two servers racing never both take the last place. The time is Redis's own (``TIME``), so the
servers' clocks do not matter. The set expires with its window, so a client seen once costs nothing
afterwards. See ``voxpipe.security.limits``.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from voxpipe.security.limits import LimitExceeded

PREFIX = "voxpipe:limit"

TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return false
"""


class RedisWindows:
    """``SharedWindows`` in one Redis database (``url`` as redis-py takes it); ``scope`` (the deployment's
    name) keeps the windows of deployments sharing the database apart."""

    def __init__(self, url: str, scope: str):
        self._redis = Redis.from_url(url)
        self._scope = scope
        self._take = self._redis.register_script(TAKE)

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        event = secrets.token_hex(8)  # members must differ: two events may share a timestamp
        retry = await self._take(keys=[f"{PREFIX}:{self._scope}:{name}:{{{key}}}"], args=[window_secs, limit, event])
        if retry is not None:
            raise LimitExceeded(name, float(retry))

    async def close(self) -> None:
        await self._redis.aclose()
