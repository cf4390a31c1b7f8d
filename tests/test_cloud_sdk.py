"""The public provider SDK (``voxpipe.providers.cloud``) as a third-party plugin uses it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import LLMTextFrame, TTSAudioRawFrame
from pipecat.services.settings import NOT_GIVEN, LLMSettings
from pipecat.utils.errors import ErrorCategory

from tests.cloud_fixtures import build, drive_service
from tests.test_cloud_failures import ask_llm
from voxpipe.audio import g711
from voxpipe.providers.cloud import decode_mulaw, llm_settings

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins" / "voxpipe-echo"))
from voxpipe_echo import plugin as echo


def test_llm_settings_gives_every_field_pipecat_requires() -> None:
    settings = llm_settings("m-1", "Be brief.", temperature=0.3)
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(LLMSettings)}
    assert NOT_GIVEN not in values.values()  # store mode: every field a real value
    assert (settings.model, settings.system_instruction, settings.temperature, settings.top_k) == (
        "m-1",
        "Be brief.",
        0.3,
        None,
    )
    with pytest.raises(TypeError, match=r"unknown field.*'temprature'"):
        llm_settings("m-1", "Be brief.", temprature=0.3)


def test_decode_mulaw_gives_the_pcm16_frame_at_8_khz() -> None:
    pcm = bytes(range(256)) * 4
    frame = decode_mulaw(TTSAudioRawFrame(g711.encode(pcm), 8000, 1, context_id="c1"))
    assert (frame.sample_rate, frame.context_id, len(frame.audio)) == (8000, "c1", len(pcm))
    assert g711.encode(frame.audio) == g711.encode(pcm)  # decoding loses nothing G.711 carried


async def test_a_plugin_honours_response_timeout_secs_with_the_sdk_watchdog() -> None:
    """The example ``echo`` plugin, slower than its ``response_timeout_secs``: a classified error, in time."""
    service = build(echo.PROVIDER, {"latency_secs": 2.0, "response_timeout_secs": 0.3})

    run = await drive_service(service, ask_llm, lambda run: bool(run.errors), timeout=3.0)

    (error,) = run.errors
    assert error.category == ErrorCategory.CONNECTIVITY and error.processor is service
    assert error.error == "no first token within 0.3 s (response_timeout_secs)"
    assert 0.3 <= run.error_secs[0] < 0.8


async def test_a_prompt_plugin_answers_without_an_error() -> None:
    service = build(echo.PROVIDER, {"latency_secs": 0.05, "response_timeout_secs": 0.3})

    run = await drive_service(service, ask_llm, lambda run: bool(run.of(LLMTextFrame)), timeout=3.0)

    assert run.errors == [] and "".join(f.text for f in run.of(LLMTextFrame)) == "You said: When do you open?"


def test_a_realtime_sessions_transcription_is_billed_as_its_own_model() -> None:
    """Usage the session reports under its transcription model is priced by that model's entry, apart."""
    from pipecat.metrics.metrics import STTUsageMetricsData
    from pipecat.observers.service_metrics_observer import ServiceUsageKind, ServiceUsageRecord

    from voxpipe.pipeline.metering import CallMeter, ServiceRef
    from voxpipe.providers.builtin import openai_realtime
    from voxpipe.providers.cloud.realtime import transcription_usage

    whisper = transcription_usage("rt", "whisper-1", {"type": "duration", "seconds": 30.0})
    assert isinstance(whisper, STTUsageMetricsData) and whisper.value.audio_seconds == 30.0
    meter = CallMeter({"rt": ServiceRef("realtime", openai_realtime.PROVIDER, "gpt-realtime")})
    common = {"processor": "rt", "timestamp": 0.0}
    meter.records += [
        ServiceUsageRecord(
            kind=ServiceUsageKind.LLM, model="gpt-realtime", prompt_tokens=1000, completion_tokens=0, **common
        ),
        ServiceUsageRecord(kind=ServiceUsageKind.STT, model="whisper-1", audio_seconds=30.0, **common),
    ]
    usage = {u.model: u for u in meter.usage()}
    assert usage["whisper-1"].cost_usd == pytest.approx(0.003)  # $0.006 a minute
    assert usage["gpt-realtime"].cost_usd == pytest.approx(1000 * 4.00 / 1e6)


async def test_a_malformed_realtime_event_is_skipped_and_the_session_reads_on() -> None:
    from voxpipe.providers.cloud.realtime import _CheckedSocket

    class Socket:
        def __init__(self, messages: list[str]) -> None:
            self.messages = messages

        async def __aiter__(self) -> Any:
            for message in self.messages:
                yield message

    started = '{"type": "input_audio_buffer.speech_started", "event_id": "e2", "audio_start_ms": 0, "item_id": "i1"}'
    transcribed = (
        '{"type": "conversation.item.input_audio_transcription.completed", "event_id": "e3", "item_id": "i1", '
        '"content_index": 0, "transcript": "hi", "usage": {"type": "tokens", "input_tokens": 3, "output_tokens": 1}}'
    )
    malformed = ['{"type": "input_audio_buffer.speech_started"', '{"type": "input_audio_buffer.speech_started"}']
    usage: dict[str, Any] = {}

    read = [message async for message in _CheckedSocket(Socket([*malformed, started, transcribed]), usage.__setitem__)]

    assert read == [started, transcribed]
    assert usage == {"i1": {"type": "tokens", "input_tokens": 3, "output_tokens": 1}}
