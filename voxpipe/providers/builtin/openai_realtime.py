"""realtime `openai_realtime`: OpenAI Realtime (GA protocol), speech to speech over a WebSocket.

``session.update`` carries the instructions, tools, voice, input transcription and turn detection from the
deployment's ``vad`` section (``server_vad``: confidence -> threshold, start_secs -> prefix_padding_ms,
stop_secs -> silence_duration_ms; or ``semantic_vad``). Phone calls use ``audio/pcmu`` both ways. Usage comes
from ``response.done``. On barge-in the server cancels the response and pipecat truncates its audio item;
with ``interruptions.enabled: false`` the turn detection says ``interrupt_response: false`` and the reply plays
on. The cascade-only turn settings (``turn.speculate``, smart-turn, dynamic endpointing, backchannels...) are
refused for realtime deployments when the file is loaded (``voxpipe.config.turns.realtime_refusals``).

The service is pipecat's with the SDK's Realtime session fixes (``realtime_session_class``): timeouts,
reconnects after a dropped session (``reconnect_attempts``) with the conversation restored, failures that end
the session loudly, no duplicated first turn, the G.711 audio, and the input transcription's usage billed at
the transcription model's prices.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any, Literal

from pydantic import Field

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.builtin.openai_llm import PRICES_URL
from voxpipe.providers.cloud import ApiKeyOptions, agent_tools, realtime_session_class, token_prices


class RealtimeOptions(ApiKeyOptions):
    base_url: str = Field("wss://api.openai.com/v1/realtime", description="WebSocket endpoint (wss:// or ws://).")
    voice: str = Field("marin", description="Voice: marin, cedar, alloy, ash, ballad, coral, echo, sage, verse...")
    turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        "server_vad", description="server_vad takes the vad section's confidence and timings; semantic_vad eagerness."
    )
    eagerness: Literal["low", "medium", "high", "auto"] = Field("auto", description="semantic_vad only.")
    transcription_model: str | None = Field(
        "gpt-4o-mini-transcribe",
        description="Model transcribing the caller (what was heard; billed apart, and counted in the call's "
        "cost); null: none.",
    )
    reconnect_attempts: int = Field(
        2,
        ge=0,
        le=5,
        description="Times a dropped session is reopened (after 0, 0.25, 0.5 s...) with the conversation so far "
        "before the call fails; 0: a drop ends the call (or moves to a backup) at once.",
    )


def build(request: ServiceRequest[RealtimeOptions]) -> Any:
    from pipecat.services.openai.realtime import events as rt
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

    options, vad = request.options, request.vad
    pcmu = request.audio.encoding == "mulaw"
    audio_format = rt.PCMUAudioFormat() if pcmu else rt.PCMAudioFormat()
    timings = {"prefix_padding_ms": round(vad.start_secs * 1000), "silence_duration_ms": round(vad.stop_secs * 1000)}
    turns = (
        rt.TurnDetection(threshold=vad.confidence, **timings)
        if options.turn_detection == "server_vad"
        else rt.SemanticTurnDetection(eagerness=options.eagerness)
    )
    heard = rt.InputAudioTranscription(model=options.transcription_model) if options.transcription_model else None
    session = rt.SessionProperties(
        output_modalities=["audio"],
        # In the first session.update: server VAD answers the caller's first turn before pipecat has a context.
        tools=agent_tools(request.agent),
        audio=rt.AudioConfiguration(
            input=rt.AudioInput(format=audio_format, transcription=heard, turn_detection=turns),
            output=rt.AudioOutput(format=audio_format, voice=options.voice),
        ),
    )
    return realtime_session_class(OpenAIRealtimeLLMService)(
        api_key=options.api_key.get_secret_value(),
        base_url=options.base_url,
        pcmu=pcmu,
        connect_timeout_secs=options.connect_timeout_secs,
        response_timeout_secs=options.response_timeout_secs,
        reconnect_attempts=options.reconnect_attempts,
        transcription_model=options.transcription_model,
        interrupt_response=request.barge_in,
        settings=OpenAIRealtimeLLMService.Settings(
            model=request.model, system_instruction=request.agent.instructions, session_properties=session
        ),
    )


AS_OF = date(2025, 10, 1)
_prices = functools.partial(token_prices, PRICES_URL, AS_OF)


def _transcription(text_in: float, audio_in: float, text_out: float) -> Prices:
    """An input transcription model's token prices (USD per million): text and audio in, text out."""
    return Prices(
        source=PRICES_URL,
        as_of=AS_OF,
        per_million_input_tokens=text_in,
        per_million_audio_input_tokens=audio_in,
        per_million_output_tokens=text_out,
    )


PROVIDER = Provider(
    name="openai_realtime",
    kind="realtime",
    options=RealtimeOptions,
    build=build,
    default_model="gpt-realtime",
    prices={
        "gpt-realtime": _prices(4.00, 0.40, 16.00, audio=(32.00, 0.40, 64.00)),
        "gpt-realtime-mini": _prices(0.60, 0.06, 2.40, audio=(10.00, 0.30, 20.00)),
        # The input transcription models, billed apart from the session's model.
        "gpt-4o-mini-transcribe": _transcription(1.25, 3.00, 5.00),
        "gpt-4o-transcribe": _transcription(2.50, 6.00, 10.00),
        "whisper-1": Prices(source=PRICES_URL, as_of=AS_OF, per_audio_minute=0.006),
    },
    description="OpenAI Realtime (GA) speech to speech: server or semantic VAD from the vad section, tools, pcmu.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
