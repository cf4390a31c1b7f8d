"""The turn-taking sections of a deployment file: ``turn:`` (when the caller's turn is over, speculative replies,
dynamic endpointing) and ``interruptions:`` (barge-in, backchannels, false-interruption resume). Most of them
are cascade-only: a realtime deployment that writes one is refused (``realtime_refusals``).

See docs/latency.md; ``voxpipe.pipeline.endpointing`` and ``voxpipe.pipeline.barge_in`` carry them out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import Discriminator, Field, Tag, model_validator

from voxpipe.config.strict import Strict

Loc: TypeAlias = tuple[str, ...]  # a key path in the deployment file


class TurnTiming(Strict):
    """Speculative replies and dynamic endpointing, shared by every turn strategy (docs/latency.md)."""

    speculate: bool = Field(
        False,
        description="Start the reply (LLM) on the transcript so far at the first sign the turn may be over "
        "(VAD stop); hold it until the turn is confirmed, withdraw it if the caller goes on or the final "
        "transcript differs. Withdrawn replies are never heard; their cost is reported as wasted.",
    )
    min_delay_secs: float | None = Field(
        None, ge=0, description="Silence that ends a turn whose transcript looks complete (silence: timeout_secs)."
    )
    max_delay_secs: float | None = Field(
        None,
        ge=0,
        description="Silence that ends a turn whose transcript ends mid-phrase (a trailing 'and', a number being "
        "dictated). Default: min_delay_secs, i.e. no dynamic endpointing.",
    )

    @model_validator(mode="after")
    def _delays_in_order(self) -> TurnTiming:
        if self.max_delay_secs is not None and self.max_delay_secs < self.min_delay:
            raise ValueError(f"max_delay_secs ({self.max_delay_secs:g}) must be >= min_delay_secs ({self.min_delay:g})")
        return self

    @property
    def min_delay(self) -> float:
        """Seconds of silence that end a turn that looks complete."""
        return self.min_delay_secs if self.min_delay_secs is not None else 0.0

    @property
    def unfinished_extra_delay(self) -> float:
        """Seconds added to the wait when the transcript ends mid-phrase."""
        return 0.0 if self.max_delay_secs is None else self.max_delay_secs - self.min_delay


class SilenceTurn(TurnTiming):
    """End the user's turn after a fixed silence following the VAD's stop."""

    strategy: Literal["silence"] = "silence"
    timeout_secs: float = Field(0.6, ge=0, description="Silence after VAD stop that ends the turn.")

    @property
    def min_delay(self) -> float:
        return self.min_delay_secs if self.min_delay_secs is not None else self.timeout_secs


class SmartTurn(TurnTiming):
    """End the user's turn when the smart-turn v3 model says the utterance is complete.

    With ``max_delay_secs``, a turn the model calls complete but whose transcript ends mid-phrase waits
    ``max_delay_secs - min_delay_secs`` more for the caller to go on.
    """

    strategy: Literal["smart_turn"]
    max_silence_secs: float = Field(3.0, gt=0, description="End the turn anyway after this much silence.")


def _turn_strategy(value: Any) -> str:
    """``strategy`` picks the turn model; without it, the silence timeout applies."""
    found = value.get("strategy") if isinstance(value, dict) else getattr(value, "strategy", None)
    return found or "silence"


TurnConfig = Annotated[
    Annotated[SilenceTurn, Tag("silence")] | Annotated[SmartTurn, Tag("smart_turn")],
    Discriminator(_turn_strategy),
]


DEFAULT_BACKCHANNELS = (
    *("uh-huh", "uh huh", "mhm", "mm-hmm", "mm hmm", "hmm", "okay", "ok", "right", "yeah", "yes", "sure", "i see"),
)


class InterruptionsConfig(Strict):
    """Barge-in: whether the caller may interrupt the bot, how many words it takes, and what does not count."""

    enabled: bool = True
    min_words: int = Field(0, ge=0, description="Words the caller must say before the bot stops (0: any speech).")
    backchannels: list[str] | None = Field(
        None,
        description="Acknowledgements that leave the bot speaking ('uh-huh', 'okay', 'right'). With a list, speech "
        "while the bot talks interrupts only once its transcript is something else; [] is the built-in list.",
    )
    resume_after_secs: float | None = Field(
        None,
        gt=0,
        description="When a barge-in brings no words within this many seconds after the caller goes quiet (a "
        "cough, a noise), the bot resumes its cut-off reply from what the caller last heard.",
    )

    def backchannel_phrases(self) -> frozenset[str] | None:
        """The backchannel phrases in use (``None``: the feature is off)."""
        if self.backchannels is None:
            return None
        return frozenset(p.lower() for p in (self.backchannels or DEFAULT_BACKCHANNELS))


_SERVER_VAD = "in realtime mode the provider's server VAD ends the caller's turn"
_REALTIME_ONLY_CASCADE = {
    "speculate": f"speculative replies need a cascade (an LLM apart from the STT); {_SERVER_VAD} and answers it",
    "timeout_secs": f"{_SERVER_VAD} after vad.stop_secs of silence (silence_duration_ms): set vad.stop_secs",
    "min_delay_secs": f"{_SERVER_VAD} after vad.stop_secs of silence (silence_duration_ms): set vad.stop_secs",
    "max_delay_secs": f"dynamic endpointing reads the transcript before the turn ends; {_SERVER_VAD} on audio",
    "max_silence_secs": f"{_SERVER_VAD}; smart-turn does not run",
}
_SERVER_BARGE_IN = (
    "in realtime mode the provider's server VAD stops the bot on speech, before any words are known; "
    "interruptions.enabled: false keeps the bot speaking"
)


def realtime_refusals(turn: SilenceTurn | SmartTurn, interruptions: InterruptionsConfig) -> list[tuple[Loc, str]]:
    """The turn-taking settings of a realtime deployment, changed from their defaults, that only a cascade can
    carry out, each as ``(key path, why)``; the loader reports them as config errors rather than letting them
    do nothing.

    What does apply to realtime is the ``vad`` section (threshold, prefix padding, silence duration), the
    provider's ``turn_detection``/``eagerness`` options (semantic VAD is realtime's model-based end of turn)
    and ``interruptions.enabled``.
    """
    refused: list[tuple[Loc, str]] = []
    if isinstance(turn, SmartTurn):
        why = f"{_SERVER_VAD}; for a model-based end of turn set the realtime provider's turn_detection: semantic_vad"
        refused.append((("turn", "strategy"), why))
    refused += [(("turn", key), why) for key, why in _REALTIME_ONLY_CASCADE.items() if _changed(turn, key)]
    barge_in = ("min_words", "backchannels", "resume_after_secs")
    refused += [(("interruptions", key), _SERVER_BARGE_IN) for key in barge_in if _changed(interruptions, key)]
    return refused


def _changed(section: Strict, key: str) -> bool:
    """Whether ``section`` has ``key`` with a value other than its default (a merged variant writes every key)."""
    field = type(section).model_fields.get(key)
    return field is not None and getattr(section, key) != field.default
