"""Barge-in that keeps the bot talking when the caller did not mean to take the turn.

Two features of the ``interruptions`` section, both on top of pipecat's user turn machinery:

- **Backchannels** (``interruptions.backchannels``): while the bot speaks, speech alone does not interrupt it
  (no VAD start strategy); the transcript decides. An acknowledgement ("uh-huh", "okay", "right") becomes a
  pipecat ``UserBackchannelFrame``: the bot keeps speaking and no reply is asked for (it is not a turn). It
  enters the history as what it was: a user message ``"(backchannel) uh-huh"`` placed after the reply it
  was said over (written once that reply is in the context, so the order is what the caller lived), and
  the call record's ``turn_taking.backchannels``. Anything else starts a turn and interrupts, as
  ``interruptions.min_words`` does.
- **False-interruption resume** (``interruptions.resume_after_secs``): speech interrupts at once (VAD), but
  when the turn that interrupted brings no words (a cough, a door), ``Endpointing`` ends it empty after
  ``resume_after_secs`` and ``ReplyResumer`` speaks the rest of the cut-off reply, from the first word the
  caller did not hear. What the caller heard is what pipecat's assistant aggregator already wrote to the
  context (TTS text that reached the output transport before the interruption), so the context stays a
  truthful record: the heard part, then the resumed part, as two assistant messages.
"""

from __future__ import annotations

import re
from typing import Any

from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserBackchannelFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMUserAggregator,
    UserBackchannelMessage,
    UserTurnStoppedMessage,
)
from pipecat.services.llm_service import LLMService
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import (
    BaseUserTurnStartStrategy,
    MinWordsUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)

from voxpipe.config.models import InterruptionsConfig
from voxpipe.records.model import TurnTaking

_WORDS = re.compile(r"[a-z']+(?:-[a-z']+)*")
#: How a backchannel reads in the history: the caller's words, marked as an acknowledgement, not a request.
BACKCHANNEL_MARK = "(backchannel) "


def is_backchannel(text: str, phrases: frozenset[str]) -> bool:
    """Whether ``text`` is only acknowledgement: a listed phrase, or words that each are one ("yeah, okay")."""
    words = _WORDS.findall(text.lower())
    return bool(words) and (" ".join(words) in phrases or all(word in phrases for word in words))


class BackchannelStartStrategy(MinWordsUserTurnStartStrategy):
    """Starts a turn on words, as ``min_words`` does; while the bot speaks, acknowledgements are not a turn."""

    def __init__(self, *, phrases: frozenset[str], min_words: int, **kwargs: Any):
        super().__init__(min_words=max(min_words, 1), **kwargs)
        self._phrases = phrases

    async def _handle_transcription(self, frame: TranscriptionFrame | InterimTranscriptionFrame) -> ProcessFrameResult:
        if not (self._bot_speaking and is_backchannel(frame.text, self._phrases)):
            return await super()._handle_transcription(frame)
        if isinstance(frame, TranscriptionFrame):  # an interim one may still grow into a real turn
            await self.push_frame(UserBackchannelFrame(frame.text, frame.user_id, frame.timestamp))
            await self.trigger_reset_aggregation()  # the words are not the start of the next turn
        return ProcessFrameResult.STOP


class ReplyResumer(BaseObserver):
    """Follows the bot's reply and what of it the caller heard; resumes it after a barge-in without words, and
    writes backchannels to the history after the reply they were said over."""

    def __init__(self, stats: TurnTaking, *, resume: bool):
        super().__init__()
        self.stats = stats
        self.resume = resume  # off: only backchannels are recorded
        self._reply = ""  # the text of the reply being spoken (LLM tokens, spaces included)
        self._heard: list[str] = []  # the words of it that reached the caller (TTS text past the output)
        self._cut: list[str] = []  # the words of the last interrupted reply the caller never heard
        self._seen: set[int] = set()
        self._context: LLMContext | None = None
        self._replying = False  # the assistant's turn is open: its message is not in the context yet
        self._pending_backchannels: list[str] = []  # said over that reply, written after it

    def attach(self, user: LLMUserAggregator, assistant: LLMAssistantAggregator) -> None:
        self._context = user.context
        user.add_event_handler("on_user_turn_stopped", self._on_user_turn_stopped)
        user.add_event_handler("on_user_backchannel", self._on_user_backchannel)
        assistant.add_event_handler("on_assistant_turn_started", self._on_assistant_turn_started)
        assistant.add_event_handler("on_assistant_turn_stopped", self._on_assistant_turn_stopped)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if frame.id in self._seen:
            return
        if isinstance(frame, LLMFullResponseStartFrame) and isinstance(data.source, LLMService):
            self._seen.add(frame.id)
            self._reply, self._heard = "", []
        elif isinstance(frame, LLMTextFrame) and isinstance(data.source, LLMService):
            self._seen.add(frame.id)
            self._reply += frame.text
        elif isinstance(frame, TTSTextFrame) and isinstance(data.destination, LLMAssistantAggregator):
            self._seen.add(frame.id)
            self._heard.extend(frame.text.split())
        elif isinstance(frame, InterruptionFrame) and isinstance(data.destination, LLMAssistantAggregator):
            self._seen.add(frame.id)
            self._cut = self._reply.split()[len(self._heard) :]
            self._reply, self._heard = "", []

    async def _on_user_turn_stopped(
        self, aggregator: LLMUserAggregator, strategy: Any, message: UserTurnStoppedMessage
    ) -> None:
        cut, self._cut = self._cut, []
        if self.resume and cut and not (message.content or "").strip():
            self.stats.resumed += 1
            await aggregator.push_frame(TTSSpeakFrame(" ".join(cut)))

    async def _on_user_backchannel(self, aggregator: LLMUserAggregator, message: UserBackchannelMessage) -> None:
        self.stats.backchannels.append(message.content)
        self._pending_backchannels.append(message.content)
        if not self._replying:  # (the reply it was said over is in the context already)
            self._write_backchannels()

    async def _on_assistant_turn_started(self, aggregator: LLMAssistantAggregator) -> None:
        self._replying = True

    async def _on_assistant_turn_stopped(self, aggregator: LLMAssistantAggregator, message: Any) -> None:
        self._replying = False  # pipecat has added the reply to the context before this event
        self._write_backchannels()

    def _write_backchannels(self) -> None:
        """The held backchannels as user messages at the end of the context; no reply is asked for."""
        pending, self._pending_backchannels = self._pending_backchannels, []
        if self._context is not None:
            for words in pending:
                self._context.add_message({"role": "user", "content": BACKCHANNEL_MARK + words})


def start_strategies(interruptions: InterruptionsConfig) -> list[BaseUserTurnStartStrategy]:
    """How a caller's turn starts (cascade): on words when backchannels or ``min_words`` are set, else on speech."""
    enabled = interruptions.enabled
    phrases = interruptions.backchannel_phrases()
    if phrases is not None:
        return [
            BackchannelStartStrategy(phrases=phrases, min_words=interruptions.min_words, enable_interruptions=enabled)
        ]
    if interruptions.min_words:
        return [MinWordsUserTurnStartStrategy(min_words=interruptions.min_words, enable_interruptions=enabled)]
    return [
        VADUserTurnStartStrategy(enable_interruptions=enabled),
        TranscriptionUserTurnStartStrategy(enable_interruptions=enabled),
    ]
