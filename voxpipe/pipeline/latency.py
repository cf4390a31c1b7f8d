"""Per-turn latency from the frames themselves.

``StageTimeline`` observes a call's pipeline and records when each stage first produced output: a final
transcript, the LLM's first token, the TTS's first audio. Times are ``time.monotonic()`` seconds, converted
from pipecat's frame timestamps through ``CallClock``, so they line up with the caller's own audio clock.

Voice-to-voice is defined in docs/latency.md: from the last audible sample of the caller's speech to the
first audible sample of the bot's reply, as played to the caller. Both ends are measured on the audio, not on
VAD events, so the figure holds in realtime mode too, where no local VAD runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import LLMTextFrame, TranscriptionFrame, TTSAudioRawFrame, TTSTextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

AUDIBLE = 500  # |sample| above this (-36 dBFS) counts as sound; TTS leading silence is below it


class CallClock(SystemClock):
    """pipecat's clock, remembering when it started so frame timestamps convert to ``time.monotonic()``."""

    started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def to_monotonic(self, timestamp_ns: int) -> float:
        return self.started_at + timestamp_ns / 1e9


@dataclass(frozen=True)
class StageEvent:
    """One stage output: ``stage`` is ``stt_final``, ``llm_token``, ``tts_audio`` or ``bot_text``."""

    at: float
    stage: str
    text: str = ""


class StageTimeline(BaseObserver):
    """Records stage outputs of one call, in order. Pass its ``clock`` to the call's worker."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = CallClock()
        self.events: list[StageEvent] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if data.direction != FrameDirection.DOWNSTREAM or not data.first_push:
            return
        at = self.clock.to_monotonic(data.timestamp)
        if isinstance(frame, TranscriptionFrame):
            self.events.append(StageEvent(at, "stt_final", frame.text))
        elif isinstance(frame, TTSTextFrame):
            self.events.append(StageEvent(at, "bot_text", frame.text))
        elif isinstance(frame, LLMTextFrame):
            self.events.append(StageEvent(at, "llm_token", frame.text))
        elif isinstance(frame, TTSAudioRawFrame):
            self.events.append(StageEvent(at, "tts_audio"))

    def between(self, start: float, end: float) -> list[StageEvent]:
        return [e for e in self.events if start <= e.at < end]


def first_audible(pcm: bytes, sample_rate: int) -> float | None:
    """Seconds from the start of ``pcm`` to its first audible sample, or ``None`` if it is all silence."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    loud = np.flatnonzero(samples > AUDIBLE)
    return float(loud[0]) / sample_rate if loud.size else None


def last_audible(pcm: bytes, sample_rate: int) -> float | None:
    """Seconds from the start of ``pcm`` to just after its last audible sample, or ``None``."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    loud = np.flatnonzero(samples > AUDIBLE)
    return float(loud[-1] + 1) / sample_rate if loud.size else None
