"""A session store that masks what it writes: the stored conversation never holds a call's personal data.

The live conversation (what the model sees) is untouched unless ``before_llm`` is set; only the copy that
outlives the call, in SQLite, Redis or DynamoDB, is redacted. Wrap the deployment's store per call, since each
call's redactor carries that call's secrets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voxpipe.redaction import Redactor
from voxpipe.sessions.base import Message, Session, SessionStore


class RedactingSessionStore:
    """``SessionStore`` that redacts messages, metadata and truncations before the wrapped store sees them."""

    def __init__(self, store: SessionStore, redactor: Redactor):
        self.store = store
        self.redactor = redactor

    async def get(self, call_id: str) -> Session | None:
        return await self.store.get(call_id)

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        return await self.store.append(call_id, self.redactor.messages(messages), expected=expected)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        await self.store.update_metadata(call_id, self.redactor.value(dict(changes)))

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        return await self.store.truncate_last_assistant(call_id, self.redactor.text(content))

    async def close(self) -> None:
        await self.store.close()
