"""Whole calls on the cloud providers, each from an example deployment in ``configs/``, against the fakes.

A caller speaks real speech (the local TTS, so Silero VAD hears it) into voxpipe's in-memory transport; each
call has the greeting, a plain turn and a turn answered through a tool (``get_weather``, added to the file's
tools). The tests assert on what each vendor received (models, options, the conversation, the tool result)
and on what the caller got back: the replies, audible audio, and usage priced at the plugins' prices.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tool_functions

from tests.cloud_fixtures import CallLog, calls_fixture, cloud_fixture, config, fakes_fixture, said  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import FakeBedrock, FakeDeepgram, FakeElevenLabs, FakeOpenAI, FakeOpenAIRealtime, ToolCall, Turn
from voxpipe.bench.simulated_call import CallResult, simulate_call
from voxpipe.config.loader import apply_overrides
from voxpipe.config.models import Deployment
from voxpipe.providers.builtin import openai_realtime

pytestmark = pytest.mark.usefixtures("cloud")

GREETING = "Hello, Harbor Bikes, how can I help you?"
ASKED = ["When do you open?", "Weather in Paris?"]
HOURS = "Nine to six."
WEATHER_TOOL = {
    "kind": "python",
    "name": "get_weather",
    "description": "The current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "options": {"function": f"{tool_functions.__name__}:get_weather"},
}


def with_weather_tool(deployment: Deployment) -> Deployment:
    """The deployment with ``get_weather`` added to its tools."""
    tools = [tool.model_dump(exclude_none=True) for tool in deployment.agent.tools]
    return apply_overrides(deployment, {"agent": {"tools": [*tools, WEATHER_TOOL]}})


def weather_answer(turn: Turn) -> str:
    result = json.loads(turn.tool_results[-1].output)
    return f"{result['temperature_c']} degrees."


WEATHER = "21 degrees."  # what weather_answer says of get_weather("Paris")
REPLIES = [HOURS, ToolCall("get_weather", {"city": "Paris"}), weather_answer]


async def call(deployment: Deployment) -> CallResult:
    return await simulate_call(with_weather_tool(deployment), [said(text) for text in ASKED], settle_secs=0.7)


def assert_answered(result: CallResult, calls: CallLog, *, heard: bool = True) -> None:
    """Both turns answered as scripted (the second from the tool's result), audibly, with no error."""
    assert calls.errors == [[]]
    assert [turn.reply for turn in result.turns] == [HOURS, WEATHER]
    if heard:
        assert [turn.heard for turn in result.turns] == ASKED
    bot = np.frombuffer(b"".join(chunk.audio for chunk in result.bot_audio), dtype=np.int16)
    assert np.abs(bot.astype(np.int32)).max() > 5000, "the caller heard no speech"


def usage_by_role(result: CallResult) -> dict[str, Any]:
    usage = {u.role: u for u in result.usage}
    assert all(u.cost_usd > 0 for u in usage.values()), usage
    return usage


async def test_cascade_openai_call(fakes: Callable[..., Any], calls: CallLog) -> None:
    openai = fakes(FakeOpenAI, transcripts=ASKED, replies=REPLIES)

    result = await call(config("cascade-openai", openai=openai))

    assert_answered(result, calls)
    assert openai.errors == []
    transcriptions = openai.requests("/v1/audio/transcriptions")
    assert len(transcriptions) == 2
    assert (
        transcriptions[0]["form"] | {"model": "gpt-4o-mini-transcribe", "language": "en"} == transcriptions[0]["form"]
    )
    chats = [r["json"] for r in openai.requests("/v1/chat/completions")]
    assert [c["model"] for c in chats] == ["gpt-4.1-mini"] * 3
    assert chats[0]["messages"][0]["role"] in ("system", "developer")
    assert chats[0]["messages"][0]["content"].startswith("You are the receptionist of Harbor Bikes")
    assert {t["function"]["name"] for t in chats[0]["tools"]} == {"end_call", "get_weather"}
    assert chats[0]["temperature"] == 0.3 and chats[0]["max_completion_tokens"] == 200
    tool_message = chats[2]["messages"][-1]
    assert tool_message["role"] == "tool" and json.loads(tool_message["content"]) == {
        "city": "Paris",
        "temperature_c": 21,
    }
    speech = [r["json"] for r in openai.requests("/v1/audio/speech")]
    assert [s["input"].strip() for s in speech] == [GREETING, HOURS, WEATHER]
    assert {(s["model"], s["voice"], s["response_format"]) for s in speech} == {("gpt-4o-mini-tts", "coral", "pcm")}
    assert speech[0]["instructions"].startswith("Warm, upbeat")
    usage = usage_by_role(result)
    assert usage["stt"].audio_seconds > 1 and usage["tts"].characters > 40 and usage["llm"].text_input_tokens > 100


async def test_cascade_deepgram_bedrock_elevenlabs_call(fakes: Callable[..., Any], calls: CallLog) -> None:
    deepgram = fakes(FakeDeepgram, transcripts=ASKED)
    bedrock = fakes(FakeBedrock, replies=REPLIES)
    elevenlabs = fakes(FakeElevenLabs)

    result = await call(
        config("cascade-deepgram-bedrock-elevenlabs", deepgram=deepgram, bedrock=bedrock, elevenlabs=elevenlabs)
    )

    assert_answered(result, calls)
    assert deepgram.errors == bedrock.errors == elevenlabs.errors == []
    (stream,) = deepgram.streams
    assert (
        stream.params
        | {
            "model": "nova-3",
            "language": "en",
            "encoding": "linear16",
            "sample_rate": "16000",
            "interim_results": "true",
            "endpointing": "300",
            "utterance_end_ms": "1000",
            "smart_format": "true",
            "keyterm": ["Harbor Bikes", "tune-up"],
        }
        == stream.params
    )
    assert len(deepgram.messages("Finalize")) >= 2  # one per utterance, at the VAD's stop
    bodies = [r["json"] for r in bedrock.requests()]
    assert [r["model_id"] for r in bedrock.requests()] == ["us.amazon.nova-lite-v1:0"] * 3
    assert bodies[0]["inferenceConfig"] == {"maxTokens": 200, "temperature": 0.3, "topP": 0.9}
    assert bodies[0]["system"][0]["text"].startswith("You are the receptionist of Harbor Bikes")
    assert {t["toolSpec"]["name"] for t in bodies[0]["toolConfig"]["tools"]} == {"end_call", "get_weather"}
    tool_result = bodies[2]["messages"][-1]["content"][0]["toolResult"]
    assert tool_result["content"] == [{"json": {"city": "Paris", "temperature_c": 21}}]
    assert bedrock.connections == 1  # one client for every turn (pipecat's service opens one per request)
    connect = elevenlabs.entries("ws_connect")[0]
    assert connect["query"] | {"model_id": "eleven_flash_v2_5", "output_format": "pcm_24000"} == connect["query"]
    assert connect["path"] == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/multi-stream-input"
    opening = next(m for m in elevenlabs.messages() if "voice_settings" in m)
    assert opening["voice_settings"] == {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0}
    spoken = " ".join(" ".join(c.text.split()) for s in elevenlabs.sockets for c in s.contexts.values())
    assert GREETING in spoken and HOURS in spoken
    usage = usage_by_role(result)
    assert usage["llm"].model == "us.amazon.nova-lite-v1:0" and usage["llm"].text_output_tokens > 0


async def test_realtime_openai_call(fakes: Callable[..., Any], calls: CallLog) -> None:
    realtime = fakes(FakeOpenAIRealtime, transcripts=ASKED, replies=[GREETING, *REPLIES])

    result = await call(config("realtime-openai", realtime=realtime))

    assert_answered(result, calls, heard=False)
    assert result.greeting.strip() == GREETING
    assert realtime.errors == []
    (session,) = realtime.sessions
    assert session.model == "gpt-realtime"
    assert session.config["instructions"].startswith("You are the receptionist of Harbor Bikes")
    audio = session.config["audio"]
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["format"] == audio["output"]["format"] == pcm
    assert audio["output"]["voice"] == "marin"
    # The vad section (phone_line preset, stop_secs 0.5) is the server VAD's configuration.
    turn_detection = audio["input"]["turn_detection"]
    assert turn_detection | {"type": "server_vad", "threshold": 0.65, "prefix_padding_ms": 200} == turn_detection
    assert turn_detection["silence_duration_ms"] == 500
    assert audio["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert {t["name"] for t in session.config["tools"]} == {"end_call", "get_weather"}
    outputs = [i for i in session.items if i["type"] == "function_call_output"]
    assert [json.loads(o["output"]) for o in outputs] == [{"city": "Paris", "temperature_c": 21}]
    heard = [i["content"][0]["transcript"] for i in session.items if i.get("role") == "user" and i.get("_audio_ms")]
    assert heard == ASKED  # each user turn is the caller's audio, transcribed; none is sent twice as text
    usage = {u.model: u for u in result.usage}
    session, transcription = usage.pop("gpt-realtime"), usage.pop("gpt-4o-mini-transcribe")
    assert usage == {}
    assert session.provider == "openai_realtime" and session.audio_input_tokens > 0 and session.audio_output_tokens > 0
    assert session.cost_usd > 0
    # The input transcription is billed apart, at its own model's prices (tokens as the fake's usage reports).
    billed = [e["usage"] for s in realtime.sessions for e in s.sent if e["type"].endswith("transcription.completed")]
    assert transcription.audio_input_tokens == sum(u["input_token_details"]["audio_tokens"] for u in billed) > 0
    assert transcription.text_output_tokens == sum(u["output_tokens"] for u in billed) > 0
    prices = openai_realtime.PROVIDER.prices["gpt-4o-mini-transcribe"]
    expected = (transcription.audio_input_tokens * 3.00 + transcription.text_output_tokens * 5.00) / 1e6
    assert prices.per_million_audio_input_tokens == 3.00 and transcription.cost_usd == pytest.approx(expected)
