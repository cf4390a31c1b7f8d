"""Issue 11, oversize inputs: every input a client controls is bounded before it costs memory or a model turn.

Webhook bodies (64 KB, checked before reading, declared or streamed), WebSocket frames (1 MiB, enforced by the
app itself: proven under Starlette's in-process test server, which has no frame limit of its own), keypad
entries (32 keys), the bridge's reorder buffer, and the Lambda handlers' unsigned mode.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import TwilioMediaSimulator
from tests.test_twilio_media import TOKEN, deployment
from voxpipe.config.loader import parse_deployment
from voxpipe.security.limits import MAX_WEBHOOK_BYTES, RealTimeBudget
from voxpipe.serverless import CONFIG_FORMAT, HandlerConfig, HandlerConfigError
from voxpipe.serverless.event_order import MAX_EARLY_EVENTS, EventOrder
from voxpipe.telephony import keypad
from voxpipe.telephony.keypad_entry import KeypadEntry
from voxpipe.transports.json_socket import MAX_FRAME_BYTES
from voxpipe.web.app import create_app

UNSIGNED = """
name: open
insecure: true
agent: {instructions: Be brief.}
vad: {provider: testkit_vad}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm}
tts: {provider: testkit_tts}
transport: {public_url: "https://voice.example.com", twilio: {validate_signatures: false}}
sessions: {store: memory}
"""


async def test_webhook_bodies_over_64_kb_are_refused_before_they_are_read(tmp_path: Path, registry: object) -> None:
    app = create_app([deployment(tmp_path, [])], warm_up=False)
    big = b"CallSid=CA1&Junk=" + b"x" * MAX_WEBHOOK_BYTES

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: refused as it streams in
        for offset in range(0, len(big), 4096):
            yield big[offset : offset + 4096]

    with RunningServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            declared = await client.post("/phone/twiml", content=big)
            chunked = await client.post("/phone/twiml", content=streamed())
            action = await client.post("/phone/connect-action", content=big)
            recording = await client.post("/phone/recording-status", content=big)
            small = await client.post("/phone/twiml", data={"CallSid": "CA1"})
    assert declared.status_code == chunked.status_code == action.status_code == recording.status_code == 413
    assert small.status_code == 403  # a normal body is read, and its (missing) signature refused


def test_websocket_frames_over_the_limit_close_the_socket_under_any_asgi_server(registry: object) -> None:
    app = create_app([parse_deployment(UNSIGNED)], warm_up=False)
    with TestClient(app) as client:
        for path, headers in [("/open/media", {}), ("/open/relay", {})]:
            with client.websocket_connect(path, headers=headers) as socket:
                socket.send_text(json.dumps({"event": "connected", "pad": "x" * MAX_FRAME_BYTES}))
                with pytest.raises(WebSocketDisconnect) as closed:
                    socket.receive_text()
            assert closed.value.code == 1009


async def test_a_keypad_entry_holds_at_most_32_keys(caplog: pytest.LogCaptureFixture) -> None:
    entries: list[dict[str, Any]] = []

    async def deliver(message: dict[str, Any]) -> None:
        entries.append(message)

    entry = KeypadEntry(deliver, pause_secs=0.05)
    dropped = 0
    for _ in range(100):
        try:
            await entry.press("7")
        except keypad.NotADigit:
            dropped += 1
    await entry.press("#")  # a full entry still ends
    assert dropped == 100 - keypad.MAX_ENTRY_DIGITS
    assert entries == [keypad.entry_message("7" * keypad.MAX_ENTRY_DIGITS + "#")]


class _Recorder:
    def __init__(self) -> None:
        self.events: list[int] = []

    async def receive(self, event: dict[str, Any], received_at: float | None = None) -> None:
        self.events.append(int(event["sequenceNumber"]))


async def test_the_bridges_reorder_buffer_is_bounded() -> None:
    """A client that skips one sequence number and floods: the worker holds at most MAX_EARLY_EVENTS."""
    recorder = _Recorder()
    order = EventOrder(recorder.receive, "c1")
    await order.receive({"event": "media", "sequenceNumber": "1"}, None)
    for seq in range(3, 3 + 3 * MAX_EARLY_EVENTS):  # 2 never comes
        await order.receive({"event": "media", "sequenceNumber": str(seq)}, None)
        assert len(order.early) <= MAX_EARLY_EVENTS
    assert recorder.events[:3] == [1, 3, 4]  # the gap was skipped once the buffer was full
    order.close()
    await asyncio.sleep(0)


async def test_the_bridge_holds_early_events_for_a_late_start() -> None:
    """Events queued ahead of the ``start`` (a cold container held it back) wait for it and then follow it."""
    recorder = _Recorder()
    order = EventOrder(recorder.receive, "c1")
    for seq in (2, 3, 1, 4):
        await order.receive({"event": "media", "sequenceNumber": str(seq)}, None)
    assert recorder.events == [1, 2, 3, 4] and order.gap_timer is None


def test_lambda_handlers_refuse_unsigned_mode_without_insecure(caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "format": CONFIG_FORMAT,
        "name": "lambda",
        "agent": {"instructions": "Be brief."},
        "llm": [],
        "twilio": {"auth_token": TOKEN, "validate_signatures": False},
        "ttl_secs": 60,
        "on_failure": {"say": "Sorry, something went wrong on our side. Goodbye.", "transfer_to": None},
    }
    with pytest.raises(HandlerConfigError, match="insecure: true"):
        HandlerConfig.from_json(data, {})
    with caplog.at_level(logging.WARNING):
        config = HandlerConfig.from_json({**data, "twilio": {"validate_signatures": False, "insecure": True}}, {})
    assert not config.validate_signatures and "INSECURE" in caplog.text


def test_caller_audio_beyond_one_and_a_half_real_time_is_dropped() -> None:
    now = [0.0]
    budget = RealTimeBudget(factor=1.5, burst_secs=2.0, clock=lambda: now[0])
    taken = sum(budget.take(0.02) for _ in range(1000))  # 20 s of audio at once: only the burst passes
    assert taken == 100 and budget.dropped_secs == pytest.approx(18.0)
    for _ in range(50 * 60):  # then a minute of real-time audio: all of it passes
        now[0] += 0.02
        assert budget.take(0.02)


async def test_a_peer_flooding_audio_feeds_the_pipeline_at_most_one_and_a_half_real_time(
    tmp_path: Path, registry: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real socket: 30 s of audio sent in a burst; what the call lets through fits the budget."""
    passed: list[float] = []
    take = RealTimeBudget.take

    def counting(budget: RealTimeBudget, secs: float) -> bool:
        allowed = take(budget, secs)
        passed.extend([secs] if allowed else [])
        return allowed

    monkeypatch.setattr(RealTimeBudget, "take", counting)
    app = create_app([deployment(tmp_path, [])], warm_up=False)
    frame = {"event": "media", "media": {"track": "inbound", "payload": base64.b64encode(b"\xff" * 160).decode()}}
    with RunningServer(app) as server:
        url, signed = f"{server.ws_url}/phone/media", "wss://voice.example.com/phone/media"
        async with TwilioMediaSimulator(url, signed, auth_token=TOKEN) as call:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            for _ in range(1500):  # 30 s of 20 ms mu-law frames, as fast as the socket takes them
                await call.send({**frame, "streamSid": call.stream_sid})
            await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started + 0.3
    assert sum(passed) <= 2.0 + 1.5 * elapsed + 0.05 and sum(passed) < 15
