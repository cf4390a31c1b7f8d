"""The life of one served call: pick the variant, build, measure, run, then record and count it.

Every transport (Twilio, browser, the serverless worker) runs calls through ``run_measured_call`` so every
call leaves the same ``CallRecord`` and the same Prometheus numbers, however it arrived.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipecat.transports.base_transport import BaseTransport

from voxpipe.pipeline.builder import CallContext, CallPipeline, build_call, run_call
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.latency import TurnMeter
from voxpipe.records.model import CallRecord
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.store import RecordStore


@dataclass
class CallBookkeeping:
    """Where finished calls go: the record store and the process's metrics (either may be absent)."""

    records: RecordStore | None = None
    metrics: CallMetrics | None = None


async def run_measured_call(
    router: ExperimentRouter,
    transport: BaseTransport,
    call: CallContext,
    bookkeeping: CallBookkeeping,
    on_built: Callable[[CallPipeline], Awaitable[None]] | None = None,
) -> CallRecord:
    """Run one call to its end and return its record (saved and counted even if the call failed)."""
    deployment, variant = router.route(call.caller_id)
    turn_meter = TurnMeter(transport.output())
    call_pipeline = build_call(deployment, transport, call, observers=[turn_meter], clock=turn_meter.clock)
    started, started_at = time.monotonic(), datetime.now(UTC)
    if bookkeeping.metrics:
        bookkeeping.metrics.call_started(deployment.name)
    try:
        if on_built is not None:
            await on_built(call_pipeline)
        await run_call(call_pipeline)
    finally:
        meter = call_pipeline.meter
        record = CallRecord(
            call_id=call.call_id,
            deployment=deployment.name,
            mode=deployment.mode,
            started_at=started_at,
            duration_secs=time.monotonic() - started,
            caller_id=call.caller_id,
            experiment=router.deployment.experiment.name if router.deployment.experiment else None,
            variant=variant,
            turns=[turn.record(index) for index, turn in enumerate(turn_meter.turns(), 1)],
            usage=meter.usage(),
            fallbacks=meter.fallbacks,
            errors=meter.errors,
            failure=meter.failure,
        )
        if bookkeeping.records:
            bookkeeping.records.save(record)
        if bookkeeping.metrics:
            bookkeeping.metrics.call_ended(record)
    return record
