"""An in-memory transport: a simulated caller feeds 20 ms frames in, the bot's audio is captured with its times.

Used by ``voxpipe call``, ``voxpipe bench`` and the tests. The output side plays audio at real time (one
chunk per chunk duration, like a phone or a browser would), so the capture's timeline is what a caller hears.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, StartFrame
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams


@dataclass(frozen=True)
class PlayedChunk:
    """A chunk of bot audio and the ``time.monotonic()`` at which it started playing."""

    started_at: float
    audio: bytes
    sample_rate: int


class MemoryInputTransport(BaseInputTransport):
    """Receives caller audio from ``feed`` as if it came from a network peer."""

    def __init__(self, params: TransportParams, ready: asyncio.Event):
        super().__init__(params)
        self._ready = ready

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._ready.set()

    async def feed(self, pcm: bytes) -> None:
        await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1))


class MemoryOutputTransport(BaseOutputTransport):
    """Captures the bot's audio, paced at real time."""

    def __init__(self, params: TransportParams):
        super().__init__(params)
        self.played: list[PlayedChunk] = []
        self._next_play_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        started_at = max(time.monotonic(), self._next_play_at)
        self.played.append(PlayedChunk(started_at, frame.audio, self.sample_rate))
        self._next_play_at = started_at + len(frame.audio) / 2 / self.sample_rate
        # Return when the chunk has played, as pipecat's network transports do (send, then wait its duration).
        await asyncio.sleep(max(0.0, self._next_play_at - time.monotonic()))
        return True


class MemoryTransport(BaseTransport):
    """A pipecat transport whose peer is the Python code that feeds and reads it."""

    def __init__(self, sample_rate_in: int = 16000, sample_rate_out: int = 24000):
        super().__init__()
        self.ready = asyncio.Event()
        self._params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=sample_rate_in,
            audio_out_enabled=True,
            audio_out_sample_rate=sample_rate_out,
            audio_out_10ms_chunks=2,  # 20 ms chunks, like a telephone stream
            audio_out_end_silence_secs=0,
        )
        self._input = MemoryInputTransport(self._params, self.ready)
        self._output = MemoryOutputTransport(self._params)

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output

    async def feed(self, pcm: bytes) -> None:
        """Deliver one frame of caller audio (PCM16 mono at the input rate)."""
        await self._input.feed(pcm)

    @property
    def played(self) -> list[PlayedChunk]:
        return self._output.played
