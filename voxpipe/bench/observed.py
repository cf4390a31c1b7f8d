"""What an agent did during a call besides speaking: the tools it called and how it ended the call.

Scenario expectations (``tool_called``, ``no_tool``, ``ends_with``) are judged from these. Tool calls are
seen as pipecat's ``FunctionCallInProgressFrame`` (one per call the model makes, whatever the provider), so
they are observed the same in audio and text mode; ``end_call`` / ``transfer`` arrive through the call's
effect handler, exactly as a transport would receive them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import FunctionCallInProgressFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed


@dataclass(frozen=True)
class ToolUse:
    """One function call of the model: when (``time.monotonic()``), which function, with what arguments."""

    at: float
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Ending:
    """The agent ended the call: ``end_call`` or ``transfer``, at ``time.monotonic()`` ``at``."""

    at: float
    effect: str


class AgentActions(BaseObserver):
    """Observes one call's pipeline for tool calls; ``on_effect`` is the call's effect handler."""

    def __init__(self) -> None:
        super().__init__()
        self.tools: list[ToolUse] = []
        self.ending: Ending | None = None
        self._seen: set[str] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, FunctionCallInProgressFrame) and frame.tool_call_id not in self._seen:
            self._seen.add(frame.tool_call_id)
            self.tools.append(ToolUse(time.monotonic(), frame.function_name, dict(frame.arguments or {})))

    async def on_effect(self, effect: str, arguments: dict[str, Any]) -> None:
        if self.ending is None:
            self.ending = Ending(time.monotonic(), effect)

    def tools_between(self, start: float, end: float) -> list[ToolUse]:
        return [use for use in self.tools if start <= use.at < end]
