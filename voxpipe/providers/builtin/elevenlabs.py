"""tts `elevenlabs`: ElevenLabs multi-context WebSocket streaming (flash, turbo and multilingual models).

On a telephone call (``encoding: mulaw``) ElevenLabs is asked for ``ulaw_8000``, the bytes Twilio carries:
they are only decoded to the PCM16 pipecat frames carry, at the same 8 kHz, and the transport's mu-law
encoding restores them, so nothing is resampled. On barge-in pipecat closes the context (``close_context``).

Fixes over pipecat's service: the connect timeout is honoured; a context that gets no audio within
``response_timeout_secs`` is reported; a dropped connection is reported before pipecat reconnects (it would
otherwise lose the reply in silence), and a socket closed for a bad key or voice is a permanent error
instead of a reconnect loop.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.cloud import PHONE_RATE, ApiKeyOptions


class ElevenLabsOptions(ApiKeyOptions):
    url: str = Field("wss://api.elevenlabs.io", description="WebSocket endpoint (wss:// or ws://).")
    voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", description="Voice id (default: Rachel).")
    language: str | None = Field(None, description="ISO-639-1 language code (multilingual and v2.5 models).")
    stability: float | None = Field(None, ge=0, le=1, description="Voice stability (0-1).")
    similarity_boost: float | None = Field(None, ge=0, le=1, description="Similarity to the original voice (0-1).")
    style: float | None = Field(None, ge=0, le=1, description="Style exaggeration (0-1).")
    use_speaker_boost: bool | None = Field(None, description="Boost similarity to the speaker.")
    speed: float | None = Field(None, ge=0.7, le=1.2, description="Speaking rate (1.0 is normal).")


@functools.cache
def _service_class() -> type:
    from pipecat.frames.frames import Frame, TTSAudioRawFrame
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.utils.errors import ErrorCategory
    from websockets.exceptions import ConnectionClosed

    from voxpipe.providers.cloud import CloudService, decode_mulaw

    rejections = (("api key", ErrorCategory.AUTHENTICATION), ("voice", ErrorCategory.INVALID_REQUEST))

    class ElevenLabsTTS(CloudService, ElevenLabsTTSService):
        """pipecat's ElevenLabs TTS with mu-law output, timeouts and reported connection failures."""

        def __init__(self, *, ulaw: bool, connect_timeout_secs: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._ulaw = ulaw
            self._connect_timeout_secs = connect_timeout_secs

        def _build_websocket_url(self) -> str:
            """pipecat derives the output format from the sample rate; a phone call asks for ``ulaw_8000``."""
            if self._ulaw:
                self._output_format = "ulaw_8000"
            return super()._build_websocket_url()

        async def _websocket_connect(self, uri: str, **kwargs: Any) -> Any:
            """pipecat opens the socket with no timeout: a hung handshake would hold the call's start."""
            return await super()._websocket_connect(uri, open_timeout=self._connect_timeout_secs, **kwargs)

        async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
            if text.strip():
                self.watchdog.expect("audio")
            async for frame in super().run_tts(text, context_id):
                yield frame

        async def append_to_audio_context(self, context_id: str | None, frame: Any) -> None:
            if isinstance(frame, TTSAudioRawFrame):
                self.watchdog.received()
                frame = decode_mulaw(frame) if self._ulaw else frame
            await super().append_to_audio_context(context_id, frame)

        async def _maybe_try_reconnect(self, error_message: str, report_error: Any, error: Exception | None = None):
            """pipecat reconnects silently, losing the reply in progress, and retries a rejected key forever:
            a drop is reported (the fallback can act), and a rejection is a permanent error."""
            if error is None or self._disconnecting:  # a clean close from either side: pipecat reconnects
                return await super()._maybe_try_reconnect(error_message, report_error, error)
            reason = error.rcvd.reason if isinstance(error, ConnectionClosed) and error.rcvd else ""
            rejected = next((category for word, category in rejections if word in reason.lower()), None)
            if rejected:  # ElevenLabs closes with 1008 on a bad key or voice: reconnecting cannot help
                await self.push_error(f"ElevenLabs closed the connection: {reason}", exception=error, category=rejected)
                return False
            await self.push_error(f"connection lost: {error}", exception=error, category=ErrorCategory.CONNECTIVITY)
            return await super()._maybe_try_reconnect(error_message, report_error, error)

    return ElevenLabsTTS


def build(request: ServiceRequest[ElevenLabsOptions]) -> Any:
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    options = request.options
    ulaw = request.audio.encoding == "mulaw"
    voice = options.model_dump(include={"stability", "similarity_boost", "style", "use_speaker_boost", "speed"})
    return _service_class()(
        api_key=options.api_key.get_secret_value(),
        url=options.url,
        ulaw=ulaw,
        sample_rate=PHONE_RATE if ulaw else request.audio.sample_rate_out,
        connect_timeout_secs=options.connect_timeout_secs,
        response_timeout_secs=options.response_timeout_secs,
        settings=ElevenLabsTTSService.Settings(
            model=request.model, voice=options.voice_id, language=options.language, **voice
        ),
    )


def _per_thousand_characters(usd: float) -> Prices:
    return Prices(source="https://elevenlabs.io/pricing/api", as_of=date(2025, 10, 1), per_thousand_characters=usd)


FAST, MULTILINGUAL = _per_thousand_characters(0.05), _per_thousand_characters(0.10)

PROVIDER = Provider(
    name="elevenlabs",
    kind="tts",
    options=ElevenLabsOptions,
    build=build,
    default_model="eleven_flash_v2_5",
    prices={
        "eleven_flash_v2_5": FAST,
        "eleven_flash_v2": FAST,
        "eleven_turbo_v2_5": FAST,
        "eleven_turbo_v2": FAST,
        "eleven_multilingual_v2": MULTILINGUAL,
    },
    description="ElevenLabs WebSocket streaming TTS (flash, turbo, multilingual); ulaw_8000 on phone calls.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
