"""The Lambda relay's bookkeeping of turns in a stored conversation: live replies, keypad entries, what was heard.

Pure functions on ``voxpipe.aws.conversations.Conversation``, apart from ``relay.py`` (which does the talking)
to keep each module small; the relay's docstring explains why turns and keypad entries live in the conversation.
"""

from __future__ import annotations

import logging

from voxpipe.aws.conversations import Conversation, Message
from voxpipe.telephony import keypad

logger = logging.getLogger(__name__)

#: The conversation metadata that holds a keypad entry being typed: its keys as [received ms, turn id, digit].
KEYPAD_ENTRY = "keypad_entry"
#: The conversation metadata that holds when each live reply turn started (ms), so a turn whose invocation
#: died (a Lambda timeout: ``close_turn`` never ran) is forgotten instead of cutting every later reply.
LIVE_SINCE = "live_since"
#: The conversation metadata of the armed silence check: ``{"check": id, "count": re-prompts said}`` (``silence.py``).
SILENCE_MARKER = "silence"
#: Metadata the relay computes with (ids, times, keys being typed): never masked, or it would stop working.
#: The keys of an entry being typed are there in clear until the entry ends (seconds), then stored masked.
SENSITIVE_DIGESTS = "sensitive_digests"  # keyed digests of the call's sensitive digits (``redacting.py``)
RECORDING = "recording"  # Twilio's recording of the call: its URL, sid... (``recordings.py``)
BOOKKEEPING = (KEYPAD_ENTRY, LIVE_SINCE, SILENCE_MARKER, SENSITIVE_DIGESTS, RECORDING)
#: The conversation metadata that lists the call's events (fillers, re-prompts, the silence hang-up), as the
#: server's CallRecord lists them.
EVENTS = "events"
#: No reply invocation runs longer than Lambda's longest timeout (15 minutes).
LIVE_TURN_MAX_MS = 15 * 60 * 1000


def forget_stale_turns(conversation: Conversation, now_ms: int) -> None:
    """Drop live turns older than any invocation can run (or with no start recorded): their invocation died."""
    since = conversation.metadata.setdefault(LIVE_SINCE, {})
    for turn in list(conversation.live):
        if now_ms - since.get(turn, 0) > LIVE_TURN_MAX_MS:
            logger.warning(
                "reply turn %s of call %s never closed (its invocation died); forgotten", turn, conversation.call_id
            )
            conversation.live.pop(turn)
    for turn in list(since):
        if turn not in conversation.live:
            since.pop(turn)


def store_pending_entry(conversation: Conversation) -> None:
    """Move the keypad entry being typed, if any, into the conversation (its keys' invocations then find it
    gone and do not answer it)."""
    keys = conversation.metadata.pop(KEYPAD_ENTRY, None) or []
    if keys:
        conversation.messages.append(keypad.entry_message("".join(digit for _, _, digit in keys)))


def said(messages: list[Message]) -> str:
    """The words of a reply's messages."""
    return " ".join(m["content"] for m in messages if m["role"] == "assistant" and m.get("content"))


def heard_messages(messages: list[Message], heard: str | None) -> list[Message]:
    """The reply's messages as the caller heard them: all of it (``None``), or its spoken text cut to ``heard``.

    Tool calls and results are kept (the tools ran); the words are replaced by one final assistant turn
    holding what was heard, and turns left with nothing are dropped.
    """
    if heard is None:
        kept = messages
    else:
        kept = [{**m, "content": ""} if m["role"] == "assistant" else m for m in messages]
        kept.append({"role": "assistant", "content": heard})
    return [m for m in kept if m["role"] != "assistant" or m.get("content") or m.get("tool_calls")]


def note_events(conversation: Conversation, events: list[dict[str, object]]) -> None:
    """Keep ``events`` (each with its ``kind``) in the conversation's metadata."""
    if events:
        conversation.metadata.setdefault(EVENTS, []).extend(events)
