"""stt `deepgram`: Deepgram live streaming (nova-3) over a WebSocket: interim results, endpointing, utterance
end, smart formatting, keyterms, language.

On a telephone call Deepgram is asked for ``encoding=mulaw&sample_rate=8000``: pipecat frames carry PCM16
decoded from the caller's mu-law at the same 8 kHz, and re-encoding them restores the line's bytes exactly.

Fixes over pipecat's service: the connect timeout is honoured and a failed attempt does not hold the call's
start; a broken connection is reported as one; a ``Finalize`` with no final result in time is reported,
unless Deepgram had already finalized the utterance (then it has nothing to answer ``Finalize`` with).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from datetime import date
from typing import Any, Literal

from pydantic import Field

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.cloud import ApiKeyOptions


class DeepgramOptions(ApiKeyOptions):
    base_url: str = Field("wss://api.deepgram.com", description="WebSocket endpoint (wss:// or ws://).")
    language: str = Field("en", description="BCP-47 language code, or 'multi' for nova-3 multilingual.")
    interim_results: bool = Field(True, description="Stream interim transcripts while the caller speaks.")
    endpointing_ms: int | Literal[False] = Field(
        300, description="Silence (ms) after which Deepgram finalizes a segment; false turns endpointing off."
    )
    utterance_end_ms: int | None = Field(
        None, ge=1000, description="Gap (ms) between words that sends UtteranceEnd (needs interim_results)."
    )
    smart_format: bool = Field(True, description="Punctuation, numerals, dates and other formatting.")
    keyterms: list[str] = Field(default_factory=list, description="Words to recognise better (nova-3 keyterm).")


@functools.cache
def _service_class() -> type:
    import asyncio

    from pipecat.frames.frames import Frame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.utils.errors import ErrorCategory

    from voxpipe.audio import g711
    from voxpipe.providers.cloud import CloudService

    class DeepgramSTT(CloudService, DeepgramSTTService):
        """pipecat's Deepgram STT, sending mu-law as mu-law, with connect and finalize timeouts."""

        def __init__(self, *, connect_timeout_secs: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._connect_timeout_secs = connect_timeout_secs
            self._attempt_failed = asyncio.Event()
            self._finalized = False  # Deepgram has sent a final since the caller began, and no words after it

        async def _connect(self) -> None:
            """pipecat holds the pipeline's start until it is connected or has given up retrying (seconds of
            back-off); this stops waiting at the first failed attempt, or after the connect timeout."""
            self._attempt_failed.clear()
            waits = [asyncio.ensure_future(super()._connect()), asyncio.ensure_future(self._attempt_failed.wait())]
            done, pending = await asyncio.wait(waits, timeout=self._connect_timeout_secs, return_when="FIRST_COMPLETED")
            for wait in pending:
                wait.cancel()  # only the wait: the connection task keeps trying in the background
            if not done:
                message = f"no connection within {self._connect_timeout_secs:g} s"
                await self.push_error(message, category=ErrorCategory.CONNECTIVITY)

        async def push_error(self, error_msg: str, exception: Exception | None = None, **kwargs: Any) -> None:
            """Every error also ends ``_connect``'s wait: while connecting, it is a failed attempt."""
            self._attempt_failed.set()
            status = getattr(exception, "status_code", None)
            if status is not None:  # deepgram-sdk's ApiError text starts with every request header
                error_msg = f"Deepgram refused the connection: HTTP {status}: {getattr(exception, 'body', '')}"
            await super().push_error(error_msg, exception=exception, **kwargs)

        async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
            async for frame in super().run_stt(g711.encode(audio) if self._encoding == "mulaw" else audio):
                yield frame

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            """At the VAD's stop pipecat sends ``Finalize``; an answer is expected only if one is owed.

            Deepgram answers ``Finalize`` only when it holds audio it has not finalized: when endpointing
            already produced the final before the VAD stop, no answer comes, and that is not lateness.
            So the watchdog is armed only while the utterance has no final yet, or has words after it.
            """
            if isinstance(frame, VADUserStartedSpeakingFrame):
                self._finalized = False
            await super().process_frame(frame, direction)
            if isinstance(frame, VADUserStoppedSpeakingFrame) and self._connection and not self._finalized:
                self.watchdog.expect("final transcript after Finalize")

        async def _on_error(self, error: Any) -> None:
            """The SDK reports a broken connection as an event, which pipecat pushes without its exception."""
            exception = error if isinstance(error, Exception) else None
            await self.push_error(
                f"connection error: {error}", exception=exception, category=ErrorCategory.CONNECTIVITY
            )
            await self.stop_all_metrics()

        async def _on_message(self, message: Any) -> None:
            """Keeps track of whether the caller's words are all final (see ``process_frame``)."""
            if getattr(message, "type", None) == "Results":
                if message.is_final:
                    self._finalized = True
                    self.watchdog.received()
                elif any(alternative.transcript.strip() for alternative in message.channel.alternatives):
                    self._finalized = False  # words Deepgram has yet to finalize
            await super()._on_message(message)

    return DeepgramSTT


def build(request: ServiceRequest[DeepgramOptions]) -> Any:
    from pipecat.services.deepgram.stt import DeepgramSTTService

    options = request.options
    return _service_class()(
        api_key=options.api_key.get_secret_value(),
        base_url=options.base_url,
        encoding="mulaw" if request.audio.encoding == "mulaw" else "linear16",
        sample_rate=request.audio.sample_rate_in,
        connect_timeout_secs=options.connect_timeout_secs,
        response_timeout_secs=options.response_timeout_secs,
        settings=DeepgramSTTService.Settings(
            model=request.model,
            language=options.language,
            interim_results=options.interim_results,
            endpointing=options.endpointing_ms,
            utterance_end_ms=options.utterance_end_ms,
            smart_format=options.smart_format,
            keyterm=options.keyterms or None,
        ),
    )


def _per_minute(usd: float) -> Prices:
    return Prices(source="https://deepgram.com/pricing", as_of=date(2025, 10, 1), per_audio_minute=usd)


PROVIDER = Provider(
    name="deepgram",
    kind="stt",
    options=DeepgramOptions,
    build=build,
    default_model="nova-3",
    prices={"nova-3": _per_minute(0.0077), "nova-3-general": _per_minute(0.0077), "nova-2": _per_minute(0.0058)},
    description="Deepgram live streaming STT (nova-3): interim results, endpointing, keyterms; mu-law on phone calls.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
