"""An in-process ``SessionStore``: for tests and single-process servers that need no persistence."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxpipe.sessions.base import Conflict, Message, Session


@dataclass
class _Entry:
    messages: list[Message] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    updated_at: float = field(default_factory=time.time)


class MemorySessionStore:
    """Sessions in a dict. Each method runs without awaiting, so it is atomic on the event loop."""

    def __init__(self, ttl_secs: float = 86400):
        self.ttl_secs = ttl_secs
        self._entries: dict[str, _Entry] = {}

    def _live(self, call_id: str) -> _Entry | None:
        entry = self._entries.get(call_id)
        if entry is not None and time.time() - entry.updated_at > self.ttl_secs:
            del self._entries[call_id]
            return None
        return entry

    def _touch(self, call_id: str) -> _Entry:
        entry = self._live(call_id) or self._entries.setdefault(call_id, _Entry())
        entry.updated_at = time.time()
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
        entry = self._touch(call_id)
        entry.messages.extend(copy.deepcopy(list(messages)))
        return len(entry.messages)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        self._touch(call_id).metadata.update(copy.deepcopy(dict(changes)))

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        entry = self._live(call_id)
        for message in reversed(entry.messages if entry else []):
            if message.get("role") == "assistant":
                message["content"] = content
                self._touch(call_id)
                return True
        return False

    async def close(self) -> None:
        self._entries.clear()
