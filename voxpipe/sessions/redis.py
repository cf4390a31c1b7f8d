"""``sessions: {store: redis, url: redis://HOST:PORT/DB}``: conversations in Redis, shared by ``voxpipe serve``s.

Three keys per call, with one hash tag so that they live on one Redis Cluster slot:
``voxpipe:session:{<call id>}:messages`` (a list of JSON messages), ``...:meta`` (a JSON object) and ``...:bytes``
(the messages' total size, for the ``max_history_bytes`` cap). All expire ``ttl_secs`` after the last write
(Redis deletes them on time, so nothing needs filtering on read).

Writes are optimistic transactions (``WATCH`` / ``MULTI`` / ``EXEC``): an ``append`` that finds a different
number of messages than expected, or loses the race to another writer, raises ``Conflict`` and writes nothing;
metadata merges and the cut of the last assistant turn retry until they win.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from voxpipe.sessions.base import MAX_HISTORY_BYTES, Conflict, HistoryTooLarge, Message, Session

T = TypeVar("T")
PREFIX = "voxpipe:session"
#: How long a Redis command may take, connecting included, before it has failed: without it a hung Redis
#: (a stopped process, a network partition dropping packets) holds a call's start, or its end, forever.
TIMEOUT_SECS = 2.0


def redis_client(url: str, *, decode_responses: bool = False, timeout_secs: float = TIMEOUT_SECS) -> Redis:
    """A client of the Redis at ``url`` whose commands fail after ``timeout_secs`` instead of waiting on."""
    return Redis.from_url(
        url, decode_responses=decode_responses, socket_timeout=timeout_secs, socket_connect_timeout=timeout_secs
    )


class RedisSessionStore:
    """A ``SessionStore`` on one Redis database (``url`` as redis-py takes it: ``redis://``, ``rediss://``...)."""

    def __init__(self, url: str | None, ttl_secs: float = 86400, *, max_history_bytes: int = MAX_HISTORY_BYTES):
        if not url:
            raise ValueError("sessions.url is required with store: redis (e.g. redis://localhost:6379/0)")
        self.ttl_secs = int(ttl_secs)
        self.max_history_bytes = max_history_bytes
        self._redis = redis_client(url, decode_responses=True)

    @staticmethod
    def _keys(call_id: str) -> tuple[str, str]:
        return f"{PREFIX}:{{{call_id}}}:messages", f"{PREFIX}:{{{call_id}}}:meta"

    @staticmethod
    def _size_key(call_id: str) -> str:
        return f"{PREFIX}:{{{call_id}}}:bytes"

    async def get(self, call_id: str) -> Session | None:
        messages_key, meta_key = self._keys(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(messages_key, 0, -1)
            pipe.get(meta_key)
            messages, meta = await pipe.execute()
        if not messages and meta is None:
            return None
        return Session(call_id, [json.loads(m) for m in messages], json.loads(meta) if meta else {})

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        messages_key, _ = self._keys(call_id)
        encoded = [json.dumps(m, ensure_ascii=False) for m in messages]
        adding = sum(len(text.encode("utf-8")) for text in encoded)
        size_key = self._size_key(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(messages_key, size_key)
                actual = await pipe.llen(messages_key)
                if actual != expected:
                    raise Conflict(call_id, expected, actual)
                size = int(await pipe.get(size_key) or 0) + adding
                if size > self.max_history_bytes:
                    raise HistoryTooLarge(call_id, size, self.max_history_bytes)
                pipe.multi()
                if encoded:
                    pipe.rpush(messages_key, *encoded)
                    pipe.incrby(size_key, adding)
                self._touch(pipe, call_id)
                await pipe.execute()
            except WatchError:
                raise Conflict(call_id, expected, await self._redis.llen(messages_key)) from None
        return expected + len(encoded)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        _, meta_key = self._keys(call_id)

        async def merge(pipe: Pipeline) -> None:
            current = await pipe.get(meta_key)
            pipe.multi()
            pipe.set(meta_key, json.dumps((json.loads(current) if current else {}) | dict(changes)))
            self._touch(pipe, call_id)

        await self._retry(meta_key, merge)

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        messages_key, _ = self._keys(call_id)

        async def cut(pipe: Pipeline) -> bool:
            stored = await pipe.lrange(messages_key, 0, -1)
            for index in range(len(stored) - 1, -1, -1):
                message = json.loads(stored[index])
                if message.get("role") == "assistant":
                    cut = json.dumps({**message, "content": content}, ensure_ascii=False)
                    pipe.multi()
                    pipe.lset(messages_key, index, cut)
                    pipe.incrby(self._size_key(call_id), len(cut.encode("utf-8")) - len(stored[index].encode("utf-8")))
                    self._touch(pipe, call_id)
                    return True
            return False

        return await self._retry(messages_key, cut)

    def _touch(self, pipe: Pipeline, call_id: str) -> None:
        """Queue: the session exists (metadata at least ``{}``) and both keys live ``ttl_secs`` from now."""
        messages_key, meta_key = self._keys(call_id)
        pipe.set(meta_key, "{}", nx=True)
        pipe.expire(messages_key, self.ttl_secs)
        pipe.expire(meta_key, self.ttl_secs)
        pipe.expire(self._size_key(call_id), self.ttl_secs)

    async def _retry(self, key: str, change: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``change`` in a transaction watching ``key`` until no other writer interferes."""
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    result = await change(pipe)
                    if pipe.explicit_transaction:  # the change queued writes
                        await pipe.execute()
                    return result
                except WatchError:
                    continue

    async def close(self) -> None:
        await self._redis.aclose()
