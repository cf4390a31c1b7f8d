"""Twilio Media Streams end to end: the simulator plays Twilio against the app served by uvicorn.

The testkit providers make the bot deterministic (scripted transcripts and replies, a 440 Hz tone whose length
follows the text); the caller's speech is a 300 Hz tone, which the testkit's energy VAD hears as speech.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
import websockets
from fastapi import FastAPI, Request
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.workers.runner import WorkerRunner
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.apigw_shim import wait_until
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment
from voxpipe.pipeline.frames import BotAudioPlayedFrame
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.store import RecordStore
from voxpipe.telephony.media_streams import Playout
from voxpipe.transports.media_transport import (
    LEAD_SECS,
    MediaPeer,
    MediaStreamOutput,
    MediaStreamTransport,
)
from voxpipe.transports.twilio_account import TwilioRest
from voxpipe.web.app import create_app

PUBLIC = "https://voice.example.com"
TOKEN = "test-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real

DEPLOYMENT = """
name: phone
agent:
  instructions: You are a scripted test agent.
  greeting: Hello, thanks for calling.
  tools:
    - kind: end_call
vad: {{provider: testkit_vad, start_secs: 0.1, stop_secs: 0.15}}
turn: {{strategy: silence, timeout_secs: 0.1}}
stt:
  provider: testkit_stt
  options: {{transcripts: {transcripts}}}
llm:
  provider: testkit_llm
  options:
    replies:
      - {{when: hours, say: "We are open nine to five."}}
      - {{when: story, say: "{story}"}}
      - {{when: keypad, say: "You pressed some keys."}}
      - {{when: bye, tool_call: {{name: end_call, arguments: {{reason: done}}}}, say: "Goodbye."}}
      - {{when: "*", say: "You said: {{user}}"}}
tts: {{provider: testkit_tts, options: {{secs_per_char: 0.02}}}}
transport:
  public_url: {public}
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
sessions: {{store: sqlite, path: "{db}"}}
"""
STORY = (
    "Once upon a time. " + "There was a very long story that took many seconds to tell, and it went on and on" * 3 + "."
)


def speech(secs: float = 0.5) -> bytes:
    """The caller's 'speech': a 300 Hz tone at 8 kHz, then nothing (the line sends silence)."""
    t = np.arange(int(secs * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def audible(played: list, threshold: int = 500) -> list:
    return [p for p in played if np.abs(np.frombuffer(p.pcm, dtype="<i2")).max(initial=0) > threshold]


def deployment(tmp_path: Path, transcripts: list[str]) -> Deployment:
    text = DEPLOYMENT.format(transcripts=json.dumps(transcripts), story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    return parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})


def simulator(server: RunningServer, **kwargs: object) -> TwilioMediaSimulator:
    return TwilioMediaSimulator(f"{server.ws_url}/phone/media", "wss://voice.example.com/phone/media", **kwargs)


def stored_messages(tmp_path: Path, call_id: str) -> list[dict]:
    with sqlite3.connect(tmp_path / "s.db") as db:
        rows = db.execute("SELECT message FROM messages WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
    return [json.loads(row[0]) for row in rows]


async def turn(call: TwilioMediaSimulator, said: bytes | None = None, settle: float = 0.4) -> tuple[float, list]:
    """Say something, wait until the bot's answer has played; returns (speech end, audible chunks heard)."""
    spoke_at = await call.speak(said or speech())
    await call.wait_for(lambda: audible(call.heard_after(spoke_at)), timeout=60, what="the bot's answer")
    await call.wait_for(lambda: time.monotonic() - audible(call.heard_after(spoke_at))[-1].at > settle, timeout=60)
    return spoke_at, audible(call.heard_after(spoke_at))


@pytest.fixture
def server(tmp_path: Path, registry: object) -> RunningServer:
    app = create_app(
        [deployment(tmp_path, ["what are your hours", "tell me a story", "sorry to interrupt", "thanks bye"])],
        records=RecordStore(tmp_path / "calls.db"),
        warm_up=False,
    )
    with RunningServer(app) as running:
        yield running


async def test_multi_turn_call_with_marks_barge_in_and_resume(server: RunningServer, tmp_path: Path) -> None:
    async with simulator(server) as call:
        await call.wait_for(lambda: audible(call.heard), what="the greeting")
        await asyncio.sleep(1.2)  # let the greeting finish
        # Turn 1: an answer comes back as mu-law media, each chunk followed by a mark that Twilio echoes.
        spoke_at, answer = await turn(call)
        media, marks = call.sent("media"), call.sent("mark")
        assert len(marks) == len(media) and all(e["streamSid"] == call.stream_sid for e in media + marks)
        assert set(call.marks_echoed) == {m["mark"]["name"] for m in marks}
        assert answer[0].at - spoke_at < 1.5
        # Turn 2: a long story, interrupted by the caller after ~0.8 s of it.
        await call.speak(speech())
        await call.wait_for(lambda: len(call.sent("media")) > len(media) + 5, what="the story")
        story_started = time.monotonic()
        await asyncio.sleep(1.0)
        await call.speak(speech(0.4))
        await call.wait_for(lambda: call.clears, what="a clear")
        heard_story = [p for p in audible(call.heard) if p.at >= story_started - 0.5]
        assert sum(len(p.pcm) for p in heard_story) / 2 / RATE < len(STORY) * 0.02 - 0.5  # the rest was dropped
        await asyncio.sleep(1.5)
    await asyncio.sleep(0.5)
    messages = stored_messages(tmp_path, call.call_sid)
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Hello, thanks for calling."
    assert messages[2]["content"] == "We are open nine to five."
    # The story was cut to the sentence whose audio the caller heard (its marks came back before the clear).
    assert messages[4]["content"] == "Once upon a time."
    assert messages[5:] == [
        {"role": "user", "content": "sorry to interrupt"},
        {"role": "assistant", "content": "You said: sorry to interrupt"},
    ]

    # The call was measured from the audio the caller heard, recorded and counted.
    [record] = RecordStore(tmp_path / "calls.db").list()
    assert record.call_id == call.call_sid and record.deployment == "phone"
    assert [t.heard for t in record.turns][:2] == ["what are your hours", "tell me a story"]
    assert 200 < record.turns[0].voice_to_voice_ms < 1500
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert 'voxpipe_calls_total{deployment="phone",variant=""} 1.0' in (await client.get("/metrics")).text

    # The same callSid reconnects: no greeting, the context (history) comes back, the script goes on.
    async with simulator(server, call_sid=call.call_sid) as again:
        await asyncio.sleep(1.0)
        assert not audible(again.heard)  # a resumed call is not greeted again
        await turn(again)
    await asyncio.sleep(0.5)
    resumed = stored_messages(tmp_path, call.call_sid)
    assert resumed[: len(messages)] == messages and len(resumed) > len(messages)


async def test_bad_signature_is_refused(server: RunningServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with simulator(server, signature="bogus"):
            pass
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        async with simulator(server, auth_token=None):
            pass
    form = {"CallSid": "CA1", "From": "+1555", "To": "+1666"}
    url = f"{PUBLIC}/phone/twiml"
    async with httpx.AsyncClient(base_url=server.url) as client:
        bad = await client.post("/phone/twiml", data=form, headers={"X-Twilio-Signature": "bad"})
        good = await client.post(
            "/phone/twiml",
            data=form,
            headers={"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, form)},
        )
    assert bad.status_code == 403
    assert good.status_code == 200
    assert '<Stream url="wss://voice.example.com/phone/media">' in good.text
    assert '<Parameter name="from" value="+1555" />' in good.text
    assert 'action="https://voice.example.com/phone/connect-action"' in good.text


async def test_malformed_and_oversized_input_leave_calls_running(server: RunningServer) -> None:
    async with simulator(server) as broken, simulator(server) as healthy:
        await broken.wait_for(lambda: audible(broken.heard), what="the greeting")
        for raw in [
            "{not json",
            "[1, 2]",
            json.dumps({"event": "media", "media": {"payload": "%%%"}}),
            json.dumps({"event": "nonsense"}),
            "x" * 200_000,
            b"\x00\x01binary",
        ]:
            await broken.send_raw(raw)
        await asyncio.sleep(1.5)
        assert not broken.closed.is_set()
        await turn(broken)  # the call goes on
        await turn(healthy)
        await broken.stop()  # the caller hangs up: the server ends the call and closes the stream
        await broken.wait_for(broken.closed.is_set, what="the server to close a stopped stream")
        async with simulator(server) as huge:
            await huge.send_raw("z" * (2 << 20))  # over the server's frame limit: that connection closes (1009)
            await huge.wait_for(huge.closed.is_set, what="the oversized connection to close")
        assert not healthy.closed.is_set()
        await turn(healthy)


class FakeTwilioRest:
    """Twilio's REST API for calls, as far as voxpipe uses it: ``POST .../Calls/{sid}.json``."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.app = FastAPI()

        @self.app.post("/2010-04-01/Accounts/{account}/Calls/{call}")
        async def update(account: str, call: str, request: Request) -> dict[str, str]:
            sid = call.removesuffix(".json")
            self.updates.append((sid, dict(parse_qsl((await request.body()).decode()))))
            return {"sid": sid, "account_sid": account, "status": "completed"}

    def client(self, url: str) -> Callable[[str, str], Client]:
        def make(account_sid: str, auth_token: str) -> Client:
            client = Client(account_sid, auth_token)
            client.api.base_url = url
            return client

        return make


async def test_dtmf_reaches_the_agent_and_end_call_hangs_up_through_rest(tmp_path: Path, registry: object) -> None:
    rest = FakeTwilioRest()
    with RunningServer(rest.app) as rest_server:
        text = DEPLOYMENT.format(
            transcripts=json.dumps(["thanks bye"]), story=STORY, public=PUBLIC, db=tmp_path / "s.db"
        ).replace(
            'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}',
            'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}", account_sid: AC0123456789abcdef0123456789abcdef}',
        )
        phone = parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})
        app = create_app([phone], warm_up=False, twilio_client=rest.client(rest_server.url))
        with RunningServer(app) as server:
            async with simulator(server) as call:
                await call.wait_for(lambda: audible(call.heard), what="the greeting")
                await asyncio.sleep(1.2)
                pressed_at = time.monotonic()
                for digit in "12#":
                    await call.dtmf(digit)
                await call.wait_for(lambda: audible(call.heard_after(pressed_at)), what="an answer to the keys")
                await asyncio.sleep(1.0)
                await turn(call)  # "thanks bye": the agent says goodbye, then hangs up
                await call.wait_for(call.closed.is_set, what="the server to end the stream")
    await asyncio.sleep(0.3)
    assert rest.updates == [(call.call_sid, {"Status": "completed"})]
    messages = stored_messages(tmp_path, call.call_sid)
    assert {"role": "user", "content": "(The caller pressed these keys on the phone keypad: 12#)"} in messages
    assert {"role": "assistant", "content": "You pressed some keys."} in messages
    assert messages[-1] == {"role": "assistant", "content": "Goodbye."}


async def test_real_speech_through_the_offline_stack(tmp_path: Path, repo_root: Path) -> None:
    """Whisper hears the caller's (synthesized) speech over mu-law, Gemma answers, hibari speaks: two turns."""
    from voxpipe.providers.builtin.local_tts import speak

    text = (repo_root / "configs" / "offline.yaml").read_text()
    text += f"insecure: true\ntransport: {{public_url: {PUBLIC}, twilio: {{validate_signatures: false}}}}\n"
    text += f'sessions: {{store: sqlite, path: "{tmp_path / "s.db"}"}}\n'
    with RunningServer(create_app([parse_deployment(text)])) as server:
        async with TwilioMediaSimulator(f"{server.ws_url}/offline/media", "", auth_token=None) as call:
            await call.wait_for(lambda: audible(call.heard), timeout=60, what="the greeting")
            await call.wait_for(lambda: time.monotonic() - audible(call.heard)[-1].at > 1.0, timeout=30)
            for question in ("What are your opening hours?", "How much is a tune-up?"):
                _, answer = await turn(call, speak(question, RATE), settle=1.0)
                assert sum(len(p.pcm) for p in answer) / 2 / RATE > 0.5  # a spoken answer, not a blip
    messages = stored_messages(tmp_path, call.call_sid)
    heard = " ".join(m["content"].lower() for m in messages if m["role"] == "user")
    assert "hours" in heard and "tune" in heard
    assert [m["role"] for m in messages] == ["assistant", "user", "assistant", "user", "assistant"]


def test_playout_counts_what_was_heard() -> None:
    playout = Playout()
    playout.start_response()
    names = [playout.sent(40) for _ in range(5)]
    assert playout.acked(names[1], time.monotonic()) == 80 and playout.acked_seq == 2  # marks come back in order
    assert playout.acked("bogus", time.monotonic()) is None and not playout.drained.is_set()
    returned_at = time.monotonic()
    playout.acked(names[2], returned_at)
    assert playout.heard(returned_at + 0.01) == [(4, pytest.approx(0.01), returned_at)]  # since the 3rd came back
    assert playout.heard(returned_at + 0.05) == [  # the fourth played whole (its mark still on its way), the fifth
        (4, pytest.approx(0.04), returned_at),  # began where it ended
        (5, pytest.approx(0.01), pytest.approx(returned_at + 0.04)),
    ]
    assert [secs for _, secs, _ in playout.heard(returned_at + 0.5)] == [pytest.approx(0.04)] * 2  # no longer
    playout.clear()  # barge-in: the pending marks will come back, unheard
    assert all(playout.acked(name, time.monotonic()) is None for name in names[3:]) and playout.drained.is_set()
    assert playout.heard(time.monotonic()) == []
    playout.start_response()
    assert playout.acked(playout.sent(40), time.monotonic()) == 40  # a new response counts from zero


class _Peer(MediaPeer):
    """A socket-free far end that plays instantly: every mark comes back as soon as it is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.output: MediaStreamOutput | None = None

    async def send_audio(self, pcm: bytes) -> bool:
        self.sent.append("media")
        return True

    async def send_mark(self, name: str) -> None:
        self.sent.append("mark")
        assert self.output is not None
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: asyncio.ensure_future(self.output.mark_returned(name, time.monotonic())))

    async def send_clear(self) -> None:
        self.sent.append("clear")

    def bot_stopped_speaking(self) -> None:
        self.sent.append("stopped")


class _Recorder(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


async def test_output_holds_text_until_its_audio_has_played_and_reports_played_ms() -> None:
    """Without sockets: the bot's text reaches downstream only after the marks before it came back."""
    peer = _Peer()
    transport = MediaStreamTransport(peer, AudioFormat(8000, 8000, "mulaw"), report_played=True)
    peer.output = transport.output()
    upstream, downstream = _Recorder(), _Recorder()
    worker = PipelineWorker(
        Pipeline([transport.input(), upstream, transport.output(), downstream]),
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    audio = speech(0.4)
    await worker.queue_frames(
        [
            TTSStartedFrame(),
            TTSAudioRawFrame(audio, 8000, 1),
            TTSTextFrame("Hello.", TextType.SENTENCE),
            TTSStoppedFrame(),
            EndFrame(),
        ]
    )
    started = time.monotonic()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    played = [f.played_ms for _, f in upstream.frames if isinstance(f, BotAudioPlayedFrame)]
    assert played == list(range(40, 440, 40))  # 40 ms chunks, each acknowledged
    assert peer.sent == ["media", "mark"] * 10 + ["stopped"]
    text_at = next(at for at, f in downstream.frames if isinstance(f, TTSTextFrame))
    assert text_at - started >= 0.4 - LEAD_SECS  # released once the 0.4 s of audio before it had played


async def test_a_chunk_taken_before_a_barge_in_is_not_sent_after_its_clear() -> None:
    """pipecat's audio task writes the chunk it had already taken from its queue when an interruption came, and
    may do so after the output sent ``clear``: that chunk is not sent (the caller would hear a blip of the
    interrupted reply after it went quiet), while audio made after the interruption is."""
    peer = _Peer()
    transport = MediaStreamTransport(peer, AudioFormat(8000, 8000, "mulaw"))
    peer.output = output = transport.output()
    late = OutputAudioRawFrame(speech(0.04), 8000, 1)  # made before the interruption, written after it
    worker = PipelineWorker(
        Pipeline([transport.input(), output]),
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    await worker.queue_frames([TTSStartedFrame(), TTSAudioRawFrame(speech(2.0), 8000, 1)])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.3)  # the reply is playing
        await worker.queue_frame(InterruptionFrame())
        await wait_until(lambda: "clear" in peer.sent, timeout=1)
        sent = len(peer.sent)
        assert not await output.write_audio_frame(late) and len(peer.sent) == sent  # nothing after the clear
        assert await output.write_audio_frame(OutputAudioRawFrame(speech(0.04), 8000, 1))  # the next reply's
        assert peer.sent[sent:] == ["media", "mark"]
    finally:
        await runner.cancel()
        await asyncio.wait_for(running, 10)


async def test_realtime_deployment_over_twilio(tmp_path: Path, registry: object) -> None:
    """Speech to speech (testkit_realtime) on a phone call: two turns, and the replies stored as heard."""
    text = f"""
name: phone
mode: realtime
agent: {{instructions: Be brief.}}
vad: {{start_secs: 0.1, stop_secs: 0.2}}
realtime:
  provider: testkit_realtime
  options:
    transcripts: ["hello", "what are your hours"]
    replies: [{{when: hours, say: "Nine to five."}}, {{when: "*", say: "Hi there, caller."}}]
insecure: true
transport: {{public_url: {PUBLIC}, twilio: {{validate_signatures: false}}}}
sessions: {{store: sqlite, path: "{tmp_path / "s.db"}"}}
"""
    with RunningServer(create_app([parse_deployment(text)], warm_up=False)) as server:
        async with simulator(server, auth_token=None) as call:
            await asyncio.sleep(0.5)
            await turn(call)
            await turn(call)
    await asyncio.sleep(0.3)
    assert stored_messages(tmp_path, call.call_sid) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi there, caller."},
        {"role": "user", "content": "what are your hours"},
        {"role": "assistant", "content": "Nine to five."},
    ]


async def test_transfer_through_rest_replaces_the_call_twiml_with_a_dial() -> None:
    rest = FakeTwilioRest()
    with RunningServer(rest.app) as server:
        client = rest.client(server.url)("AC0123456789abcdef0123456789abcdef", TOKEN)
        await TwilioRest(client).end_call("CA42", transfer_to="+15557770000")
    [(sid, form)] = rest.updates
    assert sid == "CA42" and "<Dial>+15557770000</Dial>" in form["Twiml"]
