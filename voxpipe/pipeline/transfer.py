"""Transfers to a person, on the pipeline's side: the summary a warm transfer carries, and the record's events.

A ``transfer`` tool with ``mode: warm`` hands its transport more than a target: how long to ring, what the
caller hears on hold, what the agent says if nobody answers, and a summary of the call for the person called,
written by the deployment's LLM (``LLMService.run_inference``, a one-shot completion outside the conversation)
from the conversation so far. Each transport carries it out its own way (docs/calls.md); every transfer is
kept in the record as a ``CallEvent`` (cold or warm, and a warm one's summary), and so is a warm one's
outcome: unanswered in the record of the connection the caller comes back on (``HostedCall.transfer_returned``),
answered in the call's record once the dial leg's status says so (``record_answered``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import LLMService

from voxpipe.pipeline.metering import CallMeter
from voxpipe.records.model import CallEvent, CallRecord
from voxpipe.records.store import RecordStore
from voxpipe.telephony.warm_transfer import SUMMARY_REQUEST

RECORD_WAIT_SECS = 15.0  # how long an answered transfer waits for the call's record to be saved

EffectHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Told a tool's call-level effect (``end_call``, ``transfer``) and its details: the transport carries it out."""


async def summarise(llm: LLMService, context: LLMContext) -> str | None:
    """The LLM's summary of the conversation in ``context`` (``None`` if it gave none or failed)."""
    messages = [*context.get_messages(), {"role": "user", "content": SUMMARY_REQUEST}]
    try:
        text = await llm.run_inference(LLMContext(messages))
    except Exception as exc:  # a transfer goes ahead without a summary rather than not at all
        logger.warning(f"warm transfer: no summary ({exc!r})")
        return None
    return text.strip() if text else None


async def warm_details(options: Any, llm: LLMService, context: LLMContext) -> dict[str, Any]:
    """What a warm transfer's transport needs besides the target (``options``: the tool's ``TransferOptions``)."""
    return {
        "ring_timeout_secs": options.ring_timeout_secs,
        "hold_audio": options.hold_audio,
        "unanswered": options.unanswered,
        "summary": await summarise(llm, context) if options.summary else None,
    }


def recorded_effects(on_effect: EffectHandler, meter: CallMeter) -> EffectHandler:
    """``on_effect`` that first keeps each transfer in the call's record."""

    async def record(effect: str, details: dict[str, Any]) -> None:
        if effect == "transfer":
            warm = details.get("warm")
            to = str((details.get("result") or {}).get("to") or "")
            if warm is None:
                meter.note_event("transfer", mode="cold", to=to)
            else:
                meter.note_event("transfer", mode="warm", to=to, summary=warm.get("summary"))
        await on_effect(effect, details)

    return record


async def record_answered(records: RecordStore, call_id: str, status: str, ring_secs: float) -> None:
    """A warm transfer was answered: the outcome goes into the call's record. The call left the agent when the
    caller was put on hold, so its record is saved then, which may be a moment after the person answered:
    wait for it (the record whose last transfer is still unanswered)."""
    deadline = time.monotonic() + RECORD_WAIT_SECS
    while (record := await asyncio.to_thread(records.get, call_id)) is None or not _awaiting_outcome(record):
        if time.monotonic() > deadline:
            logger.warning(f"call {call_id}: no record awaits the answered transfer's outcome; not recorded")
            return
        await asyncio.sleep(0.2)
    at_secs = round((datetime.now(UTC) - record.started_at).total_seconds(), 3)
    event = CallEvent(kind="transfer", at_secs=at_secs, mode="warm", answered=True, ring_secs=ring_secs, status=status)
    await asyncio.to_thread(records.save, record.model_copy(update={"events": [*record.events, event]}))


def _awaiting_outcome(record: CallRecord) -> bool:
    transfers = [e for e in record.events if e.kind == "transfer"]
    return bool(transfers) and transfers[-1].mode == "warm" and transfers[-1].answered is None
