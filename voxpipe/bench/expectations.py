"""Judging a scenario's expectations on a played conversation, one ``Verdict`` each.

The conversation is described the same way whatever the mode (``PlayedConversation``), so audio and text
runs of one scenario are judged by the same code. Text checks are case-insensitive and ignore runs of
whitespace. A turn that was never played (the agent had already ended the call) fails its expectations. The
LLM judge lives in ``voxpipe.bench.judge``: it needs a model, these checks do not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from voxpipe.bench.observed import ToolUse
from voxpipe.bench.scenario import ArgumentMatch, CallExpectation, ScenarioTurn, TextMatch, ToolExpectation
from voxpipe.records.model import Verdict


@dataclass
class PlayedTurn:
    """One caller turn as it happened: the caller's words, the agent's answer, its latency and tool calls."""

    said: str
    reply: str | None = None  # None: the turn was never played (the call had ended)
    latency_ms: float | None = None  # voice-to-voice (audio) or first token (text)
    tools: list[ToolUse] = field(default_factory=list)
    yielded_ms: float | None = None  # barge-in: how soon the bot fell silent after the caller began
    barge_in_problem: str | None = None  # barge-in could not happen, and why
    heard: str = ""  # what the STT transcribed (audio mode)


@dataclass
class PlayedConversation:
    """A whole call: greeting, turns, every tool call, and how it ended."""

    greeting: str
    turns: list[PlayedTurn]
    tools: list[ToolUse]
    ending: str  # end_call | transfer | caller_hangup

    def transcript(self) -> str:
        """The call as lines of text (for the judge, the simulated caller and the HTML report)."""
        lines = [f"Agent: {self.greeting}"] if self.greeting else []
        for turn in self.turns:
            if turn.reply is None:
                break
            lines.append(f"Caller: {turn.said}")
            lines += [f"[agent called {use.name}({_compact(use.arguments)})]" for use in turn.tools]
            lines.append(f"Agent: {turn.reply or '(no answer)'}")
        if self.ending != "caller_hangup":
            lines.append(f"[the agent ended the call: {self.ending}]")
        return "\n".join(lines)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else value


def text_problems(match: TextMatch, text: str) -> list[str]:
    """What ``text`` fails of ``match`` (empty: it passes)."""
    normal = _norm(text)
    problems = [f'no "{want}"' for want in _as_list(match.contains) if _norm(want) not in normal]
    problems += [f'has "{unwanted}"' for unwanted in _as_list(match.not_contains) if _norm(unwanted) in normal]
    if match.matches is not None and not re.search(match.matches, text, re.IGNORECASE):
        problems.append(f"does not match /{match.matches}/")
    if match.any_of is not None and not any(_norm(option) in normal for option in match.any_of):
        problems.append("none of " + ", ".join(f'"{option}"' for option in match.any_of))
    return problems


def _argument_problems(expected: dict[str, ArgumentMatch], arguments: dict[str, Any]) -> list[str]:
    problems = []
    for name, want in expected.items():
        if name not in arguments:
            problems.append(f"no argument {name}")
        elif isinstance(want, TextMatch):
            problems += [f"{name}={_compact(arguments[name])}: {p}" for p in text_problems(want, str(arguments[name]))]
        elif arguments[name] != want and _norm(str(arguments[name])) != _norm(str(want)):
            problems.append(f"{name}={_compact(arguments[name])}, expected {_compact(want)}")
    return problems


def _tool_verdict(index: int, expected: ToolExpectation, turn: PlayedTurn) -> Verdict:
    calls = [use for use in turn.tools if use.name == expected.name]
    if not calls:
        made = ", ".join(use.name for use in turn.tools) or "none"
        return Verdict(
            expectation="tool_called", turn=index, outcome="fail", detail=f"{expected.name} not called (called: {made})"
        )
    attempts = [(_argument_problems(expected.arguments, use.arguments), use) for use in calls]
    good = next((use for problems, use in attempts if not problems), None)
    if good is not None:
        return Verdict(
            expectation="tool_called", turn=index, outcome="pass", detail=f"{good.name}({_compact(good.arguments)})"
        )
    problems, use = attempts[0]
    return Verdict(
        expectation="tool_called", turn=index, outcome="fail", detail=f"{use.name} called with " + "; ".join(problems)
    )


def turn_verdicts(index: int, scripted: ScenarioTurn, turn: PlayedTurn) -> list[Verdict]:
    """The verdicts of one caller turn's expectations (``index`` is 1-based)."""
    expect = scripted.expect
    names = [
        name
        for name, given in (
            ("reply", expect.reply),
            ("tool_called", expect.tool_called),
            ("within_ms", expect.within_ms),
            ("barge_in", scripted.barge_in_after_ms),
        )
        if given is not None
    ]
    if turn.reply is None:
        detail = "never played: the call had already ended"
        return [Verdict(expectation=name, turn=index, outcome="fail", detail=detail) for name in names]
    verdicts = []
    if expect.reply is not None:
        problems = text_problems(expect.reply, turn.reply)
        outcome = "fail" if problems else "pass"
        detail = "; ".join(problems) + f' in "{turn.reply}"' if problems else turn.reply
        verdicts.append(Verdict(expectation="reply", turn=index, outcome=outcome, detail=detail))
    if expect.tool_called is not None:
        verdicts.append(_tool_verdict(index, expect.tool_called, turn))
    if expect.within_ms is not None:
        if turn.latency_ms is None:
            verdicts.append(Verdict(expectation="within_ms", turn=index, outcome="fail", detail="no reply measured"))
        else:
            outcome = "pass" if turn.latency_ms <= expect.within_ms else "fail"
            detail = f"{turn.latency_ms:.0f} ms (budget {expect.within_ms:.0f} ms)"
            verdicts.append(Verdict(expectation="within_ms", turn=index, outcome=outcome, detail=detail))
    if scripted.barge_in_after_ms is not None:
        verdicts.append(_barge_in_verdict(index, expect.yields_within_ms, turn))
    return verdicts


def _barge_in_verdict(index: int, budget_ms: float, turn: PlayedTurn) -> Verdict:
    if turn.barge_in_problem is not None or turn.yielded_ms is None:
        detail = turn.barge_in_problem or "not measured"
        return Verdict(expectation="barge_in", turn=index, outcome="fail", detail=detail)
    outcome = "pass" if turn.yielded_ms <= budget_ms else "fail"
    detail = f"the bot fell silent {turn.yielded_ms:.0f} ms after the caller began (budget {budget_ms:.0f} ms)"
    return Verdict(expectation="barge_in", turn=index, outcome=outcome, detail=detail)


def call_verdicts(expect: CallExpectation, conversation: PlayedConversation) -> list[Verdict]:
    """The verdicts of the call-level expectations, except ``judge`` (see ``voxpipe.bench.judge``)."""
    verdicts = []
    if expect.ends_with is not None:
        outcome = "pass" if conversation.ending == expect.ends_with else "fail"
        detail = f"ended with {conversation.ending}" + ("" if outcome == "pass" else f", expected {expect.ends_with}")
        verdicts.append(Verdict(expectation="ends_with", outcome=outcome, detail=detail))
    for name in _as_list(expect.no_tool):
        calls = [use for use in conversation.tools if use.name == name]
        detail = f"{name}({_compact(calls[0].arguments)}) was called" if calls else f"{name} never called"
        verdicts.append(Verdict(expectation="no_tool", outcome="fail" if calls else "pass", detail=detail))
    return verdicts
