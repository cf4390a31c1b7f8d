"""Bench scenarios: a caller's multi-turn conversation and what the agent must do in it (docs/evals.md).

A scenario file holds one scenario (a mapping) or several (a list). It is read with the deployment loader's
machinery (ruamel line numbers, ``${VAR}``, pydantic), so a mistake is reported as ``file:line: key: message``
with the allowed values, and the CLI exits 2. A scenario either scripts the caller's ``turns`` or lets an LLM
play the ``caller`` from a persona and a goal; ``expect`` blocks say what must happen, per turn and per call.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from voxpipe.config import secrets
from voxpipe.config.errors import ConfigError, ConfigProblem
from voxpipe.config.loader import (
    INLINE_SECRET,
    Document,
    parse_document,
    provider_problems,
    pydantic_problem,
    tool_problems,
)
from voxpipe.config.models import ServiceConfig, Strict, ToolConfig
from voxpipe.providers.registry import Registry, default_registry

Mode = Literal["audio", "text"]
Ending = Literal["end_call", "transfer", "caller_hangup"]


class TextMatch(Strict):
    """Checks on a text (a reply, a tool argument); every check given must hold. Case-insensitive."""

    contains: str | list[str] | None = Field(None, description="Text (or every text of a list) that must appear.")
    not_contains: str | list[str] | None = Field(None, description="Text (or any of a list) that must not appear.")
    matches: str | None = Field(None, description="A regular expression that must match somewhere.")
    any_of: list[str] | None = Field(None, description="At least one of these texts must appear.")

    @field_validator("matches")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _checks_something(self) -> TextMatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of contains, not_contains, matches, any_of")
        return self


ArgumentMatch = TextMatch | str | int | float | bool | None


class ToolExpectation(Strict):
    """The agent called ``name`` in this turn, with ``arguments`` matching (literal values or text checks)."""

    name: str
    arguments: dict[str, ArgumentMatch] = Field(default_factory=dict)


class TurnExpectation(Strict):
    """What the agent's answer to one caller turn must be."""

    reply: TextMatch | None = None
    tool_called: ToolExpectation | None = None
    within_ms: float | None = Field(
        None, gt=0, description="Budget of this turn's voice-to-voice latency (text mode: first reply token), ms."
    )
    yields_within_ms: float = Field(
        1000, gt=0, description="With barge_in_after_ms: the bot must fall silent this soon after the caller starts."
    )


class ScenarioTurn(Strict):
    """One caller turn: words to synthesize (``say``) and/or a recorded WAV (``audio``), then expectations."""

    say: str | None = Field(None, description="What the caller says (spoken by the offline TTS in audio mode).")
    audio: str | None = Field(None, description="A 16-bit WAV of the caller's turn, relative to the scenario file.")
    barge_in_after_ms: float | None = Field(
        None, ge=0, description="Start speaking this long after the bot started its reply, while it still talks."
    )
    expect: TurnExpectation = Field(default_factory=TurnExpectation)

    @model_validator(mode="after")
    def _says_something(self) -> ScenarioTurn:
        if self.say is None and self.audio is None:
            raise ValueError("a turn needs 'say' (text) or 'audio' (a WAV file)")
        return self


class CallExpectation(Strict):
    """What must be true of the whole call."""

    ends_with: Ending | None = Field(
        None,
        description="How the call ends: the agent's end_call or transfer tool, "
        "or the caller hanging up after the last turn.",
    )
    no_tool: str | list[str] | None = Field(None, description="Tools the agent must never call.")
    judge: str | list[str] | None = Field(None, description="Rubrics an LLM judge scores on the transcript.")


class SimulatedCaller(Strict):
    """An LLM plays the caller: it gets the persona and goal, and answers the agent turn by turn."""

    persona: str = Field(description="Who the caller is and how they speak.")
    goal: str = Field(description="What the caller wants from the call.")
    max_turns: int = Field(6, ge=1, le=30, description="Most caller turns before the caller hangs up.")
    llm: ServiceConfig | None = Field(None, description="The caller's LLM (default: the bench's --judge LLM).")
    seed: int = Field(0, description="Passed to the LLM when its options take a seed.")
    temperature: float = Field(0.0, ge=0, le=2, description="Passed to the LLM when its options take one.")


class Scenario(Strict):
    """One conversation to play on every deployment of a bench."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str | None = None
    mode: Mode = Field(
        "audio",
        description="audio: turns are spoken through VAD, STT and turn-taking; "
        "text: transcripts go straight to the LLM (no STT/TTS; fast).",
    )
    turns: list[ScenarioTurn] | None = Field(None, min_length=1)
    caller: SimulatedCaller | None = None
    tools: list[ToolConfig] = Field(
        default_factory=list,
        description="Tools added to the agent for this scenario (same name: replaced), e.g. a mocked booking system.",
    )
    expect: CallExpectation = Field(default_factory=CallExpectation)
    source: Path = Field(Path("."), exclude=True, description="The file it was read from (for relative paths).")

    @model_validator(mode="after")
    def _one_caller(self) -> Scenario:
        if (self.turns is None) == (self.caller is None):
            raise ValueError("give either 'turns' (a scripted caller) or 'caller' (an LLM plays the caller)")
        if self.caller is not None and self.mode != "text":
            raise ValueError("an LLM caller plays in mode: text (spoken LLM callers are not supported yet)")
        if self.mode == "text":
            if any(turn.say is None for turn in self.turns or []):
                raise ValueError("mode text needs 'say' on every turn (the transcript that goes in)")
            if any(turn.barge_in_after_ms is not None for turn in self.turns or []):
                raise ValueError("barge_in_after_ms needs mode: audio (text mode has no speech to interrupt)")
        return self


SCENARIO_SUFFIXES = (".yaml", ".yml")


def load_scenarios(path: str | Path, registry: Registry | None = None) -> list[Scenario]:
    """Scenarios from one file or every ``*.yaml`` of a directory (sorted). Raises ``ConfigError``."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in SCENARIO_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ConfigError([ConfigProblem(str(path), None, "", "no scenario files (*.yaml) in this directory")])
    scenarios: list[Scenario] = []
    problems: list[ConfigProblem] = []
    for file in files:
        try:
            scenarios += _load_file(file, registry or default_registry())
        except ConfigError as exc:
            problems += exc.problems
    seen: dict[str, Path] = {}
    for scenario in scenarios:
        if scenario.name in seen:
            problems.append(
                ConfigProblem(str(scenario.source), None, "name", f"'{scenario.name}' is also in {seen[scenario.name]}")
            )
        seen.setdefault(scenario.name, scenario.source)
    if problems:
        raise ConfigError(problems)
    return scenarios


def _load_file(path: Path, registry: Registry) -> list[Scenario]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read file: {exc.strerror}")]) from None
    document = parse_document(text, str(path))
    items = document.data if isinstance(document.data, list) else [document.data]
    problems = list(document.problems)
    scenarios = []
    for index, item in enumerate(items):
        base = (index,) if isinstance(document.data, list) else ()
        if not isinstance(item, dict):
            problems.append(document.problem(base, "a scenario must be a mapping (name, turns or caller, expect)"))
            continue
        scenario, found = _validate(document, registry, item, base, path)
        problems += found
        if scenario is not None:
            scenarios.append(scenario)
    if problems:
        raise ConfigError(problems)
    return scenarios


def _validate(
    document: Document, registry: Registry, data: dict[str, Any], base: tuple[int, ...], path: Path
) -> tuple[Scenario | None, list[ConfigProblem]]:
    try:
        scenario = Scenario.model_validate({**data, "source": path})
    except ValidationError as exc:
        return None, [pydantic_problem(document, Scenario, base, data, err) for err in exc.errors()]
    problems = tool_problems(document, registry, scenario.tools, (*base, "tools"))
    if scenario.caller is not None and scenario.caller.llm is not None:
        llm, loc = scenario.caller.llm, (*base, "caller", "llm")
        problems += provider_problems(document, registry, "llm", llm.provider, llm.options, loc)
    problems += [
        document.problem((*base, *loc), INLINE_SECRET)
        for loc in secrets.credential_locs(data)
        if secrets.written_out(document.raw.get((*base, *loc)))
    ]
    for index, turn in enumerate(scenario.turns or []):
        if turn.audio is not None and not (path.parent / turn.audio).is_file():
            problems.append(document.problem((*base, "turns", index, "audio"), f"no such file: {turn.audio}"))
    return scenario, problems
