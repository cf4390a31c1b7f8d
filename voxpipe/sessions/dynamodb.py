"""``sessions: {store: dynamodb, table: NAME}``: conversations in DynamoDB, shared by every ``voxpipe serve`` process.

The rows are those of the serverless ConversationRelay (``voxpipe.aws.conversations``): one item per call, key
``call#<call id>``, TTL attribute ``expires_at`` (refreshed on every write; expired items are filtered on read
because DynamoDB deletes them lazily), and a ``version`` attribute that makes every write conditional. A call
can therefore move between ``voxpipe serve`` processes behind a load balancer, or between them and the Lambda
handlers, and its conversation follows it. The table needs only a string hash key ``pk`` (``voxpipe deploy
sam`` creates one; ``history.table_definition`` describes it).

botocore is synchronous: each operation runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from voxpipe.aws.conversations import MAX_ITEM_BYTES, Conversation, ConversationTable, ConversationTooLarge
from voxpipe.sessions.base import Conflict, HistoryTooLarge, Message, Session


class _Unchanged(Exception):
    """Raised inside a change to abort its write: there was nothing to change."""


class DynamoDBSessionStore:
    """A ``SessionStore`` on a DynamoDB table (``client``: a botocore DynamoDB client, default from the environment)."""

    def __init__(
        self, table: str, ttl_secs: float = 86400, *, client: Any = None, clock: Callable[[], float] = time.time
    ):
        if not table:
            raise ValueError("sessions.table is required with store: dynamodb")
        self._table = ConversationTable(table, int(ttl_secs), client=client, clock=clock)

    async def get(self, call_id: str) -> Session | None:
        conversation = await asyncio.to_thread(self._table.get, call_id)
        return None if conversation is None else Session(call_id, conversation.messages, conversation.metadata)

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        def add(conversation: Conversation) -> int:
            if len(conversation.messages) != expected:
                raise Conflict(call_id, expected, len(conversation.messages))
            conversation.messages.extend(dict(m) for m in messages)
            return len(conversation.messages)

        try:
            _, count = await asyncio.to_thread(self._table.mutate, call_id, add)
        except ConversationTooLarge as refused:  # the stores' one error for it: the live call keeps its context
            raise HistoryTooLarge(call_id, refused.size, MAX_ITEM_BYTES) from None
        return count

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._table.mutate, call_id, lambda c: c.metadata.update(changes))

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        def cut(conversation: Conversation) -> None:
            for message in reversed(conversation.messages):
                if message.get("role") == "assistant":
                    message["content"] = content
                    return
            raise _Unchanged

        try:
            await asyncio.to_thread(self._table.mutate, call_id, cut)
        except _Unchanged:
            return False
        return True

    async def close(self) -> None:
        """Nothing to release: botocore pools its connections per client."""
