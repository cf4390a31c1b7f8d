"""Numbers that stay true under overload: the caller is timed by when their audio arrived, not when the
server got to it, and turns the caller talked over before any reply are counted as missed.

``ArrivalClock`` places Twilio's frames by their own timestamps; ``TurnMeter`` reads the arrival stamp the
transport puts on each frame. A served call over a real socket, whose LLM answers after the caller has
already spoken again, leaves ``missed_turns`` on its record and in ``/metrics``. And a caller is heard from
the stream's first frame: speech before pipecat's VAD has measured 0.4 s of audio is not lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from tests.fault_transports import the_record
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.latency import ARRIVED_AT, TurnMeter
from voxpipe.records.store import RecordStore
from voxpipe.telephony.media_streams import ArrivalClock
from voxpipe.web.app import create_app


def test_frames_handled_late_are_placed_by_their_timestamps() -> None:
    now = [100.0]
    clock = ArrivalClock(lambda: now[0])
    assert clock.arrived("0") == 100.0
    now[0] = 100.02
    assert clock.arrived("20") == 100.02
    now[0] = 101.5  # the loop was busy: frames 40..1000 ms are handled in one burst, long after they arrived
    assert [round(clock.arrived(str(ms)), 3) for ms in (40, 1000)] == [100.04, 101.0]
    now[0] = 101.52
    assert round(clock.arrived("1020"), 3) == 101.02
    assert clock.arrived(None) == 101.52  # no timestamp (the browser page): when it was handled
    assert clock.arrived("not a number") == 101.52


def _speech(secs: float, rate: int = RATE) -> bytes:
    t = np.arange(int(secs * rate)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def test_the_meter_times_the_caller_by_arrival() -> None:
    output = FrameProcessor(name="output")
    meter = TurnMeter(output)
    meter.clock.start()
    begun = meter.clock.started_at
    caller = InputAudioRawFrame(audio=_speech(0.02, 16000), sample_rate=16000, num_channels=1)
    caller.metadata[ARRIVED_AT] = begun + 1.0  # arrived at 1.0 s, handled at 1.4 s (a late loop)
    bot = OutputAudioRawFrame(audio=_speech(0.02, 16000), sample_rate=16000, num_channels=1)
    source = FrameProcessor(name="input")
    down = FrameDirection.DOWNSTREAM
    await meter.on_push_frame(FramePushed(source, output, caller, down, int(1.4e9)))
    await meter.on_push_frame(FramePushed(output, source, bot, down, int(2.02e9)))
    (turn,) = meter.turns()
    assert abs((turn.voice_to_voice_ms or 0) - 1000) < 1  # what the caller waited: from 1.0 s, not from 1.4 s


DEPLOYMENT = """
name: desk
agent: {instructions: You take bookings.}
vad: {provider: testkit_vad, start_secs: 0.1, stop_secs: 0.15}
turn: {strategy: silence, timeout_secs: 0.1}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm, options: {default_reply: "Noted.", latency_secs: 2.5}}
tts: {provider: testkit_tts}
insecure: true
transport: {twilio: {validate_signatures: false}}
sessions: {store: memory}
"""


async def test_a_turn_talked_over_before_any_reply_is_missed(tmp_path: Path, registry: object) -> None:
    records = RecordStore(tmp_path / "calls.db")
    app = create_app([parse_deployment(DEPLOYMENT)], records=records, warm_up=False)
    with RunningServer(app) as server:
        call = TwilioMediaSimulator(f"{server.ws_url}/desk/media", "wss://x/desk/media", None, call_sid="CA-missed")
        async with call:
            await asyncio.sleep(1.0)
            await call.speak(_speech(0.5))
            await asyncio.sleep(1.0)  # the turn has ended (0.25 s of silence); the reply is still 1.5 s away
            await call.speak(_speech(0.5))
            await call.wait_for(lambda: bool(call.marks_echoed), timeout=20, what="an answer")
            await asyncio.sleep(0.5)
            await call.stop()
        await the_record(records)
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
    (record,) = records.list()
    assert record.missed_turns == 1
    assert len(record.turns) == 1 and record.turns[0].voice_to_voice_ms is not None
    assert 'voxpipe_missed_turns_total{deployment="desk"} 1.0' in metrics


async def test_a_caller_who_speaks_at_once_is_heard(tmp_path: Path, registry: object) -> None:
    """Speech in the call's first 0.4 s (pipecat's VAD volume window) is heard and answered."""
    records = RecordStore(tmp_path / "calls.db")
    prompt = DEPLOYMENT.replace("latency_secs: 2.5", "latency_secs: 0")
    app = create_app([parse_deployment(prompt)], records=records, warm_up=False)
    with RunningServer(app) as server:
        call = TwilioMediaSimulator(f"{server.ws_url}/desk/media", "wss://x/desk/media", None, call_sid="CA-early")
        async with call:
            await call.speak(_speech(0.5))  # from the first frame of the stream
            await call.wait_for(lambda: bool(call.marks_echoed), timeout=10, what="an answer")
            await asyncio.sleep(0.5)
            await call.stop()
        await the_record(records)
    (record,) = records.list()
    assert len(record.turns) == 1 and record.turns[0].reply == "Noted." and record.missed_turns == 0
