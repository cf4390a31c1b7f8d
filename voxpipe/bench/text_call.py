"""A conversation with a deployment's LLM in text: caller transcripts in, the agent's words out.

The pipeline is the cascade's middle without speech: user aggregator -> the deployment's ``llm`` role (its
fallback chain and tools) -> a reply collector -> assistant aggregator. Each caller turn goes in as a user
message that runs the LLM, as a final transcript would; the turn is over when the LLM has answered, every
tool call it made has returned, and nothing has moved for ``settle_secs``. Usage is metered and priced like
a call's. Text-mode scenarios, the LLM judge and the simulated caller all talk to an LLM this way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
)
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext, build_llm
from voxpipe.pipeline.metering import CallMeter
from voxpipe.pipeline.tools import tools_schema
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.records.model import Usage


@dataclass(frozen=True)
class TextReply:
    """The agent's answer to one turn; ``first_token_ms`` after the turn went in (``None``: no words)."""

    text: str
    first_token_ms: float | None
    timed_out: bool = False


class ReplyCollector(FrameProcessor):
    """Gathers the words of the current answer and knows whether the LLM or a tool is still busy."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[str] = []
        self.first_token_at: float | None = None
        self.responses = 0
        self.responding = False
        self.pending_tools: set[str] = set()
        self.last_change = time.monotonic()

    def reset(self) -> None:
        self.pieces, self.first_token_at, self.responses = [], None, 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMFullResponseStartFrame):
                self.responding = True
                self.responses += 1
            elif isinstance(frame, LLMTextFrame) and frame.text:
                self.pieces.append(frame.text)
                self.first_token_at = self.first_token_at or time.monotonic()
            elif isinstance(frame, LLMFullResponseEndFrame):
                self.responding = False
            elif isinstance(frame, FunctionCallInProgressFrame):
                self.pending_tools.add(frame.tool_call_id)
            elif isinstance(frame, FunctionCallResultFrame):
                self.pending_tools.discard(frame.tool_call_id)
            self.last_change = time.monotonic()
        await self.push_frame(frame, direction)

    def answered(self, settle_secs: float) -> bool:
        quiet = time.monotonic() - self.last_change > settle_secs
        return self.responses > 0 and not self.responding and not self.pending_tools and quiet


class TextConversation:
    """One text call: ``await say(text)`` per caller turn, then ``await close()`` (returns the usage)."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        call: CallContext | None = None,
        observers: list[BaseObserver] | None = None,
        registry: Registry | None = None,
        settle_secs: float = 0.3,
        reply_timeout_secs: float = 20.0,
    ):
        if not deployment.services("llm"):
            raise ValueError(f"{deployment.name}: text mode needs an llm role (a cascade); play it in mode: audio")
        self.call = call or CallContext()
        self.settle_secs, self.reply_timeout_secs = settle_secs, reply_timeout_secs
        registry = registry or default_registry()
        self.meter = CallMeter({}, price_overrides=deployment.pricing)
        llm = build_llm(deployment, self.call, registry, self.meter)
        greeting = deployment.agent.greeting
        history: list[Any] = [{"role": "assistant", "content": greeting}] if greeting else []
        tools = tools_schema(deployment.agent, registry)
        self.context = LLMContext(history, tools=tools) if tools else LLMContext(history)
        aggregators = LLMContextAggregatorPair(
            self.context, user_params=LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
        )
        self.collector = ReplyCollector()
        self.worker = PipelineWorker(
            Pipeline([aggregators.user(), llm, self.collector, aggregators.assistant()]),
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
            observers=[*self.meter.observers, *(observers or [])],
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            conversation_id=self.call.call_id,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._running: asyncio.Task[None] | None = None

    async def say(self, text: str) -> TextReply:
        """One caller turn: its transcript goes in, the agent's whole answer (after any tool calls) comes out."""
        if self._running is None:
            await self._runner.add_workers(self.worker)
            self._running = asyncio.create_task(self._runner.run())
        self.collector.reset()
        sent_at = time.monotonic()
        await self.worker.queue_frame(LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True))
        deadline = sent_at + self.reply_timeout_secs
        while not self.collector.answered(self.settle_secs) and time.monotonic() < deadline:
            if self._running.done():
                break
            await asyncio.sleep(0.02)
        first = self.collector.first_token_at
        return TextReply(
            " ".join("".join(self.collector.pieces).split()),
            None if first is None else round((first - sent_at) * 1000, 1),
            timed_out=time.monotonic() >= deadline,
        )

    async def close(self) -> list[Usage]:
        """End the pipeline and return what the call's services consumed, priced."""
        if self._running is not None:
            await self.worker.queue_frame(EndWorkerFrame())
            try:
                await asyncio.wait_for(self._running, timeout=10)
            except TimeoutError:
                await self._runner.cancel()
        return self.meter.usage()

    @property
    def errors(self) -> list[str]:
        return self.meter.errors
