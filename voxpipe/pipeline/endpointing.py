"""When is the caller's turn over: speculative replies and dynamic endpointing over pipecat's stop strategies.

A cascade spends most of its voice-to-voice time waiting to be sure the caller has finished (the VAD's
``stop_secs``, then the silence timeout or smart-turn). ``Endpointing`` is mixed into pipecat's own stop
strategies (``SpeechTimeoutUserTurnStopStrategy``, ``TurnAnalyzerUserTurnStopStrategy``) and changes two things:

- **Speculation** (``turn.speculate``): at the first sign the turn may be over, the caller silent (VAD stop)
  with a transcript so far, the strategy fires pipecat's speculative inference
  (``trigger_user_turn_inference_triggered(speculation=UserTurnSpeculation(...))``). The user aggregator runs
  the LLM on a provisional copy of the context, and the LLM service's ``SpeculationGate`` holds the reply.
  When the strategy then confirms the turn, the reply is released (``confirms_speculation``) if the final
  transcript still matches (pipecat's ``NormalizedMatch``); otherwise, or as soon as the caller speaks again,
  it is withdrawn (``EagerEndOfTurnCancelFrame``: the LLM stops, the gate drops everything it held) and the
  LLM runs again on the committed transcript. This is pipecat's Deepgram-Flux machinery, driven by the VAD
  so that it works with every STT.
- **Dynamic endpointing** (``turn.min_delay_secs`` / ``max_delay_secs``): the base strategy decides the turn
  looks over after the short wait; if the transcript ends mid-phrase (``looks_unfinished``: a trailing
  "and", a number being dictated) the strategy waits the difference more, and the caller speaking again
  cancels the end of turn.

With ``interruptions.resume_after_secs``, a turn that brings no words within that many seconds of the caller
going quiet is ended empty (a cough), so the reply it cut off can resume (see ``voxpipe.pipeline.barge_in``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import (
    BaseUserTurnStopStrategy,
    NormalizedMatch,
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)

# Words after which an English sentence is rarely over: conjunctions, prepositions, articles, fillers.
UNFINISHED_ENDINGS = frozenset({
    "and", "or", "but", "so", "because", "if", "then", "than", "that", "which", "who", "to", "of", "for", "with",
    "from", "in", "on", "at", "by", "about", "into", "the", "a", "an", "my", "your", "our", "their", "his", "her",
    "its", "is", "are", "was", "were", "be", "am", "i", "we", "you", "um", "uh", "er", "like",
})  # fmt: skip
DIGIT_WORDS = frozenset({
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "double", "triple",
})  # fmt: skip
_WORD = re.compile(r"[a-z0-9']+")


def looks_unfinished(text: str) -> bool:
    """Whether a transcript reads as cut off mid-phrase (wait longer before answering it)."""
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words or stripped.endswith(("?", "!")):
        return False
    if stripped.endswith((",", "...", "…", "-", "–")):
        return True
    last = words[-1]
    return last in UNFINISHED_ENDINGS or last in DIGIT_WORDS or last.isdigit()  # digits: dictation goes on


class Endpointing(BaseUserTurnStopStrategy):
    """Speculation and dynamic endpointing for the stop strategy it is mixed into (listed first)."""

    def __init__(
        self,
        *,
        speculate: bool = False,
        unfinished_extra_delay: float = 0.0,
        no_words_timeout: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._speculate = speculate
        self._extra_delay = unfinished_extra_delay
        self._no_words_timeout = no_words_timeout
        self._match = NormalizedMatch()
        self._heard = ""
        self._caller_silent = False
        self._heard_since_speech = False  # a transcript arrived since the caller last started speaking
        self._turn_open = False
        self._speculation: UserTurnSpeculation | None = None
        self._extra_wait: asyncio.Task | None = None  # waiting longer for a turn that ends mid-phrase
        self._no_words: asyncio.Task | None = None  # ending a turn that brought no words

    async def handle_user_turn_started(self) -> None:
        await super().handle_user_turn_started()
        await self._new_turn()
        self._turn_open = True

    async def handle_user_turn_stopped(self) -> None:
        await super().handle_user_turn_stopped()
        await self._new_turn()
        self._turn_open = False

    async def _new_turn(self) -> None:
        await self._withdraw()  # a turn ended by the watchdog or an interruption leaves nothing held
        await self._stop_waiting()
        self._heard = ""

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop_waiting()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._caller_silent = self._heard_since_speech = False
            await self._stop_waiting()
            await self._withdraw()  # the caller goes on: the held reply answers an unfinished turn
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._caller_silent = True
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._heard = f"{self._heard} {frame.text.strip()}".strip()
            self._heard_since_speech = True
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            self._speculation = None  # the LLM withdrew it itself (a speculative reply may not call tools)
        result = await super().process_frame(frame)
        if self._turn_open and isinstance(frame, (VADUserStoppedSpeakingFrame, TranscriptionFrame)):
            await self._maybe_speculate()
            self._maybe_arm_no_words_timer()
        return result or ProcessFrameResult.CONTINUE

    async def _maybe_speculate(self) -> None:
        # A segmented STT transcribes only once the caller is silent: wait for the words of the last stretch.
        if not (self._speculate and self._caller_silent and self._heard_since_speech):
            return
        if self._speculation is not None:
            if self._speculation.text == self._heard:
                return
            await self._withdraw()  # more words arrived while the caller is silent: answer all of them
        self._speculation = UserTurnSpeculation(text=self._heard)
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    def _maybe_arm_no_words_timer(self) -> None:
        if self._no_words_timeout is None or self._heard or not self._caller_silent or self._no_words is not None:
            return
        self._no_words = self.task_manager.create_task(self._end_without_words(), f"{self}::no_words")

    async def _end_without_words(self) -> None:
        await asyncio.sleep(self._no_words_timeout or 0.0)
        self._no_words = None
        if not self._heard and self._extra_wait is None:
            await BaseUserTurnStopStrategy.trigger_user_turn_stopped(self)

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None) -> None:
        """The base strategy thinks the turn is over: wait longer if it ends mid-phrase, then confirm."""
        if self._extra_wait is not None:
            return
        if self._extra_delay > 0 and looks_unfinished(self._heard):
            self._extra_wait = self.task_manager.create_task(
                self._confirm_later(enable_user_speaking_frames), f"{self}::unfinished"
            )
            return
        await self._confirm(enable_user_speaking_frames)

    async def _confirm_later(self, enable_user_speaking_frames: bool | None) -> None:
        await asyncio.sleep(self._extra_delay)
        self._extra_wait = None
        await self._confirm(enable_user_speaking_frames)

    async def _confirm(self, enable_user_speaking_frames: bool | None) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and self._match.matches(speculation.text, self._heard):
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames, confirms_speculation=True
            )
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    async def _withdraw(self) -> None:
        if self._speculation is not None:
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()

    async def _stop_waiting(self) -> None:
        tasks = [self._extra_wait, self._no_words]
        self._extra_wait = self._no_words = None
        for task in tasks:
            if task is not None:
                await self.task_manager.cancel_task(task)


class SilenceEndpointing(Endpointing, SpeechTimeoutUserTurnStopStrategy):
    """The silence timeout (``turn.strategy: silence``) with speculation and dynamic endpointing."""


class SmartTurnEndpointing(Endpointing, TurnAnalyzerUserTurnStopStrategy):
    """smart-turn v3 (``turn.strategy: smart_turn``) with speculation and dynamic endpointing."""
