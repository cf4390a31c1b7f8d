"""What speculative replies cost: LLM usage of a reply nobody heard goes to "wasted", not to the call's usage.

A speculative inference (``voxpipe.pipeline.endpointing``) reaches the LLM as an ``LLMContextFrame`` with
``speculation=True``. Its usage is held from then until the turn settles it: a ``UserStoppedSpeakingFrame``
confirms it (the reply is released and heard, so the usage is the call's), an ``EagerEndOfTurnCancelFrame``
withdraws it (the usage is wasted). A call that ends with one still held never played it: wasted too.

A withdrawn inference is often cancelled mid-stream, before its provider reports usage (OpenAI sends it
last). Its prompt was still billed, so it is estimated: the next LLM usage record of the call (the request
re-run on the whole turn, whose prompt holds the withdrawn one's) is counted once more as wasted, without its
output tokens, and ``TurnTaking.wasted_estimated`` says how many such estimates the figure includes.

It is pipecat's ``ServiceMetricsObserver`` with that bookkeeping in front, so one observer sees the turn
frames and the usage metrics in the order they were pushed.
"""

from __future__ import annotations

from collections.abc import Callable

from pipecat.frames.frames import EagerEndOfTurnCancelFrame, LLMContextFrame, UserStoppedSpeakingFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.observers.service_metrics_observer import ServiceMetricsObserver, ServiceUsageRecord
from pipecat.services.llm_service import LLMService

from voxpipe.records.model import TurnTaking


class SpeculationLedger(ServiceMetricsObserver):
    """Usage records in the order they come, split into ``used`` and ``wasted``; counts speculations."""

    def __init__(self, stats: TurnTaking, is_llm: Callable[[str], bool]):
        super().__init__()
        self.stats = stats
        self.is_llm = is_llm  # whether a processor name is one of the call's LLM services
        self.used: list[ServiceUsageRecord] = []
        self.wasted: list[ServiceUsageRecord] = []
        self._held: list[ServiceUsageRecord] | None = None  # a speculative reply's usage, until settled
        self._unreported = 0  # withdrawn inferences that reported no usage, to estimate from the next one
        self._seen: set[int] = set()
        self.add_event_handler("on_service_usage", self._on_usage)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, LLMContextFrame) and isinstance(data.destination, LLMService):
            if frame.id not in self._seen:
                self._seen.add(frame.id)
                self._settle(self.used)  # a new inference: nothing before it is speculative any more
                if frame.speculation:
                    self.stats.speculations += 1
                    self._held = []
        elif isinstance(frame, EagerEndOfTurnCancelFrame) and self._held is not None:
            self.stats.withdrawn += 1
            self._unreported += not any(self.is_llm(record.processor) for record in self._held)
            self._settle(self.wasted)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._settle(self.used)
        await super().on_push_frame(data)

    async def _on_usage(self, observer: ServiceMetricsObserver, record: ServiceUsageRecord) -> None:
        if not self.is_llm(record.processor):
            self.used.append(record)
        elif self._held is not None:
            self._held.append(record)
        else:
            self.used.append(record)
            self._estimate_unreported(record)

    def _estimate_unreported(self, record: ServiceUsageRecord) -> None:
        """Charge each withdrawn inference without usage the prompt of ``record``, the request that replaced it."""
        no_output = {"completion_tokens": 0, "reasoning_tokens": None, "output_audio_tokens": None}
        for _ in range(self._unreported):
            self.wasted.append(record.model_copy(update={**no_output, "total_tokens": record.prompt_tokens}))
            self.stats.wasted_estimated += 1
        self._unreported = 0

    def _settle(self, into: list[ServiceUsageRecord]) -> None:
        if self._held is not None:
            into.extend(self._held)
            self._held = None

    def close(self) -> None:
        """The call is over: a reply still held was never heard."""
        if self._held is not None:
            self.stats.withdrawn += 1
            self._settle(self.wasted)
