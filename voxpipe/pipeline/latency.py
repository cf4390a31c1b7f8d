"""Per-turn latency of any call, measured from the audio and the frames themselves (docs/latency.md).

``TurnMeter`` observes a call's pipeline. It needs no VAD and no knowledge of the transport beyond which
processor plays the bot's audio, so it works the same for simulated, Twilio, browser and realtime calls:

- the caller's speech: every ``InputAudioRawFrame`` the transport receives; the end of speech is the last
  audible sample (above -36 dBFS) before the bot answers. A frame is placed in time by when it *arrived*
  (``ARRIVED_AT`` in its metadata, set by the transport from the socket and the stream's own timestamps)
  where the transport knows it, not by when the pipeline got to it: on an overloaded server those differ,
  and the caller's wait starts when they stopped talking;
- missed turns: the caller ended a turn (silent for ``end_of_turn_secs``, the deployment's end-of-turn
  silence) and spoke again before any reply was heard; ``missed_turns`` counts them (the record and
  ``/metrics`` carry the count);
- the bot's speech: every audio frame the output transport has played; a reply starts at its first audible
  sample. A frame is placed by when the peer reported it played (``PLAYED_AT``: a media stream's returned
  mark) where the transport knows it, else by when the output passed it on;
- a turn: a bot reply that starts after the caller spoke (the greeting, and pauses inside one reply, are not
  turns); a call that ends after the caller spoke and was heard, but before any reply was audible (a failed
  TTS, a hang-up), ends with an unanswered turn: what was heard and the reply so far are kept, its
  voice-to-voice is ``None``;
- the stages in between: a final transcript, the LLM's first token, the TTS's first audio, from the frames'
  pipeline-clock timestamps converted to ``time.monotonic()`` (``CallClock``).

Timing conventions (pipecat's): an input frame is delivered when its last sample has been captured, and an
output transport pushes a played frame on when its duration has elapsed (it paces writes at real time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    InputAudioRawFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voxpipe.records.model import TurnRecord
from voxpipe.records.recording import AUDIBLE, NEW_REPLY_GAP_SECS  # one definition, shared with calls --verify

ARRIVED_AT = "voxpipe_arrived_at"  # frame.metadata key: time.monotonic() when the frame's last sample arrived
PLAYED_AT = "voxpipe_played_at"  # frame.metadata key: time.monotonic() when the peer reported the frame played


class CallClock(SystemClock):
    """pipecat's clock, remembering when it started so frame timestamps convert to ``time.monotonic()``."""

    started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def to_monotonic(self, timestamp_ns: int) -> float:
        return self.started_at + timestamp_ns / 1e9


def _audible(pcm: bytes) -> np.ndarray | None:
    """Indices of the audible samples of ``pcm``, or ``None`` if it is all silence (most frames of a call: told
    by its extremes alone, since the turn meter looks at every frame of the caller's line)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    if not samples.size or (int(samples.max()) <= AUDIBLE and int(samples.min()) >= -AUDIBLE):
        return None
    return np.flatnonzero(np.abs(samples.astype(np.int32)) > AUDIBLE)


def first_audible(pcm: bytes, sample_rate: int) -> float | None:
    """Seconds from the start of ``pcm`` to its first audible sample, or ``None`` if it is all silence."""
    loud = _audible(pcm)
    return None if loud is None else float(loud[0]) / sample_rate


def last_audible(pcm: bytes, sample_rate: int) -> float | None:
    """Seconds from the start of ``pcm`` to just after its last audible sample, or ``None``."""
    loud = _audible(pcm)
    return None if loud is None else float(loud[-1] + 1) / sample_rate


def audio_side(data: FramePushed, output: FrameProcessor) -> str | None:
    """``caller`` for audio the transport received, ``bot`` for audio ``output`` has played, else ``None``.

    Only a frame's first downstream push counts. The output transport pushes a frame on once it has played
    it, so a reply cut by barge-in ends where playback stopped.
    """
    if data.direction != FrameDirection.DOWNSTREAM or not data.first_push:
        return None
    if isinstance(data.frame, InputAudioRawFrame):
        return "caller"
    if isinstance(data.frame, OutputAudioRawFrame) and data.source is output:
        return "bot"
    return None


@dataclass(frozen=True)
class StageEvent:
    """One stage output: ``stage`` is ``stt_final``, ``llm_token``, ``tts_audio`` or ``bot_text``."""

    at: float
    stage: str
    text: str = ""


@dataclass
class MeasuredTurn:
    """One exchange. Times are ``time.monotonic()`` seconds; ``None`` when a stage never produced output."""

    user_speech_end: float
    audio_out_first: float | None  # None: no reply was heard (the call ended first)
    heard: str = ""
    reply: str = ""
    stt_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None

    def after_speech_ms(self, moment: float | None) -> float | None:
        """Milliseconds from the end of the caller's speech to ``moment``."""
        return None if moment is None else round((moment - self.user_speech_end) * 1000, 1)

    @property
    def voice_to_voice_ms(self) -> float | None:
        """End of the caller's speech to the first audible sample of the reply, as played to the caller."""
        return self.after_speech_ms(self.audio_out_first)

    def latency_ms(self) -> dict[str, float | None]:
        return {
            "stt_final": self.after_speech_ms(self.stt_final),
            "llm_first_token": self.after_speech_ms(self.llm_first_token),
            "tts_first_audio": self.after_speech_ms(self.tts_first_audio),
            "first_audio_out": self.voice_to_voice_ms,
        }

    def record(self, index: int) -> TurnRecord:
        latency = self.latency_ms()
        return TurnRecord(
            index=index,
            heard=self.heard,
            reply=self.reply,
            stt_final_ms=latency["stt_final"],
            llm_first_token_ms=latency["llm_first_token"],
            tts_first_audio_ms=latency["tts_first_audio"],
            voice_to_voice_ms=self.voice_to_voice_ms,
        )


@dataclass
class _Speech:
    """Audible activity of one side: when it last was audible, and when the current stretch began."""

    last_audible_end: float | None = None
    stretch_start: float | None = None


#: Called with each downstream frame the turn meter sees first-hand: the frame's push, ``caller``/``bot`` for
#: audio heard (else ``None``), and when (an audio frame's first sample, else the push), ``time.monotonic()``.
FrameTap = Callable[[FramePushed, str | None, float], None]


class TurnMeter(BaseObserver):
    """Measures every turn of one call. Pass ``meter.clock`` to the call's worker as its clock.

    ``tap`` lets the call's recorder and tracer see the same frames through the same observer: pipecat wakes
    each observer through its own queue and task for every frame at every processor, so one is cheaper.
    """

    def __init__(self, output: FrameProcessor, end_of_turn_secs: float = float("inf")):
        super().__init__()
        self.output = output
        self.end_of_turn_secs = end_of_turn_secs
        self.missed_turns = 0
        self.tap: FrameTap | None = None
        self.clock = CallClock()
        self.events: list[StageEvent] = []
        self._starts: list[tuple[float, float]] = []  # (caller's end of speech, bot reply start) per turn
        self._caller = _Speech()
        self._caller_spans: list[list[float]] = []  # [began, ended] of each stretch the caller was audible
        self._bot = _Speech()
        self._transcripts: set[int] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        at = self.clock.to_monotonic(data.timestamp)
        if isinstance(frame, TranscriptionFrame):
            # What the conversation heard: the transcript reaching the user aggregator (STT services push it
            # downstream, realtime services upstream). A fallback switcher drops a replaced provider's late
            # transcripts before they get there.
            if isinstance(data.destination, LLMUserAggregator) and frame.id not in self._transcripts:
                self._transcripts.add(frame.id)
                self.events.append(StageEvent(at, "stt_final", frame.text))
            return
        if isinstance(frame, TTSTextFrame):
            # The words the caller heard: as the output transport passes them on, in step with the audio (a
            # TTS that announced words and failed to speak them, replaced by a backup, never gets them there).
            if data.source is self.output and data.direction == FrameDirection.DOWNSTREAM:
                self.events.append(StageEvent(at, "bot_text", frame.text))
            return
        if data.direction != FrameDirection.DOWNSTREAM or not data.first_push:
            return
        side = audio_side(data, self.output)
        if side == "caller":
            at = frame.metadata.get(ARRIVED_AT, at) - _duration(frame)
            self._on_caller_audio(at, frame)
        elif side == "bot":
            at = frame.metadata.get(PLAYED_AT, at) - _duration(frame)
            self._on_bot_audio(at, frame)
        elif isinstance(frame, LLMTextFrame):
            self.events.append(StageEvent(at, "llm_token", frame.text))
        elif isinstance(frame, TTSAudioRawFrame):
            self.events.append(StageEvent(at, "tts_audio"))
        if self.tap is not None:
            self.tap(data, side, at)

    def _on_caller_audio(self, started_at: float, frame: InputAudioRawFrame) -> None:
        end = last_audible(frame.audio, frame.sample_rate)
        if end is None:
            return
        caller, bot = self._caller, self._bot
        start = started_at + (first_audible(frame.audio, frame.sample_rate) or 0.0)
        if self._caller_spans and start - self._caller_spans[-1][1] < NEW_REPLY_GAP_SECS:
            self._caller_spans[-1][1] = started_at + end
        else:
            self._caller_spans.append([start, started_at + end])
        if caller.last_audible_end is not None:
            ended_a_turn = start - caller.last_audible_end >= self.end_of_turn_secs
            if ended_a_turn and (bot.stretch_start is None or bot.stretch_start < caller.last_audible_end):
                self.missed_turns += 1  # spoke again, the last turn still unanswered
        caller.last_audible_end = started_at + end

    def _on_bot_audio(self, started_at: float, frame: OutputAudioRawFrame) -> None:
        start = first_audible(frame.audio, frame.sample_rate)
        if start is None:
            return
        start += started_at
        bot = self._bot
        new_reply = bot.last_audible_end is None or start - bot.last_audible_end > NEW_REPLY_GAP_SECS
        if new_reply:
            # The caller's speech before the reply: the audio played is passed on when its mark comes back,
            # which can be after caller audio that came later (a mark late through the bridge's queue).
            spoke = next((span for span in reversed(self._caller_spans) if span[0] < start), None)
            if spoke is not None and (bot.stretch_start is None or spoke[1] > bot.stretch_start):
                self._starts.append((spoke[1], start))
            bot.stretch_start = start
        bot.last_audible_end = started_at + (last_audible(frame.audio, frame.sample_rate) or 0.0)

    def between(self, start: float, end: float) -> list[StageEvent]:
        return [e for e in self.events if start <= e.at < end]

    def turns(self) -> list[MeasuredTurn]:
        """Every turn so far, with its stages and texts, and the caller's last turn if it was heard but not answered."""
        starts: list[tuple[float, float | None]] = list(self._starts)
        last_reply = self._starts[-1][1] if self._starts else float("-inf")
        caller_end = self._caller.last_audible_end
        if caller_end is not None and caller_end > last_reply and self._heard_between(last_reply, float("inf")):
            starts.append((caller_end, None))
        out = []
        for index, (speech_end, reply_start) in enumerate(starts):
            previous_reply = starts[index - 1][1] if index else float("-inf")
            next_speech_end = starts[index + 1][0] if index + 1 < len(starts) else float("inf")
            heard = self._heard_between(previous_reply or float("-inf"), reply_start or float("inf"))
            answer = self.between(heard[-1].at if heard else speech_end, next_speech_end)
            llm_first = next((e.at for e in answer if e.stage == "llm_token"), None)
            tts_first = next((e.at for e in answer if e.stage == "tts_audio"), None)
            reply = _joined(answer, "bot_text") or "".join(e.text for e in answer if e.stage == "llm_token").strip()
            out.append(
                MeasuredTurn(
                    user_speech_end=speech_end,
                    audio_out_first=reply_start,
                    heard=" ".join(e.text.strip() for e in heard),
                    reply=reply,
                    stt_final=heard[-1].at if heard else None,
                    llm_first_token=llm_first,
                    tts_first_audio=tts_first,
                )
            )
        return out

    def _heard_between(self, start: float, end: float) -> list[StageEvent]:
        return [e for e in self.between(start, end) if e.stage == "stt_final"]

    def greeting(self) -> str:
        """What the bot said before the caller first spoke."""
        end = self._starts[0][0] if self._starts else float("inf")
        return _joined(self.between(float("-inf"), end), "bot_text")


def _duration(frame: InputAudioRawFrame | OutputAudioRawFrame) -> float:
    return len(frame.audio) / 2 / frame.num_channels / frame.sample_rate


def _joined(events: list[StageEvent], stage: str) -> str:
    return " ".join(" ".join(e.text for e in events if e.stage == stage).split())
