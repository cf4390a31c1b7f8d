"""An in-process ``SessionStore``: for tests and single-process servers that need no persistence.

Bounded: at most ``max_history_bytes`` per conversation (``HistoryTooLarge`` beyond), and at most
``max_sessions`` sessions and ``max_total_bytes`` of messages in all (the least recently written session is
evicted first); expired sessions are swept on every write.
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
#: The default bound on all stored messages together: what one process may spend on conversations.
MAX_TOTAL_BYTES = 256 * 1024 * 1024


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
        max_total_bytes: int = MAX_TOTAL_BYTES,
        clock: Callable[[], float] = time.time,
    ):
        self.ttl_secs = ttl_secs
        self.max_sessions = max_sessions
        self.max_history_bytes = max_history_bytes
        self.max_total_bytes = max_total_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently written first
        self._total = 0  # bytes of all stored messages

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stored_bytes(self) -> int:
        """Bytes of all stored messages (what ``max_total_bytes`` bounds)."""
        return self._total

    def _live(self, call_id: str) -> _Entry | None:
        entry = self._entries.get(call_id)
        if entry is not None and self._clock() - entry.updated_at > self.ttl_secs:
            self._drop(call_id)
            return None
        return entry

    def _drop(self, call_id: str) -> None:
        self._total -= self._entries.pop(call_id).size

    def _touch(self, call_id: str) -> _Entry:
        now = self._clock()
        entry = self._live(call_id) or self._entries.setdefault(call_id, _Entry(now))
        entry.updated_at = now
        self._entries.move_to_end(call_id)
        return entry

    def _evict(self) -> None:
        """Sweep expired sessions (the least recently written ones) and evict while over a bound.

        The session written last (the one at the end) is never evicted.
        """
        now = self._clock()
        while len(self._entries) > 1:
            oldest_id, oldest = next(iter(self._entries.items()))
            over = len(self._entries) > self.max_sessions or self._total > self.max_total_bytes
            if now - oldest.updated_at <= self.ttl_secs and not over:
                break
            self._drop(oldest_id)

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
        self._total += size - entry.size
        entry.size = size
        self._evict()
        return len(entry.messages)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        self._touch(call_id).metadata.update(copy.deepcopy(dict(changes)))
        self._evict()

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        entry = self._live(call_id)
        for message in reversed(entry.messages if entry else []):
            if entry is not None and message.get("role") == "assistant":
                message["content"] = content
                size = encoded_size(entry.messages)
                self._total += size - entry.size
                entry.size = size
                self._touch(call_id)
                return True
        return False

    async def close(self) -> None:
        self._entries.clear()
        self._total = 0
