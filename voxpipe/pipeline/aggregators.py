"""The context aggregators of a call; in a cascade the caller's audio goes no further than the user aggregator.

In pipecat every frame a processor does not consume is pushed on to the next one, so each 20-40 ms frame of
caller audio travels the whole pipeline: STT, user aggregator, LLM, TTS, output transport, assistant
aggregator, the worker's sink, each hop a queue, a task wake-up and an observer notification. In a cascade
nothing after the user aggregator (whose VAD is the audio's last reader) uses it, so
``CascadeUserAggregator`` does not push it on: five of a frame's eight hops are gone. (A realtime pipeline's
audio goes on to the realtime service, which is after the aggregator: there the stock one is used.)

``aggregator_pair`` builds a cascade's pair as ``LLMContextAggregatorPair.__init__`` does (pinned in
``providers.cloud.pins.RELIED_ON``), with the cascade's user aggregator; other pipelines get the stock pair.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMAssistantAggregatorParams,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection


class CascadeUserAggregator(LLMUserAggregator):
    """``LLMUserAggregator`` that keeps the caller's audio: it is the last processor of a cascade that reads it."""

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, InputAudioRawFrame):
            return
        await super().push_frame(frame, direction)


def aggregator_pair(
    context: LLMContext, user_params: LLMUserAggregatorParams, *, realtime: bool, cascade: bool
) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
    """The user and assistant aggregators of ``context`` (``realtime``: the pair's realtime service mode)."""
    if not cascade:
        pair = LLMContextAggregatorPair(context, user_params=user_params, realtime_service_mode=realtime)
        return pair.user(), pair.assistant()
    user = CascadeUserAggregator(context, params=user_params, _realtime_service_mode=realtime)
    assistant = LLMAssistantAggregator(
        context, params=LLMAssistantAggregatorParams(), _realtime_service_mode=realtime, _paired_user_aggregator=user
    )
    return user, assistant
