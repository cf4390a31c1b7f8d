"""tts `openai`: OpenAI speech (gpt-4o-mini-tts with a voice and acting instructions, tts-1, tts-1-hd).

OpenAI streams 24 kHz PCM; the transport resamples it to the call's rate (8 kHz on the phone). pipecat's
service lets most request failures escape as exceptions; this one reports them as classified errors.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.builtin.openai_llm import PRICES_URL
from voxpipe.providers.cloud import OpenAIOptions, openai_service_args

OPENAI_TTS_RATE = 24000
AS_OF = date(2025, 10, 1)


class OpenAITTSOptions(OpenAIOptions):
    voice: str = Field("alloy", description="Voice: alloy, ash, ballad, cedar, coral, echo, fable, marin, nova, ...")
    instructions: str | None = Field(
        None, description="How to speak (tone, pace, accent); gpt-4o-mini-tts only, tts-1 rejects it."
    )
    speed: float | None = Field(None, ge=0.25, le=4.0, description="Speaking rate (1.0 is normal).")


@functools.cache
def _service_class() -> type:
    from pipecat.frames.frames import Frame
    from pipecat.services.openai.tts import OpenAITTSService

    from voxpipe.providers.cloud import OpenAIService

    class OpenAITTS(OpenAIService, OpenAITTSService):
        """pipecat's OpenAI TTS on a process-wide client, reporting failed requests as classified errors."""

        async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
            try:
                async for frame in super().run_tts(text, context_id):
                    yield frame
            except Exception as exc:
                await self.push_error(f"speech failed: {exc}", exception=exc)

    return OpenAITTS


def build(request: ServiceRequest[OpenAITTSOptions]) -> Any:
    from pipecat.services.openai.tts import OpenAITTSService

    options = request.options
    return _service_class()(
        **openai_service_args(options),
        sample_rate=OPENAI_TTS_RATE,
        settings=OpenAITTSService.Settings(
            model=request.model, voice=options.voice, instructions=options.instructions, speed=options.speed
        ),
    )


def _per_thousand_characters(usd: float, source: str = PRICES_URL) -> Prices:
    return Prices(source=source, as_of=AS_OF, per_thousand_characters=usd)


PROVIDER = Provider(
    name="openai",
    kind="tts",
    options=OpenAITTSOptions,
    build=build,
    default_model="gpt-4o-mini-tts",
    prices={
        # Billed in tokens ($0.60/M text in, $12/M audio out); OpenAI's own estimate is $0.015 a minute,
        # about 1,000 characters of speech.
        "gpt-4o-mini-tts": _per_thousand_characters(0.015, f"{PRICES_URL} ($0.015/min estimate, ~1K chars/min)"),
        "tts-1": _per_thousand_characters(0.015),
        "tts-1-hd": _per_thousand_characters(0.030),
    },
    description="OpenAI speech: gpt-4o-mini-tts (voice + instructions), tts-1, tts-1-hd; 24 kHz PCM stream.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
