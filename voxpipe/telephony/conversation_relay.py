"""Twilio ConversationRelay: its messages, how prompts become the caller's turn, and how a session is handed off.

Twilio recognises and speaks; the app streams text. In (Twilio -> app): ``setup``, ``prompt``, ``interrupt``,
``dtmf``, ``error``. Out (app -> Twilio): ``text`` tokens ending with ``last: true``, and ``end`` (with
``handoffData`` for the ``<Connect action>`` callback, which dials a transfer's target or hangs up).

Malformed input is handled here, in one place: ``parse`` never raises, it returns ``Unknown``. The rules both
adapters follow (the server's ``voxpipe.transports.conversation_relay`` and the Lambda's
``voxpipe.serverless.relay``) live here too: ``caller_turn`` (partial prompts are previews of the final one),
``handoff`` (what ``end`` carries after a tool's ``end_call`` or ``transfer``), ``failure_handoff`` (after the
deployment's ``on_failure``: the caller is told with one last ``text``, then ``end``) and ``handoff_target``.
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
    """One inbound ConversationRelay message, from its text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        message = json.loads(text)
    except ValueError:
        return Unknown(text, "not JSON")
    if not isinstance(message, dict):
        return Unknown(text, "not a JSON object")
    return parse_message(message, text)


def parse_message(message: dict[str, Any], text: str | None = None) -> Inbound:
    """One inbound message already read as a JSON object (``text``: its raw form, for log lines)."""
    kind = message.get("type")
    raw = text if text is not None else json.dumps(message)[:200]
    try:
        if kind == "setup":
            return Setup(
                session_id=str(message.get("sessionId") or ""),
                call_sid=str(message["callSid"]),
                from_=str(message.get("from") or ""),
                to=str(message.get("to") or ""),
                direction=str(message.get("direction") or ""),
                custom_parameters=dict(message.get("customParameters") or {}),
            )
        if kind == "prompt":
            return Prompt(str(message["voicePrompt"]), str(message.get("lang", "")), bool(message.get("last", True)))
        if kind == "interrupt":
            return Interrupt(
                str(message.get("utteranceUntilInterrupt") or ""), int(message.get("durationUntilInterruptMs") or 0)
            )
        if kind == "dtmf":
            return Dtmf(str(message["digit"]))
        if kind == "error":
            return RelayError(str(message.get("description", "")))
    except (KeyError, TypeError, ValueError) as exc:
        return Unknown(raw, f"malformed {kind} message: {exc!r}")
    return Unknown(raw, f"unknown message type {kind!r}")


def caller_turn(prompt: Prompt) -> str | None:
    """The caller's turn a prompt completes: ``None`` for a partial prompt, or an empty one.

    With ``partialPrompts`` Twilio sends the utterance so far with ``last: false`` and then all of it with
    ``last: true``: partial prompts only preview the final one, which is the turn.
    """
    return (prompt.text.strip() or None) if prompt.last else None


def handoff(effect: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The ``handoffData`` of a session a tool ended: ``reason`` (``end_call``/``transfer``), a transfer's ``to``,
    and the model's stated reason as ``detail``."""
    data: dict[str, Any] = {"reason": effect}
    if effect == "transfer":
        data["to"] = str((arguments.get("result") or {}).get("to") or "")
        if isinstance(arguments.get("warm"), dict):  # summary, ring_timeout_secs, hold_audio, unanswered
            data |= {"mode": "warm", **arguments["warm"]}
    if arguments.get("reason"):
        data["detail"] = str(arguments["reason"])
    return data


def failure_handoff(transfer_to: str | None, error: str) -> dict[str, Any]:
    """The ``handoffData`` of a session that could not go on (the deployment's ``on_failure``): ``reason``
    ``failure``, the transfer target ``to`` if one is configured, and what broke as ``detail``."""
    data: dict[str, Any] = {"reason": "failure", "detail": error}
    if transfer_to:
        data["to"] = transfer_to
    return data


def handoff_target(handoff_data: str | None) -> str | None:
    """Where ``<Connect action>`` dials: the ``to`` of a ``transfer`` or ``failure`` handoff, if any (else the
    call hangs up)."""
    try:
        data = json.loads(handoff_data) if handoff_data else {}
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("reason") in ("transfer", "failure") and data.get("to"):
        return str(data["to"])
    return None


def warm_handoff(handoff_data: str | None) -> dict[str, Any] | None:
    """The handoff data of a warm ``transfer`` (with its ``to``), if that is what ended the session."""
    try:
        data = json.loads(handoff_data) if handoff_data else {}
    except ValueError:
        return None
    warm = isinstance(data, dict) and data.get("reason") == "transfer" and data.get("mode") == "warm"
    return data if warm and data.get("to") and data.get("ring_timeout_secs") else None


def text_token(token: str, last: bool) -> dict[str, Any]:
    """A ``text`` message: Twilio speaks ``token``; ``last`` ends the reply."""
    return {"type": "text", "token": token, "last": last}


def end_session(handoff: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``end`` message: Twilio ends the session and calls the ``<Connect action>`` URL with ``HandoffData``."""
    message: dict[str, Any] = {"type": "end"}
    if handoff is not None:
        message["handoffData"] = json.dumps(handoff, separators=(",", ":"))
    return message
