"""Prometheus metrics of served calls (``GET /metrics`` on ``voxpipe serve``).

Updated once per call from its ``CallRecord`` (and a gauge of calls in progress), so the numbers on the
dashboard are exactly the ones ``voxpipe calls`` and ``voxpipe report`` show.

``voxpipe serve --workers N`` runs N processes; each counts its own calls into files under
``$PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set up by ``voxpipe.web.serve``), and
``render()`` in any worker sums every worker's files, so one scrape sees the whole server.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from voxpipe.records import recording_store
from voxpipe.records.model import CallRecord

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGES = {
    "stt_final": ("stt_final_ms", "stt"),
    "llm_first_token": ("llm_first_token_ms", "llm"),
    "tts_first_audio": ("tts_first_audio_ms", "tts"),
    "voice_to_voice": ("voice_to_voice_ms", None),
    "reply_complete": ("reply_complete_ms", "llm"),  # text calls: the prompt to the reply's last token
}
USAGE_UNITS = (
    "audio_seconds",
    "characters",
    "text_input_tokens",
    "cached_text_input_tokens",
    "audio_input_tokens",
    "cached_audio_input_tokens",
    "text_output_tokens",
    "audio_output_tokens",
)


class CallMetrics:
    """The metrics of one process; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.active_calls = Gauge(
            "voxpipe_active_calls",
            "Calls in progress.",
            ["deployment"],
            registry=self.registry,
            multiprocess_mode="livesum",  # the workers' sum, without workers that have stopped
        )
        self.calls = Counter("voxpipe_calls", "Calls ended.", ["deployment", "variant"], registry=self.registry)
        self.turn_latency = Histogram(
            "voxpipe_turn_latency_seconds",
            "Seconds from the end of the caller's speech to each stage's first output (docs/latency.md).",
            ["deployment", "stage", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "voxpipe_cost_usd",
            "Cost in US dollars.",
            ["deployment", "role", "provider", "model"],
            registry=self.registry,
        )
        self.usage = Counter(
            "voxpipe_usage",
            "Usage in billing units (unit label).",
            ["role", "provider", "model", "unit"],
            registry=self.registry,
        )
        self.missed_turns = Counter(
            "voxpipe_missed_turns",
            "Caller turns talked over before any reply (the caller spoke again, unanswered).",
            ["deployment"],
            registry=self.registry,
        )
        self.errors = Counter("voxpipe_errors", "Errors during calls.", ["deployment"], registry=self.registry)
        self.failed_calls = Counter(
            "voxpipe_failed_calls",
            "Calls ended by on_failure: a provider could not go on and no backup was left (kind: error category).",
            ["deployment", "role", "provider", "kind"],
            registry=self.registry,
        )
        self.registry.register(
            recording_store.uploader.exported
        )  # voxpipe_recordings_total{outcome}: the process's uploads
        self.fallbacks = Counter(
            "voxpipe_fallbacks",
            "Provider switches.",
            ["deployment", "role", "from_provider", "to_provider"],
            registry=self.registry,
        )

        self.refused = Counter(
            "voxpipe_refused",
            "Requests refused by a limit of the deployment's limits: section (limit: its name), or by the browser "
            "access check (limit: origin, session_token).",
            ["deployment", "limit"],
            registry=self.registry,
        )
        self.events = Counter(
            "voxpipe_call_events",
            "Re-prompts, silence hang-ups, fillers and transfers (kind label; docs/calls.md).",
            ["deployment", "kind"],
            registry=self.registry,
        )
        self.filler_delay = Histogram(
            "voxpipe_filler_delay_seconds",
            "Seconds from a tool's start to its filler.",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transfers = Counter(
            "voxpipe_transfers",
            "Transfers to a person: mode cold or warm; answered yes, no, or unknown (cold: the carrier dials).",
            ["deployment", "mode", "answered"],
            registry=self.registry,
        )
        self.ring_time = Histogram(
            "voxpipe_transfer_ring_seconds",
            "Seconds a warm transfer rang before it was answered or given up.",
            ["deployment"],
            buckets=(1, 2, 5, 10, 15, 20, 25, 30, 45, 60),
            registry=self.registry,
        )

    def call_started(self, deployment: str) -> None:
        self.active_calls.labels(deployment).inc()

    def call_ended(self, record: CallRecord) -> None:
        """Account for a finished call (and take it off the active gauge)."""
        self.active_calls.labels(record.deployment).dec()
        self.calls.labels(record.deployment, record.variant or "").inc()
        providers = {usage.role: usage.provider for usage in record.usage}
        realtime = providers.get("realtime", "")
        for turn in record.turns:
            for stage, (field, role) in STAGES.items():
                value = getattr(turn, field)
                if value is not None:
                    provider = providers.get(role, realtime) if role else realtime or providers.get("tts", "")
                    self.turn_latency.labels(record.deployment, stage, provider).observe(value / 1000)
        for usage in record.usage:
            model = usage.model or ""
            self.cost.labels(record.deployment, usage.role, usage.provider, model).inc(usage.cost_usd)
            for unit in USAGE_UNITS:
                amount = getattr(usage, unit)
                if amount:
                    self.usage.labels(usage.role, usage.provider, model, unit).inc(amount)
        self.errors.labels(record.deployment).inc(len(record.errors))
        self.missed_turns.labels(record.deployment).inc(record.missed_turns)
        if record.failure is not None:
            error = record.failure.error
            self.failed_calls.labels(record.deployment, error.role or "", error.provider or "", error.kind).inc()
        for switch in record.fallbacks:
            self.fallbacks.labels(record.deployment, switch.role, switch.from_provider, switch.to_provider).inc()
        self._count_events(record)

    def _count_events(self, record: CallRecord) -> None:
        for event in record.events:
            self.events.labels(record.deployment, event.kind).inc()
            if event.kind == "filler" and event.delay_secs is not None:
                self.filler_delay.labels(record.deployment).observe(event.delay_secs)
            elif event.kind == "transfer" and (event.mode == "cold" or event.answered is not None):
                # A warm transfer is counted once its outcome is known: unanswered in the record of the call it
                # returned to, answered when Twilio says so (``transfer_answered``).
                answered = "unknown" if event.answered is None else ("yes" if event.answered else "no")
                self.transfers.labels(record.deployment, event.mode or "cold", answered).inc()
                if event.ring_secs is not None:
                    self.ring_time.labels(record.deployment).observe(event.ring_secs)

    def transfer_answered(self, deployment: str, ring_secs: float) -> None:
        """A warm transfer's person answered (the call has left the agent, so no record of it will say so)."""
        self.transfers.labels(deployment, "warm", "yes").inc()
        self.ring_time.labels(deployment).observe(ring_secs)

    def render(self) -> bytes:
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)
        return generate_latest(every_worker)

    def process_ended(self) -> None:
        """This worker stops: its live calls leave the fleet's gauge (its counters stay in the sums)."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())


def multiprocess_dir() -> Path | None:
    """The folder the worker processes of this host share for prometheus_client's multiprocess mode (``voxpipe
    serve --workers N`` makes it; other per-worker files live there too); ``None``: a process alone."""
    folder = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    return Path(folder) if folder else None
