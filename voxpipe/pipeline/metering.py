"""Usage, cost and errors of one call, from the usage metrics and error frames of its pipecat services.

pipecat's ``ServiceMetricsObserver`` turns each usage metric into a record naming the processor; the meter
maps that processor back to the role, provider and model the deployment chose, and prices it. Every
``ErrorFrame`` of the call is kept the same way, as a ``CallError`` naming its role, provider and kind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipecat.frames.frames import ErrorFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.service_metrics_observer import ServiceUsageRecord
from pipecat.processors.frame_processor import FrameProcessor

from voxpipe.pipeline.speculation import SpeculationLedger
from voxpipe.providers.spec import Prices, Provider
from voxpipe.records.cost import add_usage, price, prices_for
from voxpipe.records.model import CallError, CallEvent, CallFailure, FallbackEvent, TurnTaking, Usage


@dataclass(frozen=True)
class ServiceRef:
    """Which deployment choice a pipecat service of the call stands for."""

    role: str
    provider: Provider
    model: str | None


class CallMeter:
    """Collects one call's usage records and errors; ``usage()`` totals and prices usage per role, provider, model.

    ``services`` maps each pipecat service's name to the deployment choice it stands for; ``failure`` is set
    when the call ended through ``on_failure`` (see ``voxpipe.pipeline.failure``).
    """

    def __init__(self, services: dict[str, ServiceRef], price_overrides: dict[str, Prices] | None = None):
        self.services = services
        self.price_overrides = price_overrides or {}
        self.errors: list[CallError] = []
        self.fallbacks: list[FallbackEvent] = []
        self.failure: CallFailure | None = None
        self.events: list[CallEvent] = []
        self.end_reason: str | None = None
        self.started_at = time.monotonic()
        self._errors_by_frame: dict[int, CallError] = {}
        self.turn_taking_stats = TurnTaking()
        self.observer = SpeculationLedger(self.turn_taking_stats, self._is_llm)
        # Usage records of what the call used; the ledger keeps withdrawn speculative replies' apart.
        self.records: list[ServiceUsageRecord] = self.observer.used
        self.error_observer = _ErrorLog(self)

    @property
    def observers(self) -> list[BaseObserver]:
        return [self.observer, self.error_observer]

    def _is_llm(self, processor: str) -> bool:
        ref = self.services.get(processor)
        return ref is not None and ref.role == "llm"

    def usage(self) -> list[Usage]:
        """What the call used, priced per role, provider and model (withdrawn speculative replies excluded)."""
        return self._priced(self.records)

    def turn_taking(self) -> TurnTaking:
        """What turn-taking did, with the priced usage of replies withdrawn before anyone heard them."""
        self.observer.close()
        return self.turn_taking_stats.model_copy(update={"wasted_usage": self._priced(self.observer.wasted)})

    def _priced(self, records: list[ServiceUsageRecord]) -> list[Usage]:
        totals: dict[tuple[str, str, str | None], tuple[Provider, Usage]] = {}
        for record in records:
            ref = self.services.get(record.processor)
            if ref is None:
                continue
            model = record.model if _billed_apart(ref, record.model) else ref.model or record.model
            key = (ref.role, ref.provider.name, model)
            _, usage = totals.setdefault(
                key, (ref.provider, Usage(role=ref.role, provider=ref.provider.name, model=model))
            )
            add_usage(usage, record, ref.provider.prompt_tokens_include_cached)
        for provider, usage in totals.values():
            usage.cost_usd = price(usage, self.prices_for(provider, usage.model))
        return [usage for _, usage in totals.values()]

    def role_of(self, processor: FrameProcessor) -> str | None:
        """The role a processor serves: one of the call's services, or a role's fallback switcher."""
        ref = self.services.get(processor.name)
        return ref.role if ref else getattr(processor, "role", None)

    def note_event(self, kind: str, **details: object) -> CallEvent:
        """Keep one of the call's events (a re-prompt, a filler, a transfer...) for its record."""
        event = CallEvent.model_validate({"kind": kind, "at_secs": round(self.since_start(), 3), **details})
        self.events.append(event)
        return event

    def since_start(self) -> float:
        return time.monotonic() - self.started_at

    def note_error(self, frame: ErrorFrame) -> CallError:
        """The call's record of ``frame`` (kept once, however many observers report it)."""
        if frame.id in self._errors_by_frame:
            return self._errors_by_frame[frame.id]
        processor = frame.processor
        ref = self.services.get(processor.name) if processor else None
        category = frame.category.value if frame.category else "unknown"
        error = CallError(
            role=self.role_of(processor) if processor else None,
            # a switcher reports on behalf of the provider it was using
            provider=ref.provider.name if ref else getattr(processor, "active_provider", None),
            kind=getattr(processor, "error_kind", None) or category,
            message=frame.error,
            at_secs=round(time.monotonic() - self.started_at, 3),
        )
        self._errors_by_frame[frame.id] = error
        self.errors.append(error)
        return error

    def prices_for(self, provider: Provider, model: str | None) -> Prices | None:
        """The deployment's ``pricing`` override (``provider/model`` or ``provider``), else the plugin's."""
        return prices_for(provider, model, self.price_overrides)


def _billed_apart(ref: ServiceRef, model: str | None) -> bool:
    """Whether a usage record is of a second model the service runs and its provider prices apart (a
    Realtime session's input transcription model), rather than of the model the deployment chose."""
    return bool(model) and model != ref.model and model in ref.provider.prices


class _ErrorLog(BaseObserver):
    """Hands every error frame of the call to the meter (which keeps each once).

    It is told only of each frame's first push (not of every hop), so the other frames cost it one queue hop.
    """

    def __init__(self, meter: CallMeter):
        super().__init__(observe_every_push=False)
        self.meter = meter

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, ErrorFrame):
            self.meter.note_error(data.frame)
