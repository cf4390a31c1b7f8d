"""A warm transfer on Twilio, as plain values: the dial leg, its status, and how the caller comes back.

The caller waits in a conference (``twiml.hold``) while a new call (the *dial leg*) rings the person; once
they answer they hear the call's summary, then join the caller (``twiml.briefed_join``). The dial leg's status
callback says whether anyone answered; if nobody did, the caller's call is given new TwiML that reconnects it
to the agent, with ``<Parameter>``s saying what happened (``returned``), and the conversation resumes.

Used by the server (``voxpipe.transports.twilio_account``) and by the Lambda TwiML handler
(``voxpipe.serverless.transfer``), so both ring, brief and bring back the same way (docs/calls.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from voxpipe.telephony import twiml

#: Dial-leg statuses that mean nobody took the call.
UNANSWERED = ("no-answer", "busy", "failed", "canceled")
#: The statuses that end a pending transfer: answered, or one of ``UNANSWERED``.
FINAL = ("in-progress", "answered", *UNANSWERED)
# The <Parameter>s of the stream (or relay session) that brings a caller back from an unanswered warm transfer.
RETURN_STATUS, RETURN_RING_SECS, RETURN_SAY = "voxpipe_transfer", "voxpipe_ring_secs", "voxpipe_say"
RESUME_SESSION = "voxpipe_session"  # ConversationRelay: the session (conversation) the caller comes back to
BACK_TO_STREAM = "stream"  # a status query's ``back``: the caller returns to a media stream (the audio bridge)

#: What the deployment's LLM is asked for the person a warm transfer rings.
SUMMARY_REQUEST = (
    "Summarise this call for the colleague who is about to take it over, in at most two short sentences: "
    "who is calling, what they want, and what has been done so far. Plain words; it will be read out."
)


def conference(call_id: str) -> str:
    """The conference the caller waits in (one per call)."""
    return f"voxpipe-{call_id}"


def dial_leg(call_id: str, to: str, caller_id: str, warm: dict[str, Any], status_url: str) -> dict[str, Any]:
    """The arguments of Twilio's ``calls.create`` for the dial leg: rings ``to`` for ``ring_timeout_secs``,
    says the summary once answered, and reports to ``status_url``."""
    return {
        "to": to,
        "from_": caller_id,
        "twiml": twiml.briefed_join(warm.get("summary"), conference(call_id)),
        "timeout": round(warm["ring_timeout_secs"]),
        "status_callback": status_url,
        "status_callback_event": ["answered", "completed"],
    }


def returned(status: str, ring_secs: float, say: str) -> dict[str, str]:
    """The ``<Parameter>``s that tell the agent a caller is back: the dial leg's status, its ring time, what to say."""
    return {RETURN_STATUS: status, RETURN_RING_SECS: f"{ring_secs:g}", RETURN_SAY: say}


def status_query(call_id: str, say: str, stream_parameters: Mapping[str, str] | None = None) -> str:
    """The query of a dial leg's status callback served by the stack's TwiML Lambda, which keeps nothing between
    requests: the call, when it started ringing, the ``unanswered`` line, and for a caller who comes back to a
    media stream (the audio bridge) that stream's ``<Parameter>``s. Twilio signs the whole URL, query included."""
    query = {"call": call_id, "since": str(int(time.time() * 1000)), "say": say}
    if stream_parameters is not None:
        query |= {"back": BACK_TO_STREAM, "keep": json.dumps(dict(stream_parameters), separators=(",", ":"))}
    return urlencode(query)


def kept_parameters(query: Mapping[str, str]) -> dict[str, str] | None:
    """The stream parameters a ``status_query`` carries; ``None`` if the caller comes back to ConversationRelay."""
    if query.get("back") != BACK_TO_STREAM:
        return None
    try:
        kept = json.loads(query.get("keep") or "{}")
    except ValueError:
        kept = None
    return {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}
