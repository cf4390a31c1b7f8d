"""The pipecat service behind ``local_tts`` (imported by ``build`` only: it pulls in pipecat and onnxruntime)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import soxr
from hibari import SAMPLE_RATE as HIBARI_RATE
from hibari import Hibari
from hibari.voices import VOICES, voice_path
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language

CHUNK_SECS = 0.08  # audio per frame: small enough that playback starts before a long sentence is sent
# hibari pads every sentence with ~0.32 s of silence before and ~0.47 s after it: dead air on a call.
KEEP_BEFORE_SECS = 0.02
KEEP_AFTER_SECS = 0.12
SILENT = 1e-3  # -60 dBFS


def trim_padding(wave: np.ndarray) -> np.ndarray:
    """``wave`` without hibari's padding, keeping a short natural lead-in and pause."""
    sound = np.flatnonzero(np.abs(wave) > SILENT)
    if not sound.size:
        return wave[:0]
    start = max(0, sound[0] - int(KEEP_BEFORE_SECS * HIBARI_RATE))
    return wave[start : sound[-1] + 1 + int(KEEP_AFTER_SECS * HIBARI_RATE)]


@dataclass(frozen=True)
class SharedHibari:
    """One loaded voice and the single thread that runs it (its G2P is plain Python with shared state)."""

    tts: Hibari
    executor: ThreadPoolExecutor


@functools.cache
def load_hibari(voice: str) -> SharedHibari:
    """Load a voice once per process, never downloading one, and warm it up."""
    if voice not in VOICES:
        raise ValueError(f"unknown hibari voice {voice!r}; voices: {', '.join(VOICES)}")
    try:
        path = voice_path(voice, download_missing=False)
    except FileNotFoundError as missing:
        raise ValueError(
            f"hibari voice {voice!r} is not on this machine ({missing}); only 'heart' ships in the package "
            "and local_tts downloads nothing at run time"
        ) from None
    logger.debug(f"local_tts: loading hibari voice {voice}")
    tts = Hibari(voice=voice, model=path)
    tts("Warm up.")  # loads the G2P lexicons (~0.4 s) here rather than on the first reply
    return SharedHibari(tts, ThreadPoolExecutor(max_workers=1, thread_name_prefix="local_tts"))


class LocalHibariTTSService(TTSService):
    """Speaks each sentence with a process-wide hibari voice, resampled with soxr to the call's rate."""

    def __init__(self, *, hibari: SharedHibari, speed: float, **kwargs) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="hibari", voice=hibari.tts.voice, language=Language.EN),
            **kwargs,
        )
        self._hibari = hibari
        self._speed = speed

    def can_generate_metrics(self) -> bool:
        return True

    async def _waves(self, text: str) -> AsyncIterator[np.ndarray]:
        """Float32 audio at the output rate, one array per sentence, each synthesized off the event loop."""
        loop = asyncio.get_running_loop()
        sentences = self._hibari.tts.stream(text, self._speed)
        resampler = (
            soxr.ResampleStream(HIBARI_RATE, self.sample_rate, 1, dtype="float32")
            if self.sample_rate != HIBARI_RATE
            else None
        )
        while (wave := await loop.run_in_executor(self._hibari.executor, next, sentences, None)) is not None:
            wave = trim_padding(wave)
            yield wave if resampler is None else resampler.resample_chunk(wave)
        if resampler is not None:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        chunk_bytes = 2 * int(self.sample_rate * CHUNK_SECS)
        try:
            await self.start_tts_usage_metrics(text)
            async for wave in self._waves(text):
                pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                for start in range(0, len(pcm), chunk_bytes):
                    await self.stop_ttfb_metrics()
                    yield TTSAudioRawFrame(pcm[start : start + chunk_bytes], self.sample_rate, 1, context_id=context_id)
        except Exception as exc:
            yield ErrorFrame(error=f"local_tts: synthesis failed: {exc}")
