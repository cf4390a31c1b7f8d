"""The CallRecords of the Lambda relay's calls, built from the conversations it keeps in DynamoDB.

A Lambda never sees a call end as one piece of code, and its handlers load neither pydantic nor the provider
registry (every cold start would pay for them), so the relay keeps a call's measures in the call's conversation
item instead (``voxpipe.serverless.relay_turns``): when it started and last ended, each reply turn (the caller's
words, what of the reply they heard, when the reply's first and last text left after the prompt arrived), each
LLM request's tokens as the vendor reported them, its events and, if it ended through ``on_failure``, why.

``voxpipe import-relay CONFIG`` turns the ended ones into CallRecords here, priced with the deployment's
price tables (its ``pricing`` overrides first), and saves them where the deployment's records go, so relay calls
are in the same ``voxpipe calls`` / ``report`` / ``bench`` as the server's. A record replaces the one of the same
call id, so importing again is harmless; a call still live (no end after its last start) waits for the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from voxpipe.aws.conversations import Conversation
from voxpipe.config.models import Deployment
from voxpipe.providers.registry import Registry
from voxpipe.records.cost import price, prices_for
from voxpipe.records.model import CallError, CallEvent, CallFailure, CallRecord, TurnRecord, Usage
from voxpipe.serverless.relay_turns import CONNECTED_MS, ENDED_MS, EVENTS, FAILURE, STARTED_MS, TURNS, USAGE

TRANSPORT = "conversation_relay"


def relay_record(conversation: Conversation, deployment: Deployment, registry: Registry) -> CallRecord | None:
    """The record of an ended relay call of ``deployment`` (``None``: not a relay call, or not ended yet)."""
    meta = conversation.metadata
    if meta.get("transport") != TRANSPORT or STARTED_MS not in meta or ENDED_MS not in meta:
        return None
    started_ms, ended_ms = int(meta[STARTED_MS]), int(meta[ENDED_MS])
    if ended_ms < int(meta.get(CONNECTED_MS, started_ms)):
        return None  # it connected again since it last ended: the call goes on

    def since_start(at_ms: Any) -> float:
        return round((int(at_ms) - started_ms) / 1000, 3)

    failure = meta.get(FAILURE)
    return CallRecord(
        call_id=conversation.call_id,
        deployment=deployment.name,
        mode=deployment.mode,
        started_at=datetime.fromtimestamp(started_ms / 1000, UTC),
        duration_secs=(ended_ms - started_ms) / 1000,
        caller_id=meta.get("caller"),
        turns=[_turn(index, turn) for index, turn in enumerate(meta.get(TURNS) or [], 1)],
        usage=_priced(meta.get(USAGE) or [], deployment, registry),
        events=[_event(event, since_start(event.get("at_ms", started_ms))) for event in meta.get(EVENTS) or []],
        failure=_failure(failure, since_start(failure.get("at_ms", ended_ms))) if failure else None,
        end_reason=meta.get("end_reason"),
    )


def _turn(index: int, turn: dict[str, Any]) -> TurnRecord:
    def after_prompt(at_ms: int | None) -> float | None:
        return None if at_ms is None else float(at_ms - turn["prompted_ms"])

    return TurnRecord(
        index=index,
        heard=turn["heard"],
        reply=turn["reply"],
        llm_first_token_ms=after_prompt(turn["first_text_ms"]),
        reply_complete_ms=after_prompt(turn["last_text_ms"]),
    )


def _priced(requests: Iterable[dict[str, Any]], deployment: Deployment, registry: Registry) -> list[Usage]:
    """The requests' tokens per provider and model, in billing buckets, priced."""
    totals: dict[tuple[str, str], Usage] = {}
    for request in requests:
        key = (request["provider"], request["model"])
        usage = totals.get(key) or totals.setdefault(key, Usage(role="llm", provider=key[0], model=key[1] or None))
        usage.text_input_tokens += request["input"] - request["cached_input"]
        usage.cached_text_input_tokens += request["cached_input"]
        usage.text_output_tokens += request["output"]
    for usage in totals.values():
        registered = registry.get("llm", usage.provider)
        if registered is not None:
            usage.cost_usd = price(usage, prices_for(registered.provider, usage.model, deployment.pricing))
    return list(totals.values())


def _event(event: dict[str, Any], at_secs: float) -> CallEvent:
    fields = {key: value for key, value in event.items() if key in CallEvent.model_fields and key != "at_secs"}
    return CallEvent(**fields, at_secs=at_secs)


def _failure(failure: dict[str, Any], at_secs: float) -> CallFailure:
    transfer_to = failure.get("transfer_to")
    return CallFailure(
        say=failure["say"],
        then="transfer" if transfer_to else "hangup",
        transfer_to=transfer_to,
        error=CallError(role="llm", message=failure["reason"], fatal=True, at_secs=at_secs),
        at_secs=at_secs,
    )


def ended_relay_records(
    conversations: Iterable[Conversation], deployment: Deployment, registry: Registry
) -> list[CallRecord]:
    """The records of the ended relay calls among ``conversations``."""
    records = (relay_record(conversation, deployment, registry) for conversation in conversations)
    return [record for record in records if record is not None]
