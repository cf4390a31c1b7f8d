"""``silence:``: a caller who says nothing is re-prompted, then told goodbye and hung up on.

The timer is pipecat's own user-idle timer (``LLMUserAggregatorParams.user_idle_timeout``): it starts when the
bot stops speaking and runs only while neither side speaks and no tool is running, and the user aggregator
fires ``on_user_turn_idle`` when it expires. ``SilenceWatch`` answers each expiry with the next re-prompt
(spoken text that enters the history as the bot's words, not an LLM turn), and after the last one with the
goodbye, through the transport's end-of-call path, the one a tool's ``end_call`` takes (the record's
``end_reason`` is ``caller_silent``). Between re-prompts the timeout is ``reprompt_after_secs``; after the
last one it is ``hangup_after_secs`` (switched at run time with ``UserIdleTimeoutUpdateFrame``). Anything the
caller says starts the count again.

A text transport (ConversationRelay) has no bot or caller speech frames: its output reports the start and end
of each reply as the bot's speech, and it calls ``caller_spoke`` when a prompt arrives; until the reply to
that prompt has been sent, an expiring timer is ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import UserIdleTimeoutUpdateFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator, LLMUserAggregator

from voxpipe.config.models import SilenceConfig
from voxpipe.pipeline.metering import CallMeter
from voxpipe.pipeline.tools import EffectHandler

END_REASON = "caller_silent"


def first_timeout(config: SilenceConfig) -> float:
    """The silence before the first re-prompt (or the goodbye, when there are no re-prompts)."""
    return config.reprompt_after_secs if config.reprompts else config.hangup_after_secs


class SilenceWatch:
    """Re-prompts a silent caller, then hangs up (see the module docstring)."""

    def __init__(
        self,
        config: SilenceConfig,
        worker: PipelineWorker,
        meter: CallMeter,
        speak: Callable[[str], Awaitable[None]],
        on_effect: EffectHandler,
    ):
        self.config = config
        self._worker = worker
        self._meter = meter
        self._speak = speak
        self._on_effect = on_effect
        self._reprompted = 0
        self._answering = False  # text transports: a caller's prompt is being answered
        self._ended = False

    def attach(self, user: LLMUserAggregator, assistant: LLMAssistantAggregator) -> None:
        user.add_event_handler("on_user_turn_idle", self._on_idle)
        user.add_event_handler("on_user_turn_started", self._on_user_turn_started)
        assistant.add_event_handler("on_assistant_turn_stopped", self._on_assistant_turn_stopped)

    async def caller_spoke(self, *, answering: bool = False) -> None:
        """The caller said something: the count starts again (``answering``: a reply to it is coming)."""
        self._answering = answering
        if self._reprompted:
            self._reprompted = 0
            await self._worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=first_timeout(self.config)))

    async def _on_user_turn_started(self, aggregator: object, *args: Any) -> None:
        await self.caller_spoke()

    async def _on_assistant_turn_stopped(self, aggregator: object, *args: Any) -> None:
        self._answering = False

    async def _on_idle(self, aggregator: object) -> None:
        if self._ended or self._answering:
            return
        reprompts = self.config.reprompts
        if self._reprompted < len(reprompts):
            text = reprompts[self._reprompted]
            self._reprompted += 1
            self._meter.note_event("reprompt", text=text)
            logger.info(f"call {self._worker.name}: caller silent; re-prompt {self._reprompted}/{len(reprompts)}")
            if self._reprompted == len(reprompts):
                await self._worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=self.config.hangup_after_secs))
            await self._speak(text)
            return
        self._ended = True
        self._meter.note_event("silence_hangup", text=self.config.goodbye)
        self._meter.end_reason = END_REASON
        logger.info(f"call {self._worker.name}: caller silent; saying goodbye and hanging up")
        await self._worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=0))
        await self._speak(self.config.goodbye)
        result = {"status": "ok", "effect": "end_call"}
        await self._on_effect("end_call", {"reason": END_REASON, "result": result})
