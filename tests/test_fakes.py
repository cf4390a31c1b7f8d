"""Tests of the protocol-faithful fakes, driven by the vendors' own client code.

Each fake is proven in both directions: the real client (openai SDK, deepgram-sdk, websockets
with the vendor's documented messages, boto3) succeeds against it, and a deliberately wrong
client (bad key, misspelled event, broken framing, missing field) fails the way it would against
the real service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
import typing
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import openai
import pydantic
import pytest
import urllib3
import websockets
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1.types import (
    ListenV1Finalize,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

from tests.fakes import (
    Behaviour,
    FakeBedrock,
    FakeDeepgram,
    FakeElevenLabs,
    FakeOpenAI,
    FakeOpenAIRealtime,
    Reply,
    ToolCall,
    Turn,
    Utterance,
    audio,
    tool_then_answer,
)
from tests.fakes.bedrock import encode_message, event_frame
from tests.fakes.deepgram import frames

ROOT = Path(__file__).resolve().parents[1]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SERVER_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0])
}


def openai_client(fake: FakeOpenAI, key: str = "test-key") -> openai.AsyncOpenAI:
    """The real SDK client pointed at the fake (use it as `async with` so its pool is closed)."""
    return openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key=key, max_retries=0)


# --------------------------------------------------------------------------- shared plumbing


def test_g711_codecs_match_the_reference_implementation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    pcm = b"".join(int(v).to_bytes(2, "little", signed=True) for v in range(-32768, 32768, 7))
    every_code = bytes(range(256))
    assert audio.pcm16_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert audio.ulaw_to_pcm16(every_code) == audioop.ulaw2lin(every_code, 2)
    assert audio.pcm16_to_alaw(pcm) == audioop.lin2alaw(pcm, 2)
    assert audio.alaw_to_pcm16(every_code) == audioop.alaw2lin(every_code, 2)


def test_fake_runs_as_a_cli_subprocess() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "openai", "--api-key", "cli-key"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(20)
        info = json.loads(line[0])
        request = urllib.request.Request(info["url"] + "/v1/models", headers={"Authorization": "Bearer wrong"})  # noqa: S310 — http:// URL of a fake on 127.0.0.1
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 — http:// URL of a fake on 127.0.0.1
        assert err.value.code == 401
        assert json.loads(err.value.read())["error"]["code"] == "invalid_api_key"
        ok = urllib.request.Request(info["url"] + "/v1/models", headers={"Authorization": "Bearer cli-key"})  # noqa: S310 — http:// URL of a fake on 127.0.0.1
        assert json.loads(urllib.request.urlopen(ok, timeout=5).read())["object"] == "list"  # noqa: S310 — http:// URL of a fake on 127.0.0.1
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- OpenAI HTTP


@pytest.mark.asyncio
async def test_chat_streams_tool_calls_then_text_with_usage() -> None:
    script = tool_then_answer(ToolCall("get_weather", {"city": "Paris"}), "Paris: {result}")
    with FakeOpenAI(replies=script) as fake:
        async with openai_client(fake) as client:
            messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                tools=[WEATHER_TOOL],
                stream=True,
                stream_options={"include_usage": True},
            )
            calls: dict[int, dict[str, str]] = {}
            finish, usage, fragments = None, None, 0
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                    assert chunk.choices == []
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        fragments += 1
                        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] += delta.id or ""
                        call["name"] += (delta.function and delta.function.name) or ""
                        call["arguments"] += (delta.function and delta.function.arguments) or ""
            assert finish == "tool_calls"
            assert fragments >= 3, "arguments must arrive split across chunks"
            assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
            assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0

            messages += [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": calls[0]["id"],
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 24C"},
            ]
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                tools=[WEATHER_TOOL],
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Paris: sunny, 24C"
            assert fake.errors == []
            assert fake.connections == 1  # the SDK's pooled connection was reused

            # The raw wire format: `data: {json}\n\n` events, the usage chunk, then `data: [DONE]`.
            async with httpx.AsyncClient() as http:
                raw = await http.post(
                    fake.url + "/v1/chat/completions",
                    headers={"Authorization": "Bearer test-key"},
                    json={
                        "model": "gpt-4o",
                        "messages": [{"role": "user", "content": "hi"}],
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    },
                )
            assert raw.headers["content-type"].startswith("text/event-stream")
            events = raw.text.split("\n\n")
            assert events[-2:] == ["data: [DONE]", ""]
            chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
            assert all(e.startswith("data: ") for e in events[:-2])
            assert (
                chunks[0]["object"] == "chat.completion.chunk"
                and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            )
            assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) >= {
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "prompt_tokens_details",
            }


@pytest.mark.asyncio
async def test_chat_caching_is_reported_for_a_long_repeated_prefix() -> None:
    with FakeOpenAI(replies=lambda turn: f"turn {turn.index}") as fake:
        async with openai_client(fake) as client:
            messages = [{"role": "system", "content": "rules " * 1500}, {"role": "user", "content": "one"}]
            for expect_cached in (False, True):
                stream = await client.chat.completions.create(
                    model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
                )
                usage = next(iter([c.usage async for c in stream if c.usage]))
                cached = usage.prompt_tokens_details.cached_tokens
                assert (cached > 0) is expect_cached and cached % 128 == 0
                messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}]


@pytest.mark.asyncio
async def test_chat_wrong_key_rate_limit_and_server_errors_use_openai_shapes() -> None:
    with FakeOpenAI() as fake:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with openai_client(fake, "sk-wrong-key-123456") as wrong, openai_client(fake) as client:
            with pytest.raises(openai.AuthenticationError) as auth:
                await wrong.chat.completions.create(**body)
            assert auth.value.code == "invalid_api_key"
            assert "Incorrect API key provided" in auth.value.message

            fake.behaviour.fail_status, fake.behaviour.fail_count = 429, 1
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(**body)
            assert limited.value.code == "rate_limit_exceeded"
            assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
            stream = await client.chat.completions.create(**body)  # the failure was used up
            assert [c async for c in stream]

            fake.behaviour.fail_status, fake.behaviour.fail_count = 503, 1
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(**body)


@pytest.mark.asyncio
async def test_chat_rejects_malformed_requests() -> None:
    with FakeOpenAI() as fake:
        async with openai_client(fake) as client:
            user = {"role": "user", "content": "hi"}
            call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            cases = [
                (
                    {"messages": [user, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]},
                    "must be a response to a preceeding message with 'tool_calls'",
                ),
                (
                    {"messages": [user, {"role": "assistant", "tool_calls": [call]}, user]},
                    "did not have response messages: call_1",
                ),
                ({"messages": [{"role": "bot", "content": "hi"}]}, "Invalid value: 'bot'"),
                ({"messages": [user], "extra_body": {"temprature": 0.2}}, "Unrecognized request argument supplied"),
                ({"messages": []}, "empty array"),
            ]
            for extra, message in cases:
                with pytest.raises(openai.BadRequestError) as err:
                    await client.chat.completions.create(model="gpt-4o", stream=True, tools=[WEATHER_TOOL], **extra)
                assert message in err.value.message
            with pytest.raises(openai.BadRequestError, match="stream"):  # not streaming
                await client.chat.completions.create(model="gpt-4o", messages=[user])
            wrong_base = openai.AsyncOpenAI(base_url=fake.url, api_key="test-key", max_retries=0)  # forgot /v1
            async with wrong_base:
                with pytest.raises(openai.NotFoundError, match="Invalid URL"):
                    await wrong_base.chat.completions.create(model="gpt-4o", messages=[user], stream=True)
            assert len(fake.errors) == len(cases) + 2


@pytest.mark.asyncio
async def test_chat_stream_delays_and_cut_connection() -> None:
    with FakeOpenAI(Behaviour(first_byte_delay_s=0.3), replies=["one two three four five six"]) as fake:
        async with openai_client(fake) as client:
            started = time.monotonic()
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
            )
            [c async for c in stream]
            assert time.monotonic() - started >= 0.3
            fake.behaviour.first_byte_delay_s, fake.behaviour.cut_after_n_chunks = 0, 2
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
            )
            received = []
            with pytest.raises((httpx.HTTPError, openai.APIError)):
                async for chunk in stream:
                    received.append(chunk)
            assert len(received) == 2


@pytest.mark.asyncio
async def test_transcriptions_multipart_formats_and_script() -> None:
    heard: list[Utterance] = []

    def transcribe(utterance: Utterance) -> str:
        heard.append(utterance)
        return f"{utterance.duration_s:.1f} seconds of audio"

    with FakeOpenAI(transcripts=transcribe) as fake:
        async with openai_client(fake) as client:
            wav = audio.wav_bytes(audio.tone(1.5, 16000), 16000)
            result = await client.audio.transcriptions.create(
                file=("a.wav", wav, "audio/wav"),
                model="gpt-transcribe",
                language="en",
                response_format="json",
                include=["logprobs"],
            )
            assert result.text == "1.5 seconds of audio"
            assert result.logprobs and result.usage.type == "tokens"
            assert heard[0].sample_rate == 16000
            form = fake.requests("/v1/audio/transcriptions")[-1]["form"]
            assert form == {
                "model": "gpt-transcribe",
                "language": "en",
                "response_format": "json",
                "include": ["logprobs"],
            }
            text = await client.audio.transcriptions.create(
                file=("a.wav", wav, "audio/wav"), model="gpt-transcribe", response_format="text"
            )
            assert text.strip() == "1.5 seconds of audio"
            verbose = await client.audio.transcriptions.create(
                file=("a.wav", wav, "audio/wav"), model="whisper-1", response_format="verbose_json"
            )
            assert verbose.segments and verbose.duration == pytest.approx(1.5)
            stream = await client.audio.transcriptions.create(
                file=("a.wav", wav, "audio/wav"), model="gpt-transcribe", stream=True
            )
            events = [e async for e in stream]
            assert events[-1].type == "transcript.text.done" and events[-1].text == "1.5 seconds of audio"
            assert {e.type for e in events[:-1]} == {"transcript.text.delta"}

            with pytest.raises(openai.BadRequestError, match="Invalid file format"):  # raw PCM, no container
                await client.audio.transcriptions.create(file=("a.pcm", audio.tone(0.5, 16000)), model="gpt-transcribe")
            with pytest.raises(openai.BadRequestError, match="not compatible"):
                await client.audio.transcriptions.create(
                    file=("a.wav", wav), model="gpt-transcribe", response_format="verbose_json"
                )


@pytest.mark.asyncio
async def test_speech_streams_deterministic_pcm() -> None:
    with FakeOpenAI() as fake:
        async with openai_client(fake) as client:
            text = "Hello from the fake speech endpoint."
            async with client.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts",
                voice="alloy",
                input=text,
                response_format="pcm",
                instructions="Cheerful",
            ) as response:
                pcm = b"".join([chunk async for chunk in response.iter_bytes()])
            assert len(pcm) == round(audio.speech_duration_s(text) * 24000) * 2
            assert fake.requests("/v1/audio/speech")[-1]["json"]["instructions"] == "Cheerful"
            wav = await client.audio.speech.create(
                model="gpt-4o-mini-tts", voice="alloy", input=text, response_format="wav"
            )
            assert audio.parse_wav(wav.content) == (pcm, 24000, 1)
            with pytest.raises(openai.BadRequestError, match="Invalid value: 'robot'"):
                await client.audio.speech.create(
                    model="gpt-4o-mini-tts", voice="robot", input=text, response_format="pcm"
                )
            with pytest.raises(openai.BadRequestError, match="Instructions are not supported"):
                await client.audio.speech.create(
                    model="tts-1", voice="alloy", input=text, response_format="pcm", instructions="x"
                )


# --------------------------------------------------------------------------- OpenAI Realtime


def rt_event(raw: bytes | str) -> dict[str, Any]:
    """Parse a server event and validate it strictly with the openai SDK's own model for its type."""
    event = json.loads(raw)
    SERVER_EVENTS[event["type"]].model_validate(event)
    return event


async def rt_until(conn: Any, last: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Receive (and validate) server events up to and including the first of type `last`."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not events or events[-1]["type"] != last:
        recv = conn.recv_bytes() if hasattr(conn, "recv_bytes") else conn.recv()
        events.append(rt_event(await asyncio.wait_for(recv, max(0.01, deadline - time.monotonic()))))
    return events


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.asyncio
async def test_realtime_sdk_voice_turn_truncate_and_function_call() -> None:
    replies: list[Any] = [
        "Hello there, how can I help?",
        ToolCall("get_weather", {"city": "Oslo"}),
        lambda turn: Reply(text=f"It is {turn.tool_results[-1].output} in Oslo."),
    ]
    with FakeOpenAIRealtime(replies=replies, transcripts=["what is the weather"]) as fake:
        async with openai.AsyncOpenAI(
            api_key="test-key", websocket_base_url=fake.ws_url + "/v1", max_retries=0
        ) as client:
            async with client.realtime.connect(model="gpt-realtime") as conn:
                created = await rt_until(conn, "session.created")
                assert created[0]["session"]["type"] == "realtime"
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "instructions": "Be brief.",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "gpt-4o-mini-transcribe"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                            },
                            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
                        },
                        "tools": [
                            {
                                "type": "function",
                                "name": "get_weather",
                                "parameters": WEATHER_TOOL["function"]["parameters"],
                            }
                        ],
                    }
                )
                updated = await rt_until(conn, "session.updated")
                assert updated[-1]["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300

                speech = audio.tone(0.8, 24000) + audio.silence(0.5, 24000)
                for chunk in frames(speech, 24000, 40):
                    await conn.input_audio_buffer.append(audio=b64(chunk))
                events = await rt_until(conn, "response.done")
                types = [e["type"] for e in events]
                for expected in (
                    "input_audio_buffer.speech_started",
                    "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed",
                    "conversation.item.added",
                    "conversation.item.input_audio_transcription.completed",
                    "response.created",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_audio.delta",
                    "response.output_audio_transcript.delta",
                    "response.output_audio.done",
                    "response.output_audio_transcript.done",
                    "response.content_part.done",
                    "response.output_item.done",
                ):
                    assert expected in types
                assert types.index("input_audio_buffer.speech_started") < types.index("response.created")
                transcript = next(e for e in events if e["type"].endswith("transcription.completed"))["transcript"]
                assert transcript == "what is the weather"
                pcm = b"".join(
                    base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
                )
                assert len(pcm) == round(audio.speech_duration_s(replies[0]) * 24000) * 2
                done = events[-1]["response"]
                assert done["status"] == "completed"
                usage = done["usage"]
                assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
                assert set(usage["input_token_details"]) >= {
                    "text_tokens",
                    "audio_tokens",
                    "cached_tokens",
                    "cached_tokens_details",
                }
                assert usage["output_token_details"]["audio_tokens"] > 0

                item_id = done["output"][0]["id"]
                await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=400)
                truncated = await rt_until(conn, "conversation.item.truncated")
                assert truncated[-1]["audio_end_ms"] == 400
                assert fake.truncations == [
                    {"item_id": item_id, "content_index": 0, "audio_end_ms": 400, "audio_sent_ms": 1400}
                ]

                await conn.response.create()
                events = await rt_until(conn, "response.done")
                call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
                assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Oslo"}
                assert events[-1]["response"]["output"][0]["type"] == "function_call"
                await conn.conversation.item.create(
                    item={"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
                )
                await rt_until(conn, "conversation.item.done")
                await conn.response.create(response={"output_modalities": ["text"]})
                events = await rt_until(conn, "response.done")
                assert (
                    next(e for e in events if e["type"] == "response.output_text.done")["text"]
                    == "It is sunny in Oslo."
                )
            assert fake.errors == []


@pytest.mark.asyncio
async def test_realtime_barge_in_cancels_and_truncate_is_checked() -> None:
    long_reply = "This is a long answer that keeps going so that the caller can interrupt it midway."
    with FakeOpenAIRealtime(Behaviour(per_chunk_delay_s=0.02), replies=[long_reply]) as fake:
        url = fake.ws_url + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer test-key"}) as ws:
            await rt_until(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            events = await rt_until(ws, "response.output_audio.delta")
            item_id = events[-1]["item_id"]
            speech = audio.tone(0.3, 24000)
            for chunk in frames(speech, 24000, 100):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(chunk)}))
            events = await rt_until(ws, "response.done")
            assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
            done = events[-1]["response"]
            assert done["status"] == "cancelled"
            assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            sent_ms = fake.sessions[0].audio_ms[item_id]
            assert 0 < sent_ms < audio.speech_duration_s(long_reply) * 1000

            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": item_id,
                        "content_index": 0,
                        "audio_end_ms": sent_ms + 500,
                    }
                )
            )
            error = (await rt_until(ws, "error"))[-1]["error"]
            assert error["code"] == "invalid_value" and error["param"] == "audio_end_ms"
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": item_id,
                        "content_index": 0,
                        "audio_end_ms": sent_ms,
                    }
                )
            )
            assert (await rt_until(ws, "conversation.item.truncated"))[-1]["item_id"] == item_id

            await ws.send(json.dumps({"type": "response.create"}))
            await rt_until(ws, "response.output_audio.delta")
            await ws.send(json.dumps({"type": "response.cancel"}))
            done = (await rt_until(ws, "response.done"))[-1]["response"]
            assert done["status_details"]["reason"] == "client_cancelled"
            await ws.send(json.dumps({"type": "response.cancel", "event_id": "evt_1"}))
            error = (await rt_until(ws, "error"))[-1]["error"]
            assert error["code"] == "response_cancel_not_active" and error["event_id"] == "evt_1"


@pytest.mark.asyncio
async def test_realtime_rejects_beta_shapes_and_unknown_events() -> None:
    with FakeOpenAIRealtime() as fake:
        url = fake.ws_url + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer test-key"}) as ws:
            await rt_until(ws, "session.created")
            bad_events = [
                (
                    {"type": "session.update", "session": {"instructions": "hi"}},
                    "missing_required_parameter",
                    "session.type",
                ),
                (
                    {"type": "session.update", "session": {"type": "realtime", "modalities": ["audio"]}},
                    "unknown_parameter",
                    "session.modalities",
                ),
                (
                    {"type": "session.update", "session": {"type": "realtime", "input_audio_format": "pcm16"}},
                    "unknown_parameter",
                    "session.input_audio_format",
                ),
                (
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                        },
                    },
                    "invalid_value",
                    "session.audio.input.format.rate",
                ),
                ({"type": "response.creat"}, "invalid_value", "type"),
                ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
                (
                    {
                        "type": "conversation.item.create",
                        "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "beta"}]},
                    },
                    "invalid_value",
                    "item.content[0].type",
                ),
                (
                    {
                        "type": "conversation.item.create",
                        "item": {"type": "function_call_output", "call_id": "nope", "output": "x"},
                    },
                    "invalid_value",
                    "item.call_id",
                ),
                ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty", None),
            ]
            for event, code, param in bad_events:
                await ws.send(json.dumps({**event, "event_id": "client_evt"}))
                error = (await rt_until(ws, "error"))[-1]["error"]
                assert (error["code"], error["param"], error["event_id"]) == (code, param, "client_evt"), event
            assert len(fake.errors) == len(bad_events)
        fake.behaviour.fail_status = 503
        with pytest.raises(websockets.InvalidStatus) as rejected:
            await websockets.connect(url, additional_headers={"Authorization": "Bearer test-key"})
        assert rejected.value.response.status_code == 503
        assert json.loads(rejected.value.response.body)["error"]["type"] == "server_error"
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer wrong"}) as ws:
            error = rt_event(await asyncio.wait_for(ws.recv(), 5))
            assert error["error"]["code"] == "invalid_api_key"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 3000


@pytest.mark.asyncio
async def test_realtime_pcmu_in_and_out() -> None:
    with FakeOpenAIRealtime(replies=["Telephone audio."]) as fake:
        url = fake.ws_url + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer test-key"}) as ws:
            await rt_until(ws, "session.created")
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {
                                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                                "output": {"format": {"type": "audio/pcmu"}},
                            },
                        },
                    }
                )
            )
            await rt_until(ws, "session.updated")
            ulaw = audio.pcm16_to_ulaw(audio.tone(0.5, 8000) + audio.silence(0.7, 8000))
            for chunk in frames(ulaw, 8000, 20, bytes_per_sample=1):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(chunk)}))
            events = await rt_until(ws, "response.done")
            stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
            assert 400 <= stopped["audio_end_ms"] <= 1100
            out = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
            assert len(out) == round(audio.speech_duration_s("Telephone audio.") * 8000)  # one byte per sample
        assert fake.errors == []


# --------------------------------------------------------------------------- Deepgram


def deepgram_client(fake: FakeDeepgram, key: str = "test-key") -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(base=fake.url, production=fake.ws_url, agent=fake.ws_url, agent_rest=fake.url)
    return AsyncDeepgramClient(api_key=key, environment=env)


DEEPGRAM_TYPES: dict[str, type[pydantic.BaseModel]] = {
    "Results": ListenV1Results,
    "SpeechStarted": ListenV1SpeechStarted,
    "UtteranceEnd": ListenV1UtteranceEnd,
    "Metadata": ListenV1Metadata,
}


@pytest.mark.asyncio
async def test_deepgram_sdk_live_transcription() -> None:
    with FakeDeepgram(transcripts=["hello there", "second utterance"]) as fake:
        received: list[Any] = []
        async with deepgram_client(fake).listen.v1.connect(
            model="nova-3",
            encoding="linear16",
            sample_rate="16000",
            channels="1",
            interim_results="true",
            endpointing="300",
            utterance_end_ms="1000",
            vad_events="true",
            smart_format="true",
            keyterm=["voxpipe"],
        ) as conn:
            pcm = audio.tone(1.0, 16000) + audio.silence(1.5, 16000) + audio.tone(0.5, 16000)
            for chunk in frames(pcm, 16000):
                await conn.send_media(chunk)
            await conn.send_finalize(ListenV1Finalize(type="Finalize"))
            await conn.send_close_stream()
            async for message in conn:
                received.append(message)
        raw = fake.streams[0].sent
        for message in raw:  # every message validates strictly against deepgram-sdk's own types
            DEEPGRAM_TYPES[message["type"]].model_validate(message)
        assert [type(m).__name__ for m in received] == [f"ListenV1{m['type']}" for m in raw]
        kinds = [(m["type"], m.get("is_final"), m.get("speech_final"), m.get("from_finalize")) for m in raw]
        assert kinds[0] == ("SpeechStarted", None, None, None)
        assert ("Results", False, False, False) in kinds  # interim
        finals = [m for m in raw if m["type"] == "Results" and m["is_final"]]
        assert finals[0]["speech_final"] is True
        assert finals[0]["channel"]["alternatives"][0]["transcript"] == "hello there"
        assert [w["punctuated_word"] for w in finals[0]["channel"]["alternatives"][0]["words"]] == ["hello", "there"]
        assert "UtteranceEnd" in [m["type"] for m in raw]
        assert finals[1]["from_finalize"] is True
        assert finals[1]["channel"]["alternatives"][0]["transcript"] == "second utterance"
        assert raw[-1]["type"] == "Metadata" and raw[-1]["duration"] == pytest.approx(3.0)
        assert fake.streams[0].close_code == 1000
        assert fake.entries("ws_connect")[0]["headers"]["authorization"] == "Token test-key"
        assert fake.errors == []

        with pytest.raises(ApiError) as rejected:
            async with deepgram_client(fake, "wrong").listen.v1.connect(
                model="nova-3", encoding="linear16", sample_rate="16000"
            ):
                pass
        assert rejected.value.status_code == 401


@pytest.mark.asyncio
async def test_deepgram_raw_protocol_mulaw_keepalive_and_errors() -> None:
    with FakeDeepgram(inactivity_timeout_s=0.4, transcripts=["phone call"]) as fake:
        url = fake.ws_url + "/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000&channels=1&endpointing=200"
        headers = {"Authorization": "Token test-key"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            for chunk in frames(audio.pcm16_to_ulaw(audio.tone(0.6, 8000) + audio.silence(0.4, 8000)), 8000, 20, 1):
                await ws.send(chunk)
            final = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert final["is_final"] and final["speech_final"]
            assert final["channel"]["alternatives"][0]["transcript"] == "phone call"
            for _ in range(3):  # KeepAlive holds the socket open past the inactivity timeout
                await asyncio.sleep(0.2)
                await ws.send(json.dumps({"type": "KeepAlive"}))
            await ws.send(json.dumps({"type": "Finalise"}))  # misspelled
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert error["type"] == "Error" and error["variant"] == "SchemaError"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

        async with websockets.connect(url, additional_headers=headers) as ws:  # silence on the line
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            assert "net0001" in closed.value.rcvd.reason

        fake.behaviour.fail_status = 429
        with pytest.raises(websockets.InvalidStatus) as rejected:
            await websockets.connect(url, additional_headers=headers)
        assert rejected.value.response.status_code == 429
        assert json.loads(rejected.value.response.body)["err_code"] == "TOO_MANY_REQUESTS"
        for bad_headers, bad_url, status in [
            ({"Authorization": "Bearer test-key"}, url, 401),  # an API key is a Token, not a Bearer token
            ({}, url, 401),
            (headers, url.replace("mulaw", "mp3"), 400),
            (headers, url.replace("&sample_rate=8000", ""), 400),
            (headers, url + "&utterance_end_ms=1000", 400),  # needs interim_results=true
            (headers, url.replace("nova-3", "nova-2") + "&keyterm=voxpipe", 400),
        ]:
            with pytest.raises(websockets.InvalidStatus) as rejected:
                async with websockets.connect(bad_url, additional_headers=bad_headers):
                    pass
            assert rejected.value.response.status_code == status
            assert "err_code" in json.loads(rejected.value.response.body)
        assert len(fake.errors) == 7


# --------------------------------------------------------------------------- ElevenLabs


async def el_collect(ws: Any, until: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not messages or not until(messages[-1]):
        messages.append(json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))))
    return messages


@pytest.mark.asyncio
async def test_elevenlabs_stream_input() -> None:
    with FakeElevenLabs(Behaviour(api_key="el-key")) as fake:
        url = fake.ws_url + "/v1/text-to-speech/voice1/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_16000"
        async with websockets.connect(url, additional_headers={"xi-api-key": "el-key"}) as ws:
            await ws.send(
                json.dumps(
                    {
                        "text": " ",
                        "voice_settings": {"stability": 0.5, "similarity_boost": 0.8},
                        "generation_config": {"chunk_length_schedule": [50, 120]},
                    }
                )
            )
            await ws.send(json.dumps({"text": "Hello there. ", "try_trigger_generation": True}))
            await ws.send(json.dumps({"text": "Goodbye now. ", "flush": True}))
            await ws.send(json.dumps({"text": ""}))
            messages = await el_collect(ws, lambda m: m.get("isFinal") is True)
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), 5)
        chunks = messages[:-1]
        pcm = b"".join(base64.b64decode(m["audio"]) for m in chunks)
        assert "".join("".join(m["alignment"]["chars"]) for m in chunks) == "Hello there. Goodbye now. "
        assert len(pcm) == len("Hello there. Goodbye now. ") * 800 * 2  # 50 ms per char at 16 kHz
        assert all(m["alignment"]["charStartTimesMs"][0] == 0 for m in chunks)
        assert fake.errors == []


@pytest.mark.asyncio
async def test_elevenlabs_multi_stream_close_context_stops_audio() -> None:
    with FakeElevenLabs(Behaviour(api_key="el-key", per_chunk_delay_s=0.05)) as fake:
        url = (
            fake.ws_url + "/v1/text-to-speech/voice1/multi-stream-input?model_id=eleven_flash_v2_5"
            "&output_format=ulaw_8000&auto_mode=true"
        )
        long_text = "This reply is long enough to take several chunks of audio before it is done. " * 2
        async with websockets.connect(url, additional_headers={"xi-api-key": "el-key"}) as ws:
            await ws.send(json.dumps({"text": " ", "context_id": "turn1", "voice_settings": {"speed": 1.1}}))
            await ws.send(json.dumps({"text": long_text, "context_id": "turn1"}))
            first = await el_collect(ws, lambda m: "audio" in m)
            await ws.send(json.dumps({"context_id": "turn1", "close_context": True}))  # barge-in
            await el_collect(ws, lambda m: m.get("isFinal") is True and m.get("contextId") == "turn1")
            await ws.send(json.dumps({"text": " ", "context_id": "turn2"}))
            await ws.send(json.dumps({"text": "Short answer.", "context_id": "turn2"}))
            await ws.send(json.dumps({"context_id": "turn2", "flush": True}))
            await ws.send(json.dumps({"context_id": "turn2", "close_context": True}))
            turn2 = await el_collect(ws, lambda m: m.get("isFinal") is True and m.get("contextId") == "turn2")
            assert all(m.get("contextId") == "turn2" for m in turn2), "no turn1 audio after its close"
            ulaw = b"".join(base64.b64decode(m["audio"]) for m in turn2 if "audio" in m)
            assert len(ulaw) == len("Short answer.") * 400  # 8 kHz, one byte per sample
            await ws.send(json.dumps({"close_socket": True}))
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), 5)
        assert first[0]["contextId"] == "turn1"
        closed = {c["context_id"]: c for c in fake.closed_contexts}
        assert closed["turn1"]["cut_short"] and not closed["turn1"]["flushed"]
        assert closed["turn2"]["flushed"] and not closed["turn2"]["cut_short"]
        assert fake.errors == []


@pytest.mark.asyncio
async def test_elevenlabs_rejects_malformed_clients() -> None:
    with FakeElevenLabs(Behaviour(api_key="el-key")) as fake:
        base = fake.ws_url + "/v1/text-to-speech/voice1/"
        query = "?model_id=eleven_flash_v2_5&output_format=pcm_24000"
        key = {"xi-api-key": "el-key"}
        cases: list[tuple[str, dict[str, str], list[dict[str, Any]], str]] = [
            ("stream-input", key, [{"text": "Hello"}], "single space"),
            ("stream-input", {"xi-api-key": "wrong"}, [], "Invalid API key"),
            ("stream-input", key, [{"text": " "}, {"text": "hi", "voice_settings": {"stability": 2}}], "Unexpected"),
            (
                "multi-stream-input",
                key,
                [{"text": " ", "context_id": "a"}, {"text": "hi", "context_id": "a", "voice_settings": {"speed": 1.0}}],
                "may only be sent when context 'a' is initialised",
            ),
            ("multi-stream-input", key, [{"text": " ", "context_id": "a", "voice_settings": {"speed": 3.0}}], "speed"),
            ("multi-stream-input", key, [{"text": " ", "context_id": c} for c in "abcdef"], "max_active_conversations"),
        ]
        for path, headers, messages, reason in cases:
            async with websockets.connect(base + path + query, additional_headers=headers) as ws:
                for message in messages:
                    await ws.send(json.dumps(message))
                with pytest.raises(websockets.ConnectionClosedError) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                assert reason in closed.value.rcvd.reason
        with pytest.raises(websockets.InvalidStatus) as rejected:
            async with websockets.connect(base + "stream-input?output_format=pcm_12345", additional_headers=key):
                pass
        assert rejected.value.response.status_code == 422
        fake.behaviour.fail_status = 429
        with pytest.raises(websockets.InvalidStatus) as rejected:
            await websockets.connect(base + "stream-input" + query, additional_headers=key)
        assert rejected.value.response.status_code == 429
        async with websockets.connect(
            base + "stream-input" + query + "&inactivity_timeout=1", additional_headers=key
        ) as ws:
            await ws.send(json.dumps({"text": " "}))
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            reason = closed.value.rcvd.reason  # type: ignore[union-attr]
            assert reason.startswith("Have not received a new text input within the timeout of 1 seconds")
            assert len(reason.encode()) == 123  # ElevenLabs' message, cut at the close-reason limit
        assert len(fake.errors) == len(cases) + 1


# --------------------------------------------------------------------------- Bedrock


def drain(response: dict[str, Any]) -> list[dict[str, Any]]:
    """All parsed events of a converse_stream response (the stream is closed even on errors)."""
    stream = response["stream"]
    try:
        return list(stream)
    finally:
        stream.close()


def bedrock_client(fake: FakeBedrock, key: str = "x") -> Any:
    """boto3's real bedrock-runtime client pointed at the fake, without retries."""
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="y",  # noqa: S106 — a made-up credential for a local fake; nothing real
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_event_stream_encoding_is_parsed_by_botocore() -> None:
    buffer = EventStreamBuffer()
    payload = json.dumps({"contentBlockIndex": 0, "delta": {"text": "héllo"}}).encode()
    headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
    raw = encode_message(headers, payload) + event_frame("messageStop", {"stopReason": "end_turn"})
    buffer.add_data(raw[:7])  # framing must survive arbitrary splits
    buffer.add_data(raw[7:])
    first, second = list(buffer)
    assert first.headers == headers and first.payload == payload
    assert first.prelude.total_length == len(encode_message(headers, payload))
    assert second.headers[":event-type"] == "messageStop"
    assert json.loads(second.payload)["stopReason"] == "end_turn"
    corrupted = EventStreamBuffer()
    corrupted.add_data(encode_message(headers, payload, corrupt_crc=True))
    with pytest.raises(ChecksumMismatch):
        list(corrupted)


def test_bedrock_converse_stream_with_tools_reuses_one_connection() -> None:
    script = tool_then_answer(ToolCall("get_weather", {"city": "Lima"}), "Lima is {result}.")
    with (
        FakeBedrock(Behaviour(api_key="x"), replies=script, region="us-east-1") as fake,
        contextlib.closing(bedrock_client(fake)) as client,
    ):
        tools = {
            "tools": [
                {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}},
                {"cachePoint": {"type": "default"}},
            ]
        }
        messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": "Weather in Lima?"}]}]
        response = client.converse_stream(
            modelId="anthropic.claude-3-5-haiku",
            messages=messages,
            toolConfig=tools,
            system=[{"text": "Be brief."}],
            inferenceConfig={"maxTokens": 200},
        )
        events = drain(response)
        assert [next(iter(e)) for e in events] == [
            "messageStart",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata",
        ]
        start = events[1]["contentBlockStart"]["start"]["toolUse"]
        arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events[2:5])
        assert start["name"] == "get_weather" and json.loads(arguments) == {"city": "Lima"}
        assert events[6]["messageStop"]["stopReason"] == "tool_use"
        usage = events[7]["metadata"]["usage"]
        assert usage["cacheWriteInputTokens"] > 0 and usage["cacheReadInputTokens"] == 0
        assert set(events[7]["metadata"]["metrics"]) == {"latencyMs"}

        messages += [
            {
                "role": "assistant",
                "content": [
                    {
                        "toolUse": {
                            "toolUseId": start["toolUseId"],
                            "name": "get_weather",
                            "input": json.loads(arguments),
                        }
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": start["toolUseId"], "content": [{"json": {"sky": "cloudy"}}]}}
                ],
            },
        ]
        events = list(
            client.converse_stream(
                modelId="anthropic.claude-3-5-haiku",
                messages=messages,
                toolConfig=tools,
                system=[{"text": "Be brief."}],
            )["stream"]
        )
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
        assert text == 'Lima is {"sky": "cloudy"}.'
        assert events[-1]["metadata"]["usage"]["cacheReadInputTokens"] > 0
        auth = fake.requests()[-1]["headers"]["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=x/") and "/us-east-1/bedrock/aws4_request" in auth
        assert fake.connections == 1
        assert fake.errors == []


def test_bedrock_errors_before_and_inside_the_stream() -> None:
    with FakeBedrock(Behaviour(api_key="x")) as fake, contextlib.closing(bedrock_client(fake)) as client:
        hello = [{"role": "user", "content": [{"text": "hi"}]}]
        fake.behaviour.fail_status = 429
        with pytest.raises(client.exceptions.ThrottlingException):
            client.converse_stream(modelId="m", messages=hello)
        fake.behaviour.fail_status, fake.behaviour.fail_count = 403, 1
        with pytest.raises(client.exceptions.AccessDeniedException):
            client.converse_stream(modelId="m", messages=hello)

        invalid = [
            [{"role": "assistant", "content": [{"text": "hi"}]}],
            hello + hello,
            [{"role": "user", "content": [{"text": "  "}]}],
            [
                *hello,
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
            ],
        ]
        for messages in invalid:
            with pytest.raises(client.exceptions.ValidationException):
                client.converse_stream(modelId="m", messages=messages)

        fake.behaviour.stream_exception = "modelStreamErrorException"
        with pytest.raises(botocore.exceptions.EventStreamError, match="modelStreamErrorException"):
            drain(client.converse_stream(modelId="m", messages=hello))
        fake.behaviour.stream_exception, fake.behaviour.corrupt_crc = None, True
        with pytest.raises(ChecksumMismatch):
            drain(client.converse_stream(modelId="m", messages=hello))
        fake.behaviour.corrupt_crc, fake.behaviour.cut_after_n_chunks = False, 2
        with pytest.raises((botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError)):  # connection cut
            drain(client.converse_stream(modelId="m", messages=hello))
        fake.behaviour.cut_after_n_chunks = None

        stranger = bedrock_client(fake, "someone-else")
        with contextlib.closing(stranger), pytest.raises(botocore.exceptions.ClientError, match="Unrecognized"):
            stranger.converse_stream(modelId="m", messages=hello)
        body = {"messages": hello}
        for headers, error_type in [
            ({}, "MissingAuthenticationTokenException"),
            ({"Authorization": "Bearer abc"}, "IncompleteSignatureException"),
            (
                {
                    "X-Amz-Date": "20250101T000000Z",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=x/20250101/us-east-1/"
                    "bedrock-runtime/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
                },
                "InvalidSignatureException",
            ),
        ]:
            raw = httpx.post(fake.url + "/model/m/converse-stream", json=body, headers=headers)
            assert raw.status_code == 403
            assert raw.headers["x-amzn-ErrorType"].startswith(error_type + ":")
            assert "message" in raw.json()
        assert len(fake.errors) == len(invalid) + 4


def test_turn_view_is_the_same_across_vendors() -> None:
    seen: list[Turn] = []

    def script(turn: Turn) -> str:
        seen.append(turn)
        return "ok"

    with FakeBedrock(Behaviour(api_key="x"), replies=script) as fake:
        list(
            bedrock_client(fake).converse_stream(
                modelId="m",
                messages=[
                    {"role": "user", "content": [{"text": "first"}]},
                    {"role": "assistant", "content": [{"text": "reply"}]},
                    {"role": "user", "content": [{"text": "second"}]},
                ],
            )["stream"]
        )
    assert seen[0].index == 0 and seen[0].last_user_text == "second" and seen[0].tool_results == []
