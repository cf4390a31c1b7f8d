"""Issue 11, property-based (hypothesis): every WebSocket message parser takes anything without raising.

What a peer sends goes through one of: ``json_messages.read`` (text frames of the server's sockets and of the
bridge), the Media Streams state machine (Twilio's dialect and the browser page's), ``conversation_relay.parse``
(server and Lambda relay), API Gateway's event envelope (``event_body``), and the call binding's check of
``customParameters``. Each answers a well-formed message or logs and skips; no other exception escapes.
Messages are built near the real ones (right kinds, wrong fields), so the fuzz reaches deep branches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import TwilioMediaSimulator
from tests.test_twilio_media import TOKEN, audible, deployment, turn
from voxpipe.records.store import RecordStore
from voxpipe.security.call_binding import PARAMETER, CallBinding
from voxpipe.security.tokens import TokenError
from voxpipe.serverless import event_body
from voxpipe.telephony import conversation_relay, json_messages
from voxpipe.telephony.media_streams import MediaStream, StreamStart
from voxpipe.transports.media_stream_call import BrowserDialect, Dialect
from voxpipe.web.app import create_app

SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
MEDIA_KINDS = st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "clear", "bogus"])
RELAY_KINDS = st.sampled_from(["setup", "prompt", "interrupt", "dtmf", "error", "info", "bogus"])
FIELDS = st.sampled_from(
    ["start", "media", "mark", "dtmf", "payload", "digit", "name", "callSid", "streamSid", "sessionId",
     "customParameters", "voicePrompt", "utteranceUntilInterrupt", "last", "track", PARAMETER, "description"]
)  # fmt: skip
NEAR = st.recursive(
    SCALAR | st.just(base64.b64encode(b"\x00\x01" * 80).decode()),
    lambda inner: st.dictionaries(FIELDS, inner, max_size=5) | st.lists(inner, max_size=3),
    max_leaves=20,
)
BINDING = CallBinding.for_deployment("twilio", signed=True)


def _frames(kinds: st.SearchStrategy[str], key: str) -> st.SearchStrategy[str | bytes]:
    """A peer's frame: near-real JSON messages, any JSON, any text, or binary."""
    near = st.builds(lambda kind, body: json.dumps({key: kind, **body}), kinds, st.dictionaries(FIELDS, NEAR))
    return near | JSON.map(json.dumps) | st.text(max_size=60) | st.binary(max_size=40)


class _Handler:
    """The stream's call, as ``MediaStreamCall`` behaves at its edges: the binding checked at ``start``."""

    def __init__(self) -> None:
        self.events = 0

    async def started(self, start: StreamStart) -> None:
        with contextlib.suppress(TokenError):
            BINDING.verify(start.call_id, start.metadata.get("custom_parameters"))
        self.events += 1

    async def audio(self, payload: bytes) -> None:
        self.events += 1

    async def mark_returned(self, name: str, returned_at: float) -> None:
        self.events += 1

    async def keypad_entry(self, message: dict[str, Any]) -> None:
        self.events += 1

    async def stopped(self) -> None:
        self.events += 1


async def _sent(event: dict[str, Any]) -> bool:
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_frames(MEDIA_KINDS, "event"), max_size=12), peer=st.sampled_from(["twilio", "page"]))
def test_media_stream_events_of_any_shape_are_handled_or_skipped(frames: list[str | bytes], peer: str) -> None:
    # Twilio; a browser page, on the server or the bridge (the session is its token's)
    dialect = {"twilio": Dialect(), "page": BrowserDialect("s" * 32)}[peer]

    async def run() -> None:
        stream = MediaStream(_sent, _Handler(), dialect.parse_start)
        for frame in frames:
            event = json_messages.read(frame, "event", "fuzz")
            if event is not None:
                await stream.receive(event)
                if event["event"] == "media" and stream.start is not None:
                    dialect.decode(b"\x00\x00")  # the dialect's decode of a well-formed payload
        stream.keypad.close()

    asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(frame=_frames(RELAY_KINDS, "type"))
def test_conversation_relay_messages_of_any_shape_parse_to_a_message(frame: str | bytes) -> None:
    message = conversation_relay.parse(frame)
    assert isinstance(message, conversation_relay.Inbound)
    if isinstance(message, conversation_relay.Setup):
        with contextlib.suppress(TokenError):
            CallBinding.for_deployment("conversation_relay", signed=True).verify(
                message.call_sid, message.custom_parameters
            )


@settings(max_examples=300, deadline=None)
@given(body=st.none() | st.text(max_size=80) | _frames(RELAY_KINDS, "type"), encoded=st.booleans())
def test_api_gateway_event_bodies_of_any_shape_are_read_or_skipped(body: Any, encoded: bool) -> None:
    if encoded and isinstance(body, bytes):
        body = base64.b64encode(body).decode()
    event = {"body": body, "isBase64Encoded": encoded, "requestContext": {"routeKey": "$default"}}
    try:
        text = event_body(event)
    except ValueError:  # binascii.Error: API Gateway itself never sends invalid base64; refused all the same
        return
    json_messages.read(text, "event", "fuzz")
    conversation_relay.parse(text)


async def test_a_well_behaved_call_keeps_its_latency_while_another_socket_sends_garbage(
    tmp_path: Path, registry: object
) -> None:
    """Over real sockets: an attacker's own call floods its socket with malformed frames and second starts
    naming another call, while a real call takes a turn: its voice-to-voice stays as without the attack
    (tests/test_twilio_media.py bounds it the same way)."""
    frames = [json.dumps(f) for f in _START_REPLAYS] + [b"\x00" * 64, "{", "[]", '{"event": 5}'] * 50
    app = create_app(
        [deployment(tmp_path, ["what are your hours"])], records=RecordStore(tmp_path / "calls.db"), warm_up=False
    )
    with RunningServer(app) as server:
        url, signed = f"{server.ws_url}/phone/media", "wss://voice.example.com/phone/media"
        async with (
            TwilioMediaSimulator(url, signed, auth_token=TOKEN) as call,
            TwilioMediaSimulator(url, signed, auth_token=TOKEN) as attacker,  # a call of its own, then garbage
        ):
            flood = asyncio.ensure_future(_flood(attacker, frames))
            await call.wait_for(lambda: audible(call.heard), timeout=30, what="the greeting")
            await asyncio.sleep(1.0)  # the greeting has played: the caller's turn is not a barge-in
            await turn(call)
            assert flood.done() is False  # the attacker's socket was never closed: every frame was read
            flood.cancel()
        await asyncio.sleep(0.5)
    [record] = [r for r in RecordStore(tmp_path / "calls.db").list() if r.call_id == call.call_sid]
    measured = [t.voice_to_voice_ms for t in record.turns if t.voice_to_voice_ms and t.voice_to_voice_ms > 0]
    assert measured and max(measured) < 1500


_START_REPLAYS = [
    {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA" + "c" * 32, "customParameters": {PARAMETER: p}}}
    for p in ["", "x.y", "a" * 3000, None]
]


async def _flood(simulator: TwilioMediaSimulator, frames: list[str | bytes]) -> None:
    while True:
        for frame in frames:
            await simulator._socket.send(frame)  # raises once the server closed the socket: the test fails
        await asyncio.sleep(0.01)
