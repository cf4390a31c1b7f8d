"""TwiML documents from plain values: what Twilio does with a call (connect a stream, speak, dial, hang up).

Each builder returns the whole ``<?xml ...?><Response>...</Response>`` text, in the form Twilio's own helper
library writes (attributes in sorted order, booleans as ``true``/``false``, empty elements as ``<X />``), so
the server and the Lambda handlers answer byte for byte the same. Attribute names are TwiML's own
(``welcomeGreeting``, ``dtmfDetection``...); an attribute whose value is ``None`` is left out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

Attributes = Mapping[str, str | bool | int | float | None]


@dataclass(frozen=True)
class Verb:
    """One TwiML element: its name, attributes, text and children."""

    name: str
    attributes: Attributes = field(default_factory=dict)
    text: str | None = None
    children: tuple[Verb, ...] = ()

    def element(self) -> ET.Element:
        attributes = {key: _value(value) for key, value in sorted(self.attributes.items()) if value is not None}
        node = ET.Element(self.name, attributes)
        node.text = self.text
        node.extend(child.element() for child in self.children)
        return node


def _value(value: str | bool | int | float) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def response(*verbs: Verb) -> str:
    """A ``<Response>`` of ``verbs``, as Twilio expects it."""
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(Verb("Response", children=verbs).element(), "unicode")


def say(text: str) -> Verb:
    return Verb("Say", text=text)


def hangup_verb() -> Verb:
    return Verb("Hangup")


def dial_verb(target: str) -> Verb:
    return Verb("Dial", text=target)


def _parameters(parameters: Mapping[str, str]) -> tuple[Verb, ...]:
    """``<Parameter name value/>``s: Twilio hands them back in ``start`` / ``setup``'s ``customParameters``."""
    return tuple(Verb("Parameter", {"name": name, "value": value}) for name, value in parameters.items())


def stream_call(url: str, action: str | None, parameters: Mapping[str, str]) -> str:
    """``<Connect action><Stream url><Parameter name value/>...</Stream></Connect>``: a Media Streams call."""
    stream = Verb("Stream", {"url": url}, children=_parameters(parameters))
    return response(Verb("Connect", {"action": action}, children=(stream,)))


def conversation_relay(
    url: str,
    action: str | None,
    attributes: Attributes,
    parameters: Mapping[str, str] | None = None,
    *,
    recording_status: str | None = None,
) -> str:
    """``<Connect action><ConversationRelay url ...><Parameter .../></ConversationRelay></Connect>``: Twilio
    speaks, voxpipe streams text. ``recording_status``: ``<Start><Recording channels="dual" .../></Start>`` first,
    so Twilio records the call (caller and Twilio's voice on two channels) in the account's own recordings, and
    posts to that URL once the recording is ready (``recordingStatusCallbackEvent="completed"``)."""
    relay = Verb("ConversationRelay", {**attributes, "url": url}, children=_parameters(parameters or {}))
    recording: tuple[Verb, ...] = ()
    if recording_status is not None:
        noun = Verb(
            "Recording",
            {
                "channels": "dual",
                "recordingStatusCallback": recording_status,
                "recordingStatusCallbackEvent": "completed",
            },
        )
        recording = (Verb("Start", children=(noun,)),)
    return response(*recording, Verb("Connect", {"action": action}, children=(relay,)))


def dial(target: str) -> str:
    """Hand the call to ``target`` (a phone number or SIP URI)."""
    return response(dial_verb(target))


def hangup() -> str:
    return response(hangup_verb())


def end_call(message: str | None = None, transfer_to: str | None = None) -> str:
    """How a call ends: say ``message`` (if any), then dial ``transfer_to`` or hang up."""
    verbs = [say(message)] if message else []
    verbs.append(dial_verb(transfer_to) if transfer_to else hangup_verb())
    return response(*verbs)


def hold(conference: str, wait_url: str | None) -> str:
    """A warm transfer's hold leg: the caller waits in ``conference`` (hearing ``wait_url``) until the person joins."""
    room = Verb(
        "Conference",
        {"waitUrl": wait_url, "startConferenceOnEnter": False, "endConferenceOnExit": True, "beep": False},
        text=conference,
    )
    return response(Verb("Dial", children=(room,)))


def briefed_join(summary: str | None, conference: str) -> str:
    """A warm transfer's dial leg, once the person answers: they hear the ``summary`` first, then join the caller."""
    room = Verb(
        "Conference", {"startConferenceOnEnter": True, "endConferenceOnExit": True, "beep": False}, text=conference
    )
    return response(*([say(summary)] if summary else []), Verb("Dial", children=(room,)))
