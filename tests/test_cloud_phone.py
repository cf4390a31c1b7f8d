"""Telephone calls on the cloud providers: Twilio Media Streams (mu-law, 8 kHz) through voxpipe's server.

The example deployments run behind ``create_app``; a simulated Twilio line sends the caller's mu-law speech
every 20 ms and plays the bot's media. On a phone call the providers that speak G.711 are asked for it, so
the bytes go through untouched: Deepgram receives the caller's own mu-law bytes (``encoding=mulaw``),
ElevenLabs' ``ulaw_8000`` and Realtime's ``audio/pcmu`` output reach Twilio byte for byte. Each call ends with
a barge-in: the caller talks over a long reply, which stops (ElevenLabs context closed, Realtime response
cancelled and its audio item truncated, Twilio's buffer cleared).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.cloud_fixtures import KEY, PHONE, cloud_fixture, config, fakes_fixture, said  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import Behaviour, FakeBedrock, FakeDeepgram, FakeElevenLabs, FakeOpenAIRealtime
from tests.fakes.base import FakeServer
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, Played, TwilioMediaSimulator
from voxpipe.audio import g711
from voxpipe.bench.simulated_call import resample, simulate_call
from voxpipe.config.loader import apply_overrides
from voxpipe.config.models import Deployment
from voxpipe.web.app import create_app

pytestmark = pytest.mark.usefixtures("cloud")

TOKEN = "test-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
PUBLIC = "https://voice.example.com"
HOURS = "Nine to six."
STORY = "Let me tell you all about our bikes. " * 8  # about 14 s of the fakes' speech
# Stream a long reply a little faster than it plays, so it is still streaming when the caller cuts in.
STREAMING = {
    "elevenlabs": Behaviour(api_key=KEY, per_chunk_delay_s=0.4),
    "realtime": Behaviour(api_key=KEY, per_chunk_delay_s=0.15),
}


def on_the_phone(deployment: Deployment) -> Deployment:
    """The deployment served to Twilio, with its conversations kept in memory."""
    transport = {"public_url": PUBLIC, "twilio": {"auth_token": TOKEN}}
    return apply_overrides(deployment, {"transport": transport, "sessions": {"store": "memory"}})


def caller_mulaw(text: str) -> bytes:
    """What the caller's line carries when they say ``text``: 8 kHz mu-law."""
    return g711.encode(resample(said(text).audio, 16000, RATE))


def audible(played: list[Played]) -> list[Played]:
    return [p for p in played if np.abs(np.frombuffer(p.pcm, dtype="<i2").astype(np.int32)).max(initial=0) > 1000]


def media_bytes(call: TwilioMediaSimulator) -> bytes:
    """Every bot audio byte Twilio was sent, as sent (mu-law)."""
    return b"".join(base64.b64decode(e["media"]["payload"]) for e in call.sent("media"))


async def converse(
    server: RunningServer, name: str, *, interrupt_after_secs: float = 1.0
) -> tuple[TwilioMediaSimulator, float]:
    """Greeting, a question, then a long answer the caller talks over; the line, and when the caller cut in."""
    line = TwilioMediaSimulator(f"{server.ws_url}/{name}/media", f"wss://voice.example.com/{name}/media", TOKEN)
    async with line as call:
        await call.wait_for(lambda: audible(call.heard), what="the greeting")
        await call.wait_for(lambda: time.monotonic() - audible(call.heard)[-1].at > 0.8, what="the greeting's end")
        asked = await call.speak(resample(said("When do you open?").audio, 16000, RATE))
        await call.wait_for(lambda: audible(call.heard_after(asked)), what="the answer")
        await call.wait_for(lambda: time.monotonic() - audible(call.heard)[-1].at > 0.8, what="the answer's end")
        story_asked = await call.speak(resample(said("Tell me about your bikes.").audio, 16000, RATE))
        await call.wait_for(lambda: audible(call.heard_after(story_asked)), what="the story")
        await asyncio.sleep(interrupt_after_secs)
        interrupted_at = await call.speak(resample(said("Sorry, one question.").audio, 16000, RATE))
        await call.wait_for(lambda: call.clears, what="Twilio's buffer cleared")
        await asyncio.sleep(1.0)
    return call, interrupted_at


def serve(deployment: Deployment) -> RunningServer:
    return RunningServer(create_app([on_the_phone(deployment)], warm_up=False))


async def test_phone_call_deepgram_bedrock_elevenlabs(fakes: Callable[..., Any]) -> None:
    deepgram = fakes(FakeDeepgram, transcripts=["when do you open", "tell me about your bikes", "sorry one question"])
    bedrock = fakes(FakeBedrock, replies=[HOURS, STORY, "Sure."])
    elevenlabs = fakes(FakeElevenLabs, STREAMING["elevenlabs"])
    deployment = config(
        "cascade-deepgram-bedrock-elevenlabs", deepgram=deepgram, bedrock=bedrock, elevenlabs=elevenlabs
    )

    with serve(deployment) as server:
        call, interrupted_at = await converse(server, deployment.name)

    assert deepgram.errors == bedrock.errors == elevenlabs.errors == []
    # Deepgram was asked for mu-law and got the caller's bytes as the line carried them.
    (stream,) = deepgram.streams
    assert (stream.params["encoding"], stream.params["sample_rate"]) == ("mulaw", "8000")
    assert caller_mulaw("When do you open?") in bytes(stream.audio)
    assert [m for m in deepgram.messages() if m.get("type") == "Finalize"], "no Finalize at the end of speech"
    # ElevenLabs was asked for ulaw_8000, and Twilio got that audio byte for byte.
    (socket,) = elevenlabs.sockets
    assert socket.params["output_format"] == "ulaw_8000"
    greeting = b"".join(base64.b64decode(m["audio"]) for m in socket.sent if "audio" in m)[: RATE // 2]
    assert greeting in media_bytes(call)
    # Barge-in: the story's context was closed as the caller spoke, and its audio stopped.
    closes = elevenlabs.closed_contexts
    story = next(c for c in closes if "bikes" in c["text"])
    assert story["time"] - interrupted_at < 1.0
    assert len(story["spoken_before_close"]) < len(STORY.strip())  # the rest was never synthesized
    heard_story = sum(len(p.pcm) for p in audible(call.heard_after(interrupted_at - 2.5))) / 2 / RATE
    assert heard_story < 0.05 * len(STORY) / 2


async def test_phone_call_openai_realtime(fakes: Callable[..., Any]) -> None:
    greeting = "Hello, Harbor Bikes, how can I help you?"
    replies = [greeting, HOURS, STORY, "Sure."]
    realtime: FakeServer = fakes(FakeOpenAIRealtime, STREAMING["realtime"], replies=replies, audio_chunk_ms=200)
    deployment = config("realtime-openai", realtime=realtime)

    with serve(deployment) as server:
        call, _ = await converse(server, deployment.name, interrupt_after_secs=1.5)

    assert realtime.errors == []
    (session,) = realtime.sessions
    pcmu = {"type": "audio/pcmu"}
    assert session.config["audio"]["input"]["format"] == session.config["audio"]["output"]["format"] == pcmu
    assert caller_mulaw("When do you open?") in g711.encode(bytes(session.input_audio))
    deltas = [base64.b64decode(e["delta"]) for e in session.sent if e["type"] == "response.output_audio.delta"]
    assert b"".join(deltas)[: RATE // 2] in media_bytes(call)  # the greeting, byte for byte
    # Barge-in: the server cancelled the story when the caller spoke, and pipecat truncated what was played.
    cancelled = [r for r in session.responses if r["status"] == "cancelled"]
    assert cancelled and cancelled[0]["status_details"]["reason"] == "turn_detected"
    (truncation,) = realtime.truncations
    assert 0 < truncation["audio_end_ms"] < truncation["audio_sent_ms"]


async def test_simulated_phone_call_is_mulaw_at_8_khz(fakes: Callable[..., Any]) -> None:
    """``simulate_call(audio=PHONE)`` builds the providers for a mu-law call and plays the line's 8 kHz audio."""
    deepgram = fakes(FakeDeepgram, transcripts=["When do you open?"])
    bedrock = fakes(FakeBedrock, replies=[HOURS])
    elevenlabs = fakes(FakeElevenLabs)
    deployment = config(
        "cascade-deepgram-bedrock-elevenlabs", deepgram=deepgram, bedrock=bedrock, elevenlabs=elevenlabs
    )

    result = await simulate_call(deployment, [said("When do you open?")], settle_secs=0.5, audio=PHONE)

    assert [(t.heard, t.reply) for t in result.turns] == [("When do you open?", HOURS)]
    stream = deepgram.streams[0]
    assert (stream.params["encoding"], stream.params["sample_rate"]) == ("mulaw", "8000")
    assert elevenlabs.entries("ws_connect")[0]["query"]["output_format"] == "ulaw_8000"
    assert {len(pcm) for _, pcm in result.caller_audio} == {320} and {c.sample_rate for c in result.bot_audio} == {8000}
    # What Deepgram received is the caller's audio as G.711 carries it, byte for byte.
    line = b"".join(g711.encode(pcm) for _, pcm in result.caller_audio)
    assert bytes(stream.audio) == line[: len(stream.audio)]
