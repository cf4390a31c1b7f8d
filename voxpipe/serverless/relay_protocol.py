"""Twilio ConversationRelay messages, parsed and built without pipecat (for the Lambda handlers).

In (Twilio -> app): ``setup``, ``prompt``, ``interrupt``, ``dtmf``, ``error``. Out (app -> Twilio): ``text``
tokens ending with ``last: true``, and ``end`` (with ``handoffData`` for the ``<Connect action>`` callback).
Malformed input is handled here, in one place: ``parse`` never raises, it returns ``Unknown``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Setup:
    """The first message of a session: who is calling, and the ``<Parameter>``s of the TwiML."""

    session_id: str
    call_sid: str
    from_: str = ""
    to: str = ""
    direction: str = ""
    custom_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """What the caller said (``last`` is false for the partial prompts of ``partialPrompts``)."""

    text: str
    lang: str = ""
    last: bool = True


@dataclass(frozen=True)
class Interrupt:
    """The caller spoke over the reply; ``heard`` is what Twilio had spoken of it until then."""

    heard: str
    duration_ms: int = 0


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True)
class RelayError:
    """Twilio reports a problem (an invalid message we sent, a TTS failure...)."""

    description: str


@dataclass(frozen=True)
class Unknown:
    """Anything else: not JSON, no known ``type``, or missing fields."""

    raw: str
    reason: str


Inbound = Setup | Prompt | Interrupt | Dtmf | RelayError | Unknown


def parse(raw: str | bytes) -> Inbound:
    """One inbound ConversationRelay message."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        message = json.loads(text)
    except ValueError:
        return Unknown(text, "not JSON")
    if not isinstance(message, dict):
        return Unknown(text, "not a JSON object")
    kind = message.get("type")
    try:
        if kind == "setup":
            return Setup(
                session_id=str(message.get("sessionId", "")),
                call_sid=str(message["callSid"]),
                from_=str(message.get("from", "")),
                to=str(message.get("to", "")),
                direction=str(message.get("direction", "")),
                custom_parameters=dict(message.get("customParameters") or {}),
            )
        if kind == "prompt":
            return Prompt(str(message["voicePrompt"]), str(message.get("lang", "")), bool(message.get("last", True)))
        if kind == "interrupt":
            return Interrupt(
                str(message.get("utteranceUntilInterrupt", "")), int(message.get("durationUntilInterruptMs", 0))
            )
        if kind == "dtmf":
            return Dtmf(str(message["digit"]))
        if kind == "error":
            return RelayError(str(message.get("description", "")))
    except (KeyError, TypeError, ValueError) as exc:
        return Unknown(text, f"malformed {kind} message: {exc!r}")
    return Unknown(text, f"unknown message type {kind!r}")


def text_token(token: str, last: bool) -> dict[str, Any]:
    """A ``text`` message: Twilio speaks ``token``; ``last`` ends the reply."""
    return {"type": "text", "token": token, "last": last}


def end_session(handoff: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``end`` message: Twilio ends the session and calls the ``<Connect action>`` URL with ``HandoffData``."""
    message: dict[str, Any] = {"type": "end"}
    if handoff is not None:
        message["handoffData"] = json.dumps(handoff, separators=(",", ":"))
    return message
