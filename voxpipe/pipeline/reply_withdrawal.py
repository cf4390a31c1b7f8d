"""``ReplyWithdrawal``: keeps a realtime reply that a dropped connection cut short out of the conversation.

A realtime session whose connection drops in the middle of a reply ends that reply (as ``response.done``
would) and asks for it again: from the reopened session, or from a backup provider. The assistant aggregator
has by then written the part that was spoken as an assistant message, so the history would hold the fragment
and then the whole reply. The session marks such an ending with a ``ReplyCutFrame``; this processor, placed
after the assistant aggregator (which handles frames in order, so the fragment is written before the mark
arrives), removes that last assistant message. Only the conversation changes: the caller heard the fragment,
and the call's record and transcript keep it.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voxpipe.pipeline.frames import ReplyCutFrame


class ReplyWithdrawal(FrameProcessor):
    """After the assistant aggregator of ``context``: a ``ReplyCutFrame`` withdraws the reply just written."""

    def __init__(self, context: LLMContext) -> None:
        super().__init__()
        self._context = context

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ReplyCutFrame):
            messages = self._context.get_messages()
            if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
                self._context.set_messages(messages[:-1])
            return
        await self.push_frame(frame, direction)
