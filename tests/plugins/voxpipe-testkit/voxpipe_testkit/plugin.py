"""The testkit's voxpipe plugin: options, prices and factories of its providers.

Cheap to import (``voxpipe validate`` loads every plugin): pipecat is only imported inside ``build``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers.spec import Prices, Provider, ProviderOptions, ServiceRequest, hookimpl
from voxpipe_testkit.script import ReplyRule

SOURCE = "voxpipe-testkit fixture"
AS_OF = date(2026, 11, 1)


class ScriptedSTTOptions(ProviderOptions):
    """``testkit_stt``: one transcript per utterance, in order."""

    transcripts: list[str] = Field(
        default_factory=list,
        description="Transcript of each utterance, used in order; past the end: 'utterance N' (1-based).",
    )
    latency_secs: float = Field(0.0, ge=0, description="Seconds between the end of speech and the transcript.")


class ScriptOptions(ProviderOptions):
    """What a scripted model answers, and how fast."""

    replies: list[ReplyRule] = Field(
        default_factory=list, description="Rules, first match wins: {when, say} and/or {when, tool_call, say}."
    )
    default_reply: str = Field("You said: {user}", description="Reply when no rule matches.")
    latency_secs: float = Field(0.0, ge=0, description="Seconds before the first token (or audio).")


class ScriptedLLMOptions(ScriptOptions):
    """``testkit_llm``: answers by rules; calls registered functions through pipecat's function calling."""

    tokens_per_sec: float | None = Field(
        None, gt=0, description="Streaming rate after the first token (None: all at once)."
    )


class ToneOptions(ProviderOptions):
    """The tone that stands for synthesized speech."""

    frequency_hz: float = Field(440.0, gt=0, le=4000, description="Tone frequency.")
    amplitude: float = Field(0.3, gt=0, le=1, description="Peak amplitude (0-1 of full scale).")
    secs_per_char: float = Field(0.02, gt=0, description="Seconds of audio per character of text.")


class ToneTTSOptions(ToneOptions):
    """``testkit_tts``: a tone whose duration is proportional to the text's length."""

    latency_secs: float = Field(0.0, ge=0, description="Seconds before the first audio.")


class ScriptedRealtimeOptions(ScriptOptions, ToneOptions):
    """``testkit_realtime``: energy VAD on the caller's audio, then transcript, scripted reply and tone."""

    transcripts: list[str] = Field(
        default_factory=list,
        description="What the caller said in each utterance, in order; past the end: 'utterance N'.",
    )
    energy_threshold_dbfs: float = Field(-40.0, le=0, description="Input RMS level (dBFS) that counts as speech.")


class EnergyVADOptions(ProviderOptions):
    """``testkit_vad``: speech is any 32 ms window louder than the threshold (timing from the ``vad`` section)."""

    energy_threshold_dbfs: float = Field(-40.0, le=0, description="RMS level (dBFS) that counts as speech.")


def _build_stt(request: ServiceRequest[ScriptedSTTOptions]) -> Any:
    from voxpipe_testkit.services import ScriptedSTTService

    # Time to final segment = the VAD's stop delay (the segment ends there) + the scripted latency.
    ttfs = request.vad.stop_secs + request.options.latency_secs + 0.05
    return ScriptedSTTService(options=request.options, model=request.model, ttfs_p99_latency=ttfs)


def _build_llm(request: ServiceRequest[ScriptedLLMOptions]) -> Any:
    from voxpipe_testkit.services import ScriptedLLMService

    return ScriptedLLMService(
        options=request.options, model=request.model, system_instruction=request.agent.instructions
    )


def _build_tts(request: ServiceRequest[ToneTTSOptions]) -> Any:
    from voxpipe_testkit.services import ToneTTSService

    return ToneTTSService(options=request.options, model=request.model)


def _build_realtime(request: ServiceRequest[ScriptedRealtimeOptions]) -> Any:
    from voxpipe_testkit.services import ScriptedRealtimeService

    return ScriptedRealtimeService(
        options=request.options,
        model=request.model,
        system_instruction=request.agent.instructions,
        start_secs=request.vad.start_secs,
        stop_secs=request.vad.stop_secs,
    )


def _build_vad(request: ServiceRequest[EnergyVADOptions]) -> Any:
    from pipecat.audio.vad.vad_analyzer import VADParams

    from voxpipe_testkit.services import EnergyVADAnalyzer

    return EnergyVADAnalyzer(
        threshold_dbfs=request.options.energy_threshold_dbfs, params=VADParams(**request.vad.model_dump())
    )


STT = Provider(
    name="testkit_stt",
    kind="stt",
    options=ScriptedSTTOptions,
    build=_build_stt,
    prices={"*": Prices(source=SOURCE, as_of=AS_OF, per_audio_minute=0.01)},
    default_model="scripted-stt-1",
    description="Scripted transcripts, one per VAD utterance (pipecat SegmentedSTTService).",
)

LLM = Provider(
    name="testkit_llm",
    kind="llm",
    options=ScriptedLLMOptions,
    build=_build_llm,
    prices={
        "*": Prices(
            source=SOURCE,
            as_of=AS_OF,
            per_million_input_tokens=1.0,
            per_million_cached_input_tokens=0.5,
            per_million_output_tokens=2.0,
        )
    },
    default_model="scripted-llm-1",
    description="Deterministic scripted LLM with tool calls (pipecat LLMService).",
)

TTS = Provider(
    name="testkit_tts",
    kind="tts",
    options=ToneTTSOptions,
    build=_build_tts,
    prices={"*": Prices(source=SOURCE, as_of=AS_OF, per_thousand_characters=0.05)},
    default_model="tone-1",
    description="A sine tone as long as the text, at the pipeline's output rate (pipecat TTSService).",
)

REALTIME = Provider(
    name="testkit_realtime",
    kind="realtime",
    options=ScriptedRealtimeOptions,
    build=_build_realtime,
    prices={
        "*": Prices(
            source=SOURCE,
            as_of=AS_OF,
            per_million_input_tokens=1.0,
            per_million_output_tokens=2.0,
            per_million_audio_input_tokens=10.0,
            per_million_cached_audio_input_tokens=1.0,
            per_million_audio_output_tokens=20.0,
        )
    },
    default_model="scripted-realtime-1",
    description="Speech-to-speech stand-in: energy VAD, scripted transcript and reply, tone audio.",
)

VAD = Provider(
    name="testkit_vad",
    kind="vad",
    options=EnergyVADOptions,
    build=_build_vad,
    prices={"*": Prices(source=SOURCE, as_of=AS_OF)},
    description="Energy VAD: a test tone counts as speech (Silero does not hear pure tones).",
)

PROVIDERS: list[Provider] = [STT, LLM, TTS, REALTIME, VAD]


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return PROVIDERS
