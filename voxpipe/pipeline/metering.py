"""Usage and cost of one call, from the usage metrics pipecat services report.

pipecat's ``ServiceMetricsObserver`` turns each usage metric into a record naming the processor; the meter
maps that processor back to the role, provider and model the deployment chose, and prices it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import ErrorFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.service_metrics_observer import ServiceMetricsObserver, ServiceUsageRecord

from voxpipe.providers.spec import Prices, Provider
from voxpipe.records.cost import add_usage, price
from voxpipe.records.model import FallbackEvent, Usage


@dataclass(frozen=True)
class ServiceRef:
    """Which deployment choice a pipecat service of the call stands for."""

    role: str
    provider: Provider
    model: str | None


class CallMeter:
    """Collects one call's usage records; ``usage()`` totals and prices them per role, provider and model."""

    def __init__(self, services: dict[str, ServiceRef], price_overrides: dict[str, Prices] | None = None):
        self.services = services
        self.price_overrides = price_overrides or {}
        self.records: list[ServiceUsageRecord] = []
        self.errors: list[str] = []
        self.fallbacks: list[FallbackEvent] = []
        self.observer = ServiceMetricsObserver()
        self.observer.add_event_handler("on_service_usage", self._on_usage)
        self.error_observer = _ErrorLog(self.errors)

    @property
    def observers(self) -> list[BaseObserver]:
        return [self.observer, self.error_observer]

    async def _on_usage(self, observer: ServiceMetricsObserver, record: ServiceUsageRecord) -> None:
        self.records.append(record)

    def usage(self) -> list[Usage]:
        totals: dict[tuple[str, str, str | None], tuple[Provider, Usage]] = {}
        for record in self.records:
            ref = self.services.get(record.processor)
            if ref is None:
                continue
            model = ref.model or record.model
            key = (ref.role, ref.provider.name, model)
            _, usage = totals.setdefault(
                key, (ref.provider, Usage(role=ref.role, provider=ref.provider.name, model=model))
            )
            add_usage(usage, record, ref.provider.prompt_tokens_include_cached)
        for provider, usage in totals.values():
            usage.cost_usd = price(usage, self.prices_for(provider, usage.model))
        return [usage for _, usage in totals.values()]

    def prices_for(self, provider: Provider, model: str | None) -> Prices | None:
        """The deployment's ``pricing`` override (``provider/model`` or ``provider``), else the plugin's."""
        overrides = self.price_overrides
        return overrides.get(f"{provider.name}/{model}") or overrides.get(provider.name) or provider.prices_for(model)


class _ErrorLog(BaseObserver):
    """Keeps the message of every error frame of the call, once."""

    def __init__(self, errors: list[str]):
        super().__init__()
        self.errors = errors
        self._seen: set[int] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, ErrorFrame) and data.frame.id not in self._seen:
            self._seen.add(data.frame.id)
            self.errors.append(data.frame.error)
