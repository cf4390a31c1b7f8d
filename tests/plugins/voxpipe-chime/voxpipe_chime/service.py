"""The pipecat service of the `chime` TTS, emitting what voxpipe's TTS contract asks for."""

from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

CHUNK_SECS = 0.02


class ChimeTTSService(TTSService):
    def __init__(self, *, options: Any, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="chime-1", voice=None, language=None),
            **kwargs,
        )
        self._options = options

    def can_generate_metrics(self) -> bool:
        return True

    def _chime(self, text: str) -> bytes:
        rate, pieces = self.sample_rate, []
        for word in text.split():
            t = np.arange(int(len(word) * self._options.secs_per_char * rate)) / rate
            pieces += [0.5 * np.sin(2 * np.pi * self._options.pitch_hz * t), np.zeros(int(0.05 * rate))]
        samples = np.concatenate(pieces) if pieces else np.zeros(0)
        return (samples * 32767).astype("<i2").tobytes()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_tts_usage_metrics(text)  # characters: what TTS prices are per
        audio, step = self._chime(text), int(self.sample_rate * CHUNK_SECS) * 2
        for offset in range(0, len(audio), step):
            if offset == 0:
                await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(audio[offset : offset + step], self.sample_rate, 1, context_id=context_id)
