"""Per-turn latency of a text-in/text-out call (ConversationRelay: Twilio does the speech both ways).

No audio passes through voxpipe, so a turn starts when the caller's words arrive as text (a ``prompt``, or a
keypad entry) and is measured to what voxpipe sends back: the reply's first token, and its last (the
``last: true`` that lets Twilio finish speaking). Both land in the call's ``TurnRecord``
(``llm_first_token_ms`` and ``reply_complete_ms``), and so in ``voxpipe calls`` and ``/metrics``, and in the
call's trace (``measured``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from voxpipe.pipeline.latency import MeasuredTurn
from voxpipe.records.model import TurnRecord


@dataclass
class TextTurn:
    """One exchange. Times are ``time.monotonic()`` seconds; ``None`` when the reply never got that far."""

    prompted_at: float
    heard: str
    reply: str = ""
    first_token_at: float | None = None
    last_token_at: float | None = None

    def _after_prompt_ms(self, moment: float | None) -> float | None:
        return None if moment is None else round((moment - self.prompted_at) * 1000, 1)

    def measured(self) -> MeasuredTurn:
        """The turn as a trace shows it: from the prompt (the caller's words, transcribed by Twilio) to the
        reply's last token (Twilio then speaks it), the LLM stage up to its first token."""
        return MeasuredTurn(
            user_speech_end=self.prompted_at,
            audio_out_first=self.last_token_at or self.first_token_at,
            heard=self.heard,
            reply=self.reply,
            llm_first_token=self.first_token_at,
        )

    def record(self, index: int) -> TurnRecord:
        return TurnRecord(
            index=index,
            heard=self.heard,
            reply=self.reply,
            llm_first_token_ms=self._after_prompt_ms(self.first_token_at),
            reply_complete_ms=self._after_prompt_ms(self.last_token_at),
        )


class TextTurnMeter:
    """Told what the caller said and what was sent back, in order; keeps one ``TextTurn`` per prompt."""

    def __init__(self) -> None:
        self._turns: list[TextTurn] = []

    def prompted(self, text: str) -> None:
        """The caller's words were handed to the LLM."""
        self._turns.append(TextTurn(time.monotonic(), text))

    def sent(self, token: str, *, last: bool) -> None:
        """A piece of the reply left for the peer (``last``: the reply is complete)."""
        if not self._turns:
            return
        turn, now = self._turns[-1], time.monotonic()
        if token and turn.first_token_at is None:
            turn.first_token_at = now
        turn.reply += token
        if last and turn.last_token_at is None:
            turn.last_token_at = now

    def turns(self) -> list[TextTurn]:
        return list(self._turns)

    def records(self) -> list[TurnRecord]:
        return [turn.record(index) for index, turn in enumerate(self._turns, 1)]
