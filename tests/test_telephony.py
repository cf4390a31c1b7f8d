"""The pure protocol modules (``voxpipe.telephony``), without sockets, pipecat or a web framework."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from twilio.twiml.voice_response import Connect, Start, Stream, VoiceResponse

from voxpipe.telephony import conversation_relay, keypad, keypad_entry, twiml
from voxpipe.telephony.media_streams import MediaStream, StreamStart


def test_twiml_is_what_twilios_library_writes() -> None:
    expected = VoiceResponse()
    connect = Connect(action="https://a.example/x?y=1&z=2")
    stream = Stream(url="wss://a.example/media")
    stream.parameter(name="from", value='+1 <"&>')
    connect.append(stream)
    expected.append(connect)
    assert twiml.stream_call("wss://a.example/media", "https://a.example/x?y=1&z=2", {"from": '+1 <"&>'}) == str(
        expected
    )
    expected = VoiceResponse()
    connect = Connect(action="https://a.example/done")
    connect.conversation_relay(url="wss://r", welcome_greeting="Hi & bye", interruptible=True, dtmf_detection=False)
    expected.append(connect)
    attributes = {"welcomeGreeting": "Hi & bye", "interruptible": True, "dtmfDetection": False, "voice": None}
    assert twiml.conversation_relay("wss://r", "https://a.example/done", attributes) == str(expected)
    expected = VoiceResponse()
    start = Start()
    start.recording(
        channels="dual",
        recording_status_callback="https://a.example/recorded?x=1&y=2",
        recording_status_callback_event="completed",
    )
    expected.append(start)
    connect = Connect(action="https://a.example/done")
    connect.conversation_relay(url="wss://r")
    expected.append(connect)
    recorded = twiml.conversation_relay(
        "wss://r", "https://a.example/done", {}, recording_status="https://a.example/recorded?x=1&y=2"
    )
    assert recorded == str(expected)
    expected = VoiceResponse()
    expected.say("Sorry, goodbye.")
    expected.dial("+15550100")
    assert twiml.end_call("Sorry, goodbye.", transfer_to="+15550100") == str(expected)
    expected = VoiceResponse()
    expected.hangup()
    assert twiml.hangup() == str(expected)


def test_relay_rules() -> None:
    assert conversation_relay.caller_turn(conversation_relay.Prompt("what are", last=False)) is None
    assert conversation_relay.caller_turn(conversation_relay.Prompt(" what are your hours ")) == "what are your hours"
    handoff = conversation_relay.handoff("transfer", {"reason": "asked", "result": {"to": "+1555"}})
    assert handoff == {"reason": "transfer", "to": "+1555", "detail": "asked"}
    assert conversation_relay.handoff_target(json.dumps(handoff)) == "+1555"
    assert conversation_relay.handoff_target(json.dumps({"reason": "end_call"})) is None
    assert conversation_relay.handoff_target("{not json") is None
    assert isinstance(conversation_relay.parse('{"type":"setup"}'), conversation_relay.Unknown)  # no callSid


class Recorder:
    """A ``StreamHandler`` that writes down what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, Any]] = []

    async def started(self, start: StreamStart) -> None:
        self.told.append(("started", start.call_id))

    async def audio(self, payload: bytes, arrived_at: float) -> None:
        self.told.append(("audio", payload))

    async def mark_returned(self, name: str, returned_at: float) -> None:
        self.told.append(("mark", name))

    async def keypad_entry(self, message: dict[str, Any]) -> None:
        self.told.append(("keypad", message["content"]))

    async def stopped(self) -> None:
        self.told.append(("stopped", None))


async def test_media_stream_state_machine() -> None:
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> bool:
        sent.append(event)
        return True

    handler = Recorder()
    stream = MediaStream(send, handler)
    start = {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "customParameters": {"from": "+1"}}}
    await stream.receive({"event": "media", "media": {"payload": "AAAA"}})  # before start: skipped
    await stream.receive({"event": "start", "start": {}})  # malformed: skipped
    await stream.receive(start)
    await stream.receive(start)  # a second start: skipped
    await stream.receive({"event": "media", "media": {"payload": "AAAA"}})
    await stream.receive({"event": "media", "media": {"payload": "not base64!"}})
    await stream.receive({"event": "media", "media": {"track": "outbound", "payload": "AAAA"}})
    await stream.receive({"event": "mark", "mark": {"name": "3"}})
    for digit in ["1", "x", "2", "#"]:
        await stream.receive({"event": "dtmf", "dtmf": {"digit": digit}})
    await stream.send_mark("4")
    await stream.receive({"event": "stop"})
    await stream.receive({"event": "media", "media": {"payload": "AAAA"}})  # after stop: nothing
    assert handler.told == [
        ("started", "CA1"),
        ("audio", b"\0\0\0"),
        ("mark", "3"),
        ("keypad", keypad.entry_message("12#")["content"]),
        ("stopped", None),
    ]
    assert sent == [{"event": "mark", "streamSid": "MZ1", "mark": {"name": "4"}}]


async def test_keypad_entry_ends_after_a_pause() -> None:
    entries: list[str] = []

    async def deliver(message: dict[str, Any]) -> None:
        entries.append(message["content"])

    entry = keypad_entry.KeypadEntry(deliver, pause_secs=0.05)
    await entry.press("7")
    await entry.press("1")
    await asyncio.sleep(0.2)
    assert entries == [keypad.entry_message("71")["content"]]


def test_telephony_imports_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); "
        "import voxpipe.telephony.media_streams, voxpipe.telephony.conversation_relay, "
        "voxpipe.telephony.twiml, voxpipe.telephony.keypad, voxpipe.telephony.keypad_entry, "
        "voxpipe.telephony.json_messages, voxpipe.telephony.recording_status, voxpipe.telephony.warm_transfer; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "third = new - set(sys.stdlib_module_names) - {'voxpipe'}; "
        "assert not {m for m in third if not m.startswith('_')}, third"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 — fixed argv: this interpreter, no caller input
