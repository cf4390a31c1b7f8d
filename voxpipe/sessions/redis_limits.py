"""The ``limits:`` windows and call slots in the deployment's Redis, so every ``voxpipe serve`` of a fleet counts
together.

One sorted set per deployment, window and key, ``voxpipe:limit:<deployment>:<name>:{<key>}``, scored by the
time of each event; a Lua script drops the events older than the window, refuses when ``limit`` remain
(answering when the oldest ages out, for ``Retry-After``) and otherwise adds this one, all in one atomic
step, so two servers racing never both take the last place. The time is Redis's own (``TIME``), so the
servers' clocks do not matter. The set expires with its window, so a client seen once costs nothing
afterwards.

Call slots (``concurrent_calls``) are one sorted set per deployment, ``voxpipe:slots:<deployment>:<name>``,
of leases scored by when they expire (Redis time). Taking one drops the expired leases, refuses at
``limit``, else adds it, in one script; renewing pushes its expiry on; releasing removes it. A server that
dies holding leases stops renewing them, so they expire and the slots are free again. See
``voxpipe.security.limits``.
"""

from __future__ import annotations

import secrets

from voxpipe.security.limits import LimitExceeded
from voxpipe.sessions.redis import redis_client

PREFIX = "voxpipe:limit"
SLOTS = "voxpipe:slots"

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

TAKE_SLOT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""
)

RENEW_SLOT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
"""
)

TAKE = (
    _NOW
    + """
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
)


class RedisWindows:
    """``SharedWindows`` in one Redis database (``url`` as redis-py takes it); ``scope`` (the deployment's
    name) keeps the windows of deployments sharing the database apart. A Redis that does not answer within
    ``timeout_secs`` has failed (the limits fall back to the process's own count): a new call must not wait
    on a hung store."""

    def __init__(self, url: str, scope: str, timeout_secs: float = 1.0):
        self._redis = redis_client(url, timeout_secs=timeout_secs)
        self._scope = scope
        self._take = self._redis.register_script(TAKE)
        self._take_slot = self._redis.register_script(TAKE_SLOT)
        self._renew_slot = self._redis.register_script(RENEW_SLOT)

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        event = secrets.token_hex(8)  # members must differ: two events may share a timestamp
        retry = await self._take(keys=[f"{PREFIX}:{self._scope}:{name}:{{{key}}}"], args=[window_secs, limit, event])
        if retry is not None:
            raise LimitExceeded(name, float(retry))

    def _slots(self, name: str) -> str:
        return f"{SLOTS}:{self._scope}:{name}"

    async def take_slot(self, name: str, limit: int, lease: str, ttl_secs: float) -> None:
        if not await self._take_slot(keys=[self._slots(name)], args=[limit, lease, ttl_secs]):
            raise LimitExceeded(name, 1.0)  # no time can be promised: a slot frees when a call ends

    async def renew_slot(self, name: str, lease: str, ttl_secs: float) -> None:
        await self._renew_slot(keys=[self._slots(name)], args=[lease, ttl_secs])

    async def release_slot(self, name: str, lease: str) -> None:
        await self._redis.zrem(self._slots(name), lease)

    async def close(self) -> None:
        await self._redis.aclose()
