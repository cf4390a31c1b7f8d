"""stt `openai`: OpenAI transcription (gpt-4o-transcribe, gpt-4o-mini-transcribe, whisper-1) of each VAD segment.

pipecat's service turns every failure into an error without its exception, so a 429 could not be told from
a bug; this one reports the exception, which the shared base classifies for the fallback.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.builtin.openai_llm import PRICES_URL
from voxpipe.providers.cloud import OpenAIOptions, openai_service_args

AS_OF = date(2025, 10, 1)


class OpenAISTTOptions(OpenAIOptions):
    language: str = Field("en", description="ISO-639-1 code of the caller's language.")
    prompt: str | None = Field(None, description="Words or style to guide the transcription (names, jargon).")


@functools.cache
def _service_class() -> type:
    from openai.types.audio import Transcription
    from pipecat.services.openai.stt import OpenAISTTService

    from voxpipe.providers.cloud import OpenAIService

    class OpenAISTT(OpenAIService, OpenAISTTService):
        """pipecat's OpenAI STT on a process-wide client, reporting failed requests with their exception."""

        async def _transcribe(self, audio: bytes) -> Transcription:
            """pipecat turns a failed request into an error without its exception, so a 429 could not be told
            from a bug; the exception goes with the error here, and is classified."""
            try:
                return await super()._transcribe(audio)
            except Exception as exc:
                await self.push_error(f"transcription failed: {exc}", exception=exc)
                return Transcription(text="")

    return OpenAISTT


def build(request: ServiceRequest[OpenAISTTOptions]) -> Any:
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.transcriptions.language import Language

    options = request.options
    return _service_class()(
        **openai_service_args(options),
        settings=OpenAISTTService.Settings(
            model=request.model, language=Language(options.language), prompt=options.prompt
        ),
    )


def _per_minute(usd: float) -> Prices:
    return Prices(source=PRICES_URL, as_of=AS_OF, per_audio_minute=usd)


PROVIDER = Provider(
    name="openai",
    kind="stt",
    options=OpenAISTTOptions,
    build=build,
    default_model="gpt-4o-mini-transcribe",
    prices={
        "gpt-4o-transcribe": _per_minute(0.006),
        "gpt-4o-mini-transcribe": _per_minute(0.003),
        "whisper-1": _per_minute(0.006),
    },
    description="OpenAI transcription of each utterance (gpt-4o-transcribe, gpt-4o-mini-transcribe, whisper-1).",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
