"""Slow tools are never silent: a filler is spoken when a tool has not answered in time.

Each tool call runs as a task. If it has not answered after ``filler_after_secs`` (the tool's, else the
deployment's ``fillers.after_secs``), its ``filler`` (else ``fillers.say``) is spoken: pushed from the LLM as a
``TTSSpeakFrame`` (a cascade's TTS speaks it; a text transport sends it as a reply of its own), or, in realtime
mode, asked of the model as a response that says it verbatim. The filler enters the history as the bot's
words, and the record keeps it with its delay (``CallEvent`` kind ``filler``).

Once a filler has been spoken, the reply is started at once. Left to pipecat, the result would reach the
assistant aggregator (and the context) only after the filler has played, since the output transport passes
data frames in step with the audio before them, and only then would the LLM run: a gap of a whole LLM + TTS
latency after the filler. Instead the LLM is given, as soon as the tool answers, a copy of the context with
the result in place of the call's ``IN_PROGRESS`` placeholder, and the result itself is delivered with
``run_llm=False`` (it settles in the real context, ahead of the reply, as usual). The reply's audio queues
behind the filler's, which is never cut. In realtime mode the same gap would be the model's response latency
(a realtime service answers a result once the assistant aggregator sends the context back upstream): the
copy is sent to it upstream, as the aggregator would, and the session answers at once (a response asked for
while the filler's is still generating is held by the service until that one is done). If the placeholder is
gone (the caller spoke meanwhile: pipecat then delivers the result as a message after their turn), the result
is delivered the usual way.

Tools are registered with ``cancel_on_interruption=False``: a caller who speaks while a tool runs is heard
(their turn enters the context), the tool goes on, and pipecat hands its result to the LLM together with what
the caller said (a result that arrives after a user turn is delivered as a message after it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    FunctionCallResultProperties,
    LLMContextFrame,
    LLMMessagesAppendFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams

from voxpipe.config.call_flow import tool_filler
from voxpipe.config.models import FillerConfig, ToolConfig
from voxpipe.pipeline.metering import CallMeter


class SlowToolFillers:
    """Runs one call's tool calls, speaking a filler for each one that is slow (see the module docstring)."""

    def __init__(
        self,
        default: FillerConfig | None,
        *,
        realtime: bool,
        meter: CallMeter | None = None,
        context: LLMContext | None = None,
    ):
        """``context``: the call's conversation (the assistant aggregator's), whose placeholder a slow tool's
        result replaces; without it, the tool call's own (a realtime service's may be one of its own)."""
        self.default = default
        self.realtime = realtime
        self.meter = meter
        self.context = context

    def filler_of(self, tool: ToolConfig) -> tuple[str, float] | None:
        """The tool's filler and the seconds it waits for it, or ``None`` if it has none."""
        return tool_filler(tool, self.default)

    async def run(self, tool: ToolConfig, params: FunctionCallParams, work: Awaitable[Any]) -> Any:
        """Run ``work`` (the tool call), speak the filler if it is slow, and deliver its result to the LLM."""
        started = time.monotonic()
        task = asyncio.ensure_future(work)
        spoke = False
        try:
            filler = self.filler_of(tool)
            if filler is not None:
                done, _ = await asyncio.wait({task}, timeout=filler[1])
                if not done:
                    spoke = True
                    await self._speak(tool, params, filler[0], time.monotonic() - started)
            result = await task
        finally:
            task.cancel()  # the handler itself was cancelled: so is the tool
        await self._deliver(params, result, spoke)
        return result

    async def _speak(self, tool: ToolConfig, params: FunctionCallParams, text: str, delay: float) -> None:
        logger.info(f"tool {tool.function_name} still running after {delay:.2f}s: filler {text!r}")
        if self.meter is not None:
            self.meter.note_event("filler", tool=tool.function_name, text=text, delay_secs=round(delay, 3))
        if self.realtime:
            message = {"role": "user", "content": f"While the tool runs, say exactly: {text}"}
            # Into the realtime service itself, which hands the message to the session; the assistant aggregator
            # then writes it into the context and sends the context back up, which asks the session to answer.
            # (Through the user aggregator, the session would get a context it does not answer.)
            await params.llm.queue_frame(LLMMessagesAppendFrame(messages=[message], run_llm=True))
        else:
            await params.llm.push_frame(TTSSpeakFrame(text))

    async def _deliver(self, params: FunctionCallParams, result: Any, spoke: bool) -> None:
        conversation = self.context if self.context is not None else params.context
        early = _with_result(conversation, params.tool_call_id, result) if spoke else None
        if early is None:
            await params.result_callback(result)
            return
        await params.result_callback(result, properties=FunctionCallResultProperties(run_llm=False))
        # a text LLM runs on a context from upstream; a realtime session answers one sent back from downstream
        direction = FrameDirection.UPSTREAM if self.realtime else FrameDirection.DOWNSTREAM
        await params.llm.queue_frame(LLMContextFrame(early), direction)


def _with_result(context: LLMContext, tool_call_id: str, result: Any) -> LLMContext | None:
    """A copy of ``context`` with ``result`` in place of the call's placeholder (``None`` if it has none)."""
    messages, found = [], False
    for message in context.get_messages():
        if isinstance(message, dict) and message.get("role") == "tool" and message.get("tool_call_id") == tool_call_id:
            found = True
            message = {**message, "content": json.dumps(result, ensure_ascii=False) if result else "COMPLETED"}
        messages.append(message)
    return LLMContext(messages, tools=context.tools, tool_choice=context.tool_choice) if found else None
