"""The pipecat service behind ``local_whisper`` (imported by ``build`` only: it pulls in pipecat and CTranslate2)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import soxr
from faster_whisper import WhisperModel
from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.whisper.stt import language_to_whisper_language
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

WHISPER_RATE = 16000  # whisper's feature extractor expects 16 kHz mono
# Speech end to final transcript at p99 (VAD stop + transcription) as measured by
# benchmarks/local_stages.py; turn strategies use it to know how long to wait for the text.
TTFS_P99_SECS = 0.9


@dataclass(frozen=True)
class SharedWhisper:
    """One loaded model and the single thread that may run it (CTranslate2 calls are not reentrant here)."""

    model: WhisperModel
    executor: ThreadPoolExecutor

    def transcribe(self, pcm: bytes, sample_rate: int, language: str | None, beam_size: int) -> str:
        """16-bit mono PCM -> text; blocking, so call it on ``executor``."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if sample_rate != WHISPER_RATE:
            audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=beam_size,
            # One float, not the default fallback tuple: the fallback resamples at higher
            # temperatures when a segment looks poor, which makes the text random.
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        # The segments are decoded lazily, while iterated: this must stay in the worker thread.
        return " ".join(segment.text.strip() for segment in segments).strip()


@functools.cache
def load_whisper(model_path: str, cpu_threads: int) -> SharedWhisper:
    """Load a model once per process (keyed by path and threads) and warm it up."""
    logger.debug(f"local_whisper: loading {model_path}")
    model = WhisperModel(str(Path(model_path)), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    shared = SharedWhisper(model, ThreadPoolExecutor(max_workers=1, thread_name_prefix="local_whisper"))
    # The first transcription of a process is about twice as slow; pay for it here, not on a caller.
    warmup_language = "en" if "en" in model.supported_languages else None
    shared.transcribe(bytes(WHISPER_RATE), WHISPER_RATE, warmup_language, 1)
    return shared


class LocalWhisperSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with a process-wide faster-whisper model.

    Works like pipecat's ``WhisperSTTService`` (raw PCM segments, processing metrics around the model
    call, TTFB from the base class) but shares one model between calls and decodes deterministically.
    """

    def __init__(self, *, whisper: SharedWhisper, model_name: str, language: str, beam_size: int, **kwargs) -> None:
        super().__init__(
            settings=STTSettings(model=model_name, language=language),
            ttfs_p99_latency=TTFS_P99_SECS,
            **kwargs,
        )
        self._whisper = whisper
        self._beam_size = beam_size
        supported = whisper.model.supported_languages
        if self._settings.language not in supported:
            raise ValueError(
                f"whisper model {model_name!r} cannot transcribe {language!r}; it knows {sorted(supported)}"
            )

    @property
    def wants_wav_segments(self) -> bool:
        """Segments arrive as raw 16-bit PCM, which the model reads directly."""
        return False

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return language_to_whisper_language(language)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        # A whisper code such as "en"; Language is a StrEnum, so downstream reads either.
        language = cast("Language", self._settings.language)
        await self.start_processing_metrics()
        try:
            text = await asyncio.get_running_loop().run_in_executor(
                self._whisper.executor,
                self._whisper.transcribe,
                audio,
                self.sample_rate,
                str(language),
                self._beam_size,
            )
        finally:
            await self.stop_processing_metrics()
        if text:
            logger.debug(f"{self}: transcription [{text}]")
            # One segment gives one final transcript, so the turn strategy need not wait for more.
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language, finalized=True)
