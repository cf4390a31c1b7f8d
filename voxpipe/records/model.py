"""What a call leaves behind: its turns, latencies, usage per provider and model, and what it cost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class Usage(BaseModel):
    """What one provider and model consumed during a call, in billing units (token counts are net buckets)."""

    role: str = Field(description="stt, llm, tts or realtime.")
    provider: str
    model: str | None = None
    audio_seconds: float = Field(0.0, description="Seconds of audio transcribed (STT).")
    characters: int = Field(0, description="Characters synthesised (TTS).")
    text_input_tokens: int = Field(0, description="Uncached text input tokens.")
    cached_text_input_tokens: int = Field(0, description="Text input tokens read from the prompt cache.")
    audio_input_tokens: int = Field(0, description="Uncached audio input tokens (realtime).")
    cached_audio_input_tokens: int = Field(0, description="Audio input tokens read from the prompt cache.")
    text_output_tokens: int = Field(0, description="Text output tokens, reasoning included.")
    audio_output_tokens: int = Field(0, description="Audio output tokens (realtime).")
    cost_usd: float = Field(0.0, description="Cost of this usage at the call's prices, in US dollars.")


class TurnRecord(BaseModel):
    """One exchange. Latencies are milliseconds after the end of the caller's speech (docs/latency.md)."""

    index: int
    heard: str = Field("", description="What the STT (or realtime model) transcribed.")
    reply: str = Field("", description="What the bot said.")
    stt_final_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    voice_to_voice_ms: float | None = Field(None, description="End of caller speech to first audible reply.")
    reply_complete_ms: float | None = Field(
        None, description="Text calls (ConversationRelay): the caller's prompt to the reply's last token sent."
    )


class FallbackEvent(BaseModel):
    """The call moved a role from one provider to the next."""

    role: str
    from_provider: str
    to_provider: str
    reason: str
    at_secs: float = Field(description="Seconds since the call started.")


class CallError(BaseModel):
    """Something that went wrong during a call, and which provider it came from (when one did)."""

    role: str | None = Field(None, description="stt, llm, tts or realtime; None when no provider is to blame.")
    provider: str | None = None
    kind: str = Field(
        "unknown",
        description="pipecat's error category (authentication, rate_limit, server, "
        "connectivity, ...), or 'build' when the provider could not even be built.",
    )
    message: str
    fatal: bool = Field(False, description="Whether it ended the call (no backup provider was left).")
    at_secs: float | None = Field(None, description="Seconds since the call started.")

    def summary(self) -> str:
        """One line naming the role, the provider and the error."""
        who = " ".join(part for part in (self.role, self.provider) if part)
        return f"{who + ': ' if who else ''}{self.kind}: {self.message}"


class CallFailure(BaseModel):
    """How a call that could not go on was ended (the deployment's ``on_failure``), and why.

    Each transport carries it out its own way: Twilio speaks ``say`` with its own voice and dials or hangs up,
    ConversationRelay sends it as the last text and ends with handoff data, ``voxpipe call`` prints it.
    """

    say: str = Field(description="What the caller is told.")
    then: Literal["hangup", "transfer"] = "hangup"
    transfer_to: str | None = Field(None, description="Where the call is transferred (then: transfer).")
    error: CallError = Field(description="The error that ended the call.")
    at_secs: float | None = Field(None, description="Seconds since the call started when the transport was told.")


class Verdict(BaseModel):
    """One expectation of a bench scenario, judged on one call (docs/evals.md)."""

    expectation: str = Field(description="What was checked: reply, tool_called, within_ms, barge_in, ends_with, ...")
    turn: int | None = Field(None, description="The caller turn it is about (1-based); None for the whole call.")
    outcome: Literal["pass", "fail", "error"] = Field(
        description="error: it could not be judged (a judge without a verdict, a call that raised); never a pass."
    )
    detail: str = Field("", description="What was expected and what happened, or the judge's reason.")
    cost_usd: float = Field(0.0, description="What judging it cost (an LLM judge), apart from the call's cost.")


class CallEvent(BaseModel):
    """Something the call did to avoid dead air or hand the caller over (docs/calls.md).

    ``reprompt`` and ``silence_hangup`` (the caller went quiet), ``filler`` (a slow tool: ``delay_secs`` from
    the tool's start to the filler), ``transfer``: requested (``mode`` cold or warm, ``to``, a warm one's
    ``summary`` the person called heard; ``answered`` not known yet), then a warm one's outcome: ``answered``
    or not after ``ring_secs``, with Twilio's ``status`` of the dial leg; an unanswered one is noted when the
    caller is back with the agent, with what the agent said (``text``).
    """

    kind: Literal["reprompt", "silence_hangup", "filler", "transfer"]
    at_secs: float = Field(description="Seconds since the call started.")
    text: str | None = Field(None, description="What the caller was told.")
    tool: str | None = None
    delay_secs: float | None = None
    mode: Literal["cold", "warm"] | None = None
    to: str | None = None
    answered: bool | None = None
    ring_secs: float | None = None
    summary: str | None = None
    status: str | None = Field(None, description="A warm transfer's dial leg: in-progress, no-answer, busy, ...")


class TurnTaking(BaseModel):
    """What the turn-taking features did during a call (docs/latency.md); all zero when they are off."""

    speculations: int = Field(0, description="Replies started before the caller's turn was confirmed.")
    withdrawn: int = Field(0, description="Speculative replies withdrawn before the caller heard any of them.")
    wasted_usage: list[Usage] = Field(
        default_factory=list, description="Usage of withdrawn replies, priced (not in the call's usage)."
    )
    wasted_estimated: int = Field(
        0,
        description="Withdrawn replies cancelled before their provider reported usage: their input tokens are "
        "estimated from the request that replaced them, their output counted as none.",
    )
    resumed: int = Field(0, description="Replies resumed after a barge-in that brought no words.")
    backchannels: list[str] = Field(
        default_factory=list, description="Acknowledgements the caller said while the bot kept speaking."
    )
    premature_replies: int = Field(
        0, description="Replies the caller heard while still to say more of the turn (simulated calls only)."
    )

    @property
    def wasted_cost_usd(self) -> float:
        """US dollars spent on withdrawn replies."""
        return sum(u.cost_usd for u in self.wasted_usage)


class Recording(BaseModel):
    """One connection's stereo WAV. A call that reconnects (a dropped socket, a caller back from a warm
    transfer) has one per connection, each in a file of its own, in order."""

    location: str = Field(description="Where the WAV is: a file:// or s3:// URI.")
    offset_secs: float = Field(0.0, description="When its connection started, in seconds since the call started.")
    turns: list[int] = Field(
        default_factory=list, description="The record's turns (their ``index``) this connection's audio holds."
    )


class CallRecord(BaseModel):
    """Everything measured about one call."""

    call_id: str
    deployment: str
    mode: str
    started_at: datetime
    duration_secs: float
    caller_id: str | None = None
    experiment: str | None = None
    variant: str | None = None
    turns: list[TurnRecord] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)
    fallbacks: list[FallbackEvent] = Field(default_factory=list)
    errors: list[CallError] = Field(default_factory=list)
    failure: CallFailure | None = Field(None, description="Set when the call ended through on_failure.")
    events: list[CallEvent] = Field(default_factory=list)
    end_reason: str | None = Field(None, description="Why voxpipe ended the call, e.g. caller_silent.")
    missed_turns: int = Field(
        0, description="Caller turns talked over before any reply: the caller ended a turn and spoke again unanswered."
    )
    turn_taking: TurnTaking = Field(default_factory=TurnTaking)
    scenario: str | None = Field(None, description="The bench scenario this call played, if any.")
    verdicts: list[Verdict] = Field(default_factory=list, description="The scenario's expectations, judged.")
    recordings: list[Recording] = Field(
        default_factory=list,
        description="The call's stereo recordings, one per connection, in order; none: not recorded.",
    )

    def continuing(self, earlier: CallRecord) -> CallRecord:
        """This record of a call's later connection (a reconnect, a caller back from a warm transfer) joined to
        the ``earlier`` connections' record of the same call, so the call keeps one record and loses nothing:
        its turns, usage, events and errors in order (times from the first connection's start)."""
        shift = (self.started_at - earlier.started_at).total_seconds()
        turns_before = len(earlier.turns)

        def shifted(items: list[Any]) -> list[Any]:
            return [i.model_copy(update={"at_secs": i.at_secs + shift}) if i.at_secs is not None else i for i in items]

        taking = {
            name: getattr(earlier.turn_taking, name) + getattr(self.turn_taking, name)
            for name in TurnTaking.model_fields
        }
        return self.model_copy(
            update={
                "started_at": earlier.started_at,
                "duration_secs": shift + self.duration_secs,
                "caller_id": self.caller_id or earlier.caller_id,
                "turns": earlier.turns + [t.model_copy(update={"index": turns_before + t.index}) for t in self.turns],
                "usage": earlier.usage + self.usage,
                "fallbacks": earlier.fallbacks + shifted(self.fallbacks),
                "errors": earlier.errors + shifted(self.errors),
                "events": earlier.events + shifted(self.events),
                "failure": self.failure or earlier.failure,
                "missed_turns": earlier.missed_turns + self.missed_turns,
                "turn_taking": TurnTaking(**taking),
                "recordings": earlier.recordings
                + [
                    r.model_copy(
                        update={"offset_secs": r.offset_secs + shift, "turns": [turns_before + i for i in r.turns]}
                    )
                    for r in self.recordings
                ],
            }
        )

    @classmethod
    def starting_now(cls, deployment: str, mode: str, **fields: Any) -> CallRecord:
        """A record of a call that starts now, with a fresh id; the caller fills in what it measures."""
        now = datetime.now(UTC)
        return cls(
            call_id=uuid.uuid4().hex, deployment=deployment, mode=mode, started_at=now, duration_secs=0.0, **fields
        )

    @property
    def passed(self) -> bool | None:
        """Whether every expectation passed (``None``: not a scenario call)."""
        return all(v.outcome == "pass" for v in self.verdicts) if self.scenario else None

    @model_validator(mode="before")
    @classmethod
    def _one_recording(cls, data: Any) -> Any:
        """Records written before a call kept one recording per connection held its location as ``recording``."""
        if not isinstance(data, dict) or "recording" not in data:
            return data
        data = dict(data)
        location = data.pop("recording")
        if location and "recordings" not in data:  # its one connection's audio holds every turn
            turns = [t["index"] if isinstance(t, dict) else t.index for t in data.get("turns") or []]
            data["recordings"] = [{"location": location, "turns": turns}]
        return data

    @field_validator("errors", mode="before")
    @classmethod
    def _plain_messages(cls, errors: Any) -> Any:
        """Records written before errors were structured kept only the message."""
        return [{"message": e} if isinstance(e, str) else e for e in errors or []]

    @property
    def failed(self) -> bool:
        """Whether the call ended because a provider could not go on."""
        return self.failure is not None or any(e.fatal for e in self.errors)

    @property
    def cost_usd(self) -> float:
        """Total cost of the call in US dollars."""
        return sum(u.cost_usd for u in self.usage)

    def cost_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for usage in self.usage:
            out[usage.role] = out.get(usage.role, 0.0) + usage.cost_usd
        return out

    @property
    def cost_per_minute(self) -> float:
        """US dollars per minute of call time."""
        return self.cost_usd / (self.duration_secs / 60) if self.duration_secs > 0 else 0.0
