"""The Lambda relay's bookkeeping of turns in a stored conversation: live replies, keypad entries, what was heard.

Pure functions on ``voxpipe.aws.conversations.Conversation``, apart from ``relay.py`` (which does the talking)
to keep each module small; the relay's docstring explains why turns and keypad entries live in the conversation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
#: What the call's record is made of (``voxpipe.records.relay``), times in epoch ms: when the call started (its
#: first ``setup``), last connected (its latest ``setup``) and last ended (``$disconnect``), and each LLM
#: request's tokens.
STARTED_MS, CONNECTED_MS, ENDED_MS, USAGE = "started_ms", "connected_ms", "ended_ms", "usage"
BOOKKEEPING = (KEYPAD_ENTRY, LIVE_SINCE, SILENCE_MARKER, SENSITIVE_DIGESTS, RECORDING)
BOOKKEEPING += (STARTED_MS, CONNECTED_MS, ENDED_MS, USAGE)
#: The conversation metadata that lists the call's events (fillers, re-prompts, the silence hang-up), as the
#: server's CallRecord lists them, each with when it happened (``at_ms``).
EVENTS = "events"
#: The conversation metadata that lists the call's reply turns: what the caller said and heard, and when the
#: reply's first and last text were sent after the prompt arrived (masked by ``redact:`` like the messages).
TURNS = "turns"
#: A turn's texts are kept cut to this many characters: the messages hold them whole, and the conversation's
#: one DynamoDB item (400 KB) is for the conversation, not for a second copy of it.
TURN_TEXT_CHARS = 160
#: Why the call ended through ``on_failure`` (its ``say``, ``transfer_to`` and ``reason``).
FAILURE = "failure"
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


def note_events(conversation: Conversation, events: list[dict[str, object]], at_ms: int) -> None:
    """Keep ``events`` (each with its ``kind``, and its ``at_ms`` if not ``at_ms``) in the conversation's metadata."""
    if events:
        conversation.metadata.setdefault(EVENTS, []).extend({"at_ms": at_ms, **event} for event in events)


@dataclass(frozen=True)
class TurnMeasures:
    """One reply turn as the call's record keeps it (times in epoch ms)."""

    heard: str  # what the caller said (masked by ``redact:`` when stored, as the messages are)
    reply: str  # what of the reply the caller heard
    prompted_ms: int  # when API Gateway received the prompt
    first_text_ms: int | None  # when the reply's first text was sent (None: nothing was)
    last_text_ms: int | None  # when its last text was sent (None: it was cut or failed)
    usage: list[dict[str, object]]  # each LLM request's tokens: provider, model, input, output, cached_input


def note_turn(conversation: Conversation, turn: TurnMeasures) -> None:
    """Keep a reply turn's measures, and its requests' tokens, in the conversation's metadata."""
    conversation.metadata.setdefault(TURNS, []).append(
        {
            "heard": _cut(turn.heard),
            "reply": _cut(turn.reply),
            "prompted_ms": turn.prompted_ms,
            "first_text_ms": turn.first_text_ms,
            "last_text_ms": turn.last_text_ms,
        }
    )
    if turn.usage:
        conversation.metadata.setdefault(USAGE, []).extend(turn.usage)


def _cut(text: str) -> str:
    return text if len(text) <= TURN_TEXT_CHARS else text[: TURN_TEXT_CHARS - 1] + "…"
