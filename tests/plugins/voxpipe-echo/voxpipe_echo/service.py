"""The pipecat service of the `echo` LLM, emitting what voxpipe's LLM contract asks for."""

import asyncio
from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService

from voxpipe.providers.cloud import CloudService, llm_settings


class EchoLLMService(CloudService, LLMService):
    def __init__(self, *, model: str | None, instructions: str, options: Any, **kwargs: Any) -> None:
        super().__init__(settings=llm_settings(model, instructions), **kwargs)
        self._options = options

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._respond(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _respond(self, context: LLMContext) -> None:
        messages = context.get_messages()
        heard = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        words = f"{self._options.prefix} {heard}".split()
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        self.watchdog.expect("first token")  # an error after response_timeout_secs of silence
        try:
            await asyncio.sleep(self._options.latency_secs)
        finally:
            self.watchdog.received()
        await self.stop_ttfb_metrics()
        for index, word in enumerate(words):
            await self.push_frame(LLMTextFrame(word if index == 0 else f" {word}"))
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = LLMTokenUsage(prompt_tokens=prompt, completion_tokens=len(words), total_tokens=prompt + len(words))
        await self.start_llm_usage_metrics(usage)
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())
