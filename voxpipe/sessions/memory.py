"""An in-process ``SessionStore``: for tests and single-process servers that need no persistence.

Bounded: at most ``max_sessions`` sessions (the least recently written is evicted first), expired ones swept
on every write, and at most ``max_history_bytes`` per conversation (``HistoryTooLarge`` beyond).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxpipe.sessions.base import MAX_HISTORY_BYTES, Conflict, HistoryTooLarge, Message, Session, encoded_size

#: The default number of sessions the memory store keeps (``sessions.max_sessions``).
MAX_SESSIONS = 10_000


@dataclass
class _Entry:
    updated_at: float
    messages: list[Message] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes of the stored messages


class MemorySessionStore:
    """Sessions in an ordered dict. Each method runs without awaiting, so it is atomic on the event loop."""

    def __init__(
        self,
        ttl_secs: float = 86400,
        *,
        max_sessions: int = MAX_SESSIONS,
        max_history_bytes: int = MAX_HISTORY_BYTES,
        clock: Callable[[], float] = time.time,
    ):
        self.ttl_secs = ttl_secs
        self.max_sessions = max_sessions
        self.max_history_bytes = max_history_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently written first

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, call_id: str) -> _Entry | None:
        entry = self._entries.get(call_id)
        if entry is not None and self._clock() - entry.updated_at > self.ttl_secs:
            del self._entries[call_id]
            return None
        return entry

    def _touch(self, call_id: str) -> _Entry:
        now = self._clock()
        entry = self._live(call_id) or self._entries.setdefault(call_id, _Entry(now))
        entry.updated_at = now
        self._entries.move_to_end(call_id)
        while self._entries:  # sweep: expired sessions are the least recently written ones
            oldest = next(iter(self._entries.values()))
            if now - oldest.updated_at <= self.ttl_secs and len(self._entries) <= self.max_sessions:
                break
            self._entries.popitem(last=False)
        return entry

    async def get(self, call_id: str) -> Session | None:
        entry = self._live(call_id)
        if entry is None:
            return None
        return Session(call_id, copy.deepcopy(entry.messages), copy.deepcopy(entry.metadata))

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        entry = self._live(call_id)
        actual = len(entry.messages) if entry else 0
        if actual != expected:
            raise Conflict(call_id, expected, actual)
        size = (entry.size if entry else 0) + encoded_size(messages)
        if size > self.max_history_bytes:
            raise HistoryTooLarge(call_id, size, self.max_history_bytes)
        entry = self._touch(call_id)
        entry.messages.extend(copy.deepcopy(list(messages)))
        entry.size = size
        return len(entry.messages)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        self._touch(call_id).metadata.update(copy.deepcopy(dict(changes)))

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        entry = self._live(call_id)
        for message in reversed(entry.messages if entry else []):
            if entry is not None and message.get("role") == "assistant":
                message["content"] = content
                entry.size = encoded_size(entry.messages)
                self._touch(call_id)
                return True
        return False

    async def close(self) -> None:
        self._entries.clear()
