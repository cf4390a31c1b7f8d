"""The ``SessionStore`` interface: each call's conversation and metadata, keyed by call id.

A call that reconnects with the same id (Twilio ``callSid``, ConversationRelay ``sessionId``, a browser
session) gets its stored messages back and resumes its context. Messages are only ever appended, except
that the last assistant message may be cut to what the caller actually heard.

Writes are conditional, as DynamoDB's ``attribute_not_exists`` or Redis ``WATCH`` would make them: an
``append`` names how many messages the writer believes are stored, and fails with ``Conflict`` if another
writer got there first. ``append_turns`` then re-appends at the new end, so concurrent writers (an old
connection flushing its last turn while the reconnected one speaks) never lose a turn.

This module and the backends stay free of pipecat, so a backend is a small, self-contained file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from voxpipe.retrying import succeeds_within

Message = dict[str, Any]
log = logging.getLogger("voxpipe.sessions")

#: The default cap on one conversation's stored size, in bytes of JSON (``sessions.max_history_bytes``).
MAX_HISTORY_BYTES = 1024 * 1024

#: At the end of a call, the waits between attempts to store what a failing store did not take.
FLUSH_RETRY_DELAYS_SECS = (0.5, 2.0)

#: pipecat writes this into a tool message while the tool runs, and replaces it in place with the result.
TOOL_PLACEHOLDER = "IN_PROGRESS"


class StoreUnavailable(Exception):
    """The session store (or the store of spent call tokens beside it) is out of reach as a call starts: the
    call cannot be opened safely, and its transport tells the caller the deployment's ``on_failure`` message."""


class Conflict(Exception):
    """A conditional append found a different number of stored messages than the writer expected."""

    def __init__(self, call_id: str, expected: int, actual: int):
        super().__init__(f"session {call_id}: expected {expected} stored messages, found {actual}")
        self.expected = expected
        self.actual = actual


class HistoryTooLarge(Exception):
    """Storing more would take a conversation past the store's cap: nothing was written, nothing was cut.

    The cap bounds what one caller can make the server keep. History is never shortened to fit: what was
    said stays whole or the write is refused, loudly.
    """

    def __init__(self, call_id: str, size: int, limit: int):
        super().__init__(
            f"session {call_id}: storing would make the conversation {size} bytes, over the {limit}-byte cap "
            "(sessions.max_history_bytes); nothing was written"
        )
        self.size = size
        self.limit = limit


def encoded_size(messages: Sequence[Message]) -> int:
    """Bytes ``messages`` take as stored (UTF-8 JSON, one document each)."""
    return sum(len(json.dumps(m, ensure_ascii=False).encode("utf-8")) for m in messages)


@dataclass(frozen=True)
class Session:
    """One call's stored conversation: its messages in order and free-form metadata (caller, transport...)."""

    call_id: str
    messages: list[Message] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """The number of stored messages: what the next conditional ``append`` must name."""
        return len(self.messages)


@runtime_checkable
class SessionStore(Protocol):
    """Where conversations live. Every method is safe to call concurrently for the same call id."""

    async def get(self, call_id: str) -> Session | None:
        """The stored session, or ``None`` if there is none (or it expired)."""
        ...

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        """Append ``messages`` if exactly ``expected`` are stored (creating the session at 0).

        Returns the new number of stored messages; raises ``Conflict`` otherwise, or ``HistoryTooLarge`` when
        the conversation would grow past the store's cap, and writes nothing.
        """
        ...

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into the session's metadata (creating the session if needed)."""
        ...

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        """Replace the content of the last assistant message; ``False`` if there is none."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...


async def append_turns(store: SessionStore, call_id: str, messages: Sequence[Message], expected: int) -> int:
    """Append ``messages`` after the ``expected`` stored ones, or after whatever another writer added since.

    Returns the new number of stored messages.
    """
    while True:
        try:
            return await store.append(call_id, messages, expected=expected)
        except Conflict as conflict:
            expected = conflict.actual


def _answered_tool_calls(messages: Sequence[Any]) -> set[str]:
    """Ids of the tool calls whose result is in ``messages`` (not pipecat's placeholder)."""
    return {
        m.get("tool_call_id")
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "tool" and m.get("content") != TOOL_PLACEHOLDER
    }


def _unanswered(message: Any, answered: set[str]) -> bool:
    """A tool message still waiting for its result, or an assistant's tool call without its every result."""
    if not isinstance(message, Mapping):
        return False
    if message.get("role") == "tool":
        return message.get("content") == TOOL_PLACEHOLDER or message.get("tool_call_id") not in answered
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    return bool(calls) and any(call.get("id") not in answered for call in calls)


def settled_length(messages: Sequence[Any]) -> int:
    """How many leading messages are final: up to the first tool call still waiting for its result.

    An assistant message that calls tools is final only once every call has its result: stored alone, it
    would make every later request of the conversation invalid (OpenAI and Bedrock reject a tool call
    without its result).
    """
    answered = _answered_tool_calls(messages)
    return next((i for i, m in enumerate(messages) if _unanswered(m, answered)), len(messages))


def without_unanswered_tool_calls(messages: Sequence[Any]) -> list[Any]:
    """``messages`` less the tool calls that never got their result (a hang-up while a tool ran).

    An assistant message that also said something keeps its words and loses its tool calls.
    """
    answered = _answered_tool_calls(messages)
    dropped = {
        call.get("id")
        for m in messages
        if _unanswered(m, answered) and m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    }
    out = []
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "tool" and message.get("tool_call_id") in dropped:
            continue  # the result of one call of a message whose other calls never answered
        if not _unanswered(message, answered):
            out.append(message)
        elif message.get("role") == "assistant" and message.get("content"):
            out.append({k: v for k, v in message.items() if k != "tool_calls"})
    return out


class SessionRecorder:
    """Keeps one call's stored conversation in step with its live message list.

    ``messages`` returns the live list (pipecat's ``LLMContext.messages``), which starts with the
    ``session``'s stored messages. Only plain dict messages are stored; provider-specific objects are skipped.

    A store that fails (Redis or DynamoDB out of reach, a locked SQLite file) never touches the call: the
    messages not written stay pending and go with the next write, and ``flush`` at the end of the call tries
    again (``FLUSH_RETRY_DELAYS_SECS``) before it gives up, saying how many messages were not stored (the
    call's record keeps its turns). ``unstored`` counts them.
    """

    def __init__(self, store: SessionStore, session: Session, messages: Callable[[], list[Any]]):
        self.store = store
        self.call_id = session.call_id
        self._messages = messages
        self._stored = session.version  # messages in the store
        self._synced = session.version  # live messages already written (the history comes first)
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self.refused: HistoryTooLarge | None = None  # set once the store refused a write as too large
        self.failing: Exception | None = None  # the store's error while it fails (logged once per outage)

    def request_sync(self) -> None:
        """Write new settled messages soon, without blocking the caller (a pipeline observer)."""
        task = asyncio.get_running_loop().create_task(self.sync())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def sync(self) -> None:
        """Write every settled message not written yet."""
        async with self._lock:
            live = self._messages()
            settled = settled_length(live)
            new = [dict(m) for m in live[self._synced : settled] if isinstance(m, dict)]
            if new and not await self._append(new):
                return
            self._synced = max(self._synced, settled)

    @property
    def unstored(self) -> int:
        """Settled messages of the call not in the store (while it fails, or past a refusal)."""
        return max(0, settled_length(self._messages()) - self._synced)

    async def _append(self, messages: list[dict[str, Any]]) -> bool:
        """Store ``messages`` after those stored; ``False`` if the store refused them as too large, or failed.

        The call goes on with its whole context in memory; the store keeps every turn up to the refusal. After
        a failure the messages stay pending: the next write takes them too.
        """
        try:
            self._stored = await append_turns(self.store, self.call_id, messages, self._stored)
        except HistoryTooLarge as exc:
            if self.refused is None:
                log.error("%s; the call goes on, but a reconnect would resume without the later turns", exc)
            self.refused = exc
            return False
        except Exception as exc:  # the store is down or out of reach: whatever its backend raises
            if self.failing is None:
                log.warning(
                    "session %s: the store failed (%r); its messages wait for the next write", self.call_id, exc
                )
            self.failing = exc
            return False
        if self.failing is not None:
            log.info("session %s: the store is back; the messages that waited are stored", self.call_id)
            self.failing = None
        return True

    async def truncate_last_assistant(self, content: str) -> None:
        """Cut the conversation's final message to ``content`` (what the caller heard), live and stored.

        Only when that message is the assistant's text: if the caller barged in before the assistant said
        anything, the last message is the caller's (or a tool's) and there is nothing to cut.
        """
        async with self._lock:
            live = [m for m in self._messages() if isinstance(m, dict)]
            if not live or live[-1].get("role") != "assistant" or not isinstance(live[-1].get("content"), str):
                return
            live[-1]["content"] = content
            if self._synced >= len(self._messages()):
                try:
                    await self.store.truncate_last_assistant(self.call_id, content)
                except Exception as exc:  # the store is down: the stored reply stays whole (the live one is cut)
                    log.warning("session %s: the store failed to cut the last reply (%r)", self.call_id, exc)

    async def flush(self) -> None:
        """Wait for scheduled writes, then write what is left (call this when the call ends).

        What follows a tool call that never got its result is written too, without that call, so the
        conversation resumes valid and nothing the caller said is lost.
        """
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

        async def attempt() -> bool:  # (a refusal as too large is final: trying again cannot help)
            return await self._flush_once() or self.refused is not None

        if not await succeeds_within(attempt, FLUSH_RETRY_DELAYS_SECS):
            log.error(
                "session %s: %d messages of the conversation could not be stored (%r): a reconnect would "
                "resume without them (the call's record keeps its turns)",
                self.call_id,
                self.unstored,
                self.failing,
            )

    async def _flush_once(self) -> bool:
        """Write every message not written yet; ``False`` if the store refused or failed."""
        await self.sync()
        async with self._lock:
            if self.failing is not None:
                return False
            live = self._messages()
            rest = [dict(m) for m in without_unanswered_tool_calls(live[self._synced :]) if isinstance(m, dict)]
            if rest and not await self._append(rest):
                return False
            self._synced = len(live)
            return True
