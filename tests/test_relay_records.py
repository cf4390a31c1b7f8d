"""A relay call's record from the measures the Lambda relay keeps in its conversation (voxpipe.records.relay).

The end to end path (a call through API Gateway's shim and the relay's Lambda, then ``voxpipe import-relay``)
is in tests/test_serverless_calls.py; here, what each kind of stored measure becomes, and which calls wait.
"""

from __future__ import annotations

from typing import Any

import pytest

from voxpipe.aws.conversations import Conversation
from voxpipe.config.loader import parse_deployment
from voxpipe.providers.registry import default_registry
from voxpipe.records.relay import ended_relay_records, relay_record

MODEL = "amazon.nova-micro-v1:0"
DEPLOYMENT = f"""
name: desk
agent: {{instructions: You take bookings.}}
stt: {{provider: testkit_stt}}
llm: {{provider: bedrock, model: {MODEL}, options: {{region: us-east-1}}}}
tts: {{provider: testkit_tts}}
sessions: {{store: memory}}
"""
STARTED = 1_800_000_000_000  # epoch ms


def _relay_call(call_id: str = "CA1", **metadata: Any) -> Conversation:
    stored = {
        "transport": "conversation_relay",
        "caller": "+15550100",
        "started_ms": STARTED,
        "connected_ms": STARTED,
        "ended_ms": STARTED + 42_500,
        "turns": [
            {
                "heard": "Can I book for Friday?",
                "reply": "Yes, at nine.",
                "prompted_ms": STARTED + 3_000,
                "first_text_ms": STARTED + 3_410,
                "last_text_ms": STARTED + 3_900,
            },
            {  # cut by the caller: no last text
                "heard": "And Saturday?",
                "reply": "Saturday we",
                "prompted_ms": STARTED + 9_000,
                "first_text_ms": STARTED + 9_380,
                "last_text_ms": None,
            },
        ],
        "usage": [
            {"provider": "bedrock", "model": MODEL, "input": 1200, "output": 40, "cached_input": 1000},
            {"provider": "bedrock", "model": MODEL, "input": 1300, "output": 10, "cached_input": 0},
        ],
        "events": [
            {"kind": "filler", "tool": "look_up", "text": "One moment.", "delay_secs": 1.0, "at_ms": STARTED + 4_000},
            {"kind": "reprompt", "text": "Are you still there?", "at_ms": STARTED + 20_000},
        ],
        **metadata,
    }
    return Conversation(call_id, metadata=stored)


@pytest.fixture(scope="module")
def deployment() -> Any:
    return parse_deployment(DEPLOYMENT)


def test_turns_usage_cost_and_events(deployment: Any) -> None:
    record = relay_record(_relay_call(), deployment, default_registry())
    assert record is not None
    assert (record.call_id, record.deployment, record.caller_id, record.duration_secs) == (
        "CA1",
        "desk",
        "+15550100",
        42.5,
    )
    assert record.started_at.timestamp() == STARTED / 1000
    first, cut = record.turns
    assert (first.index, first.heard, first.reply) == (1, "Can I book for Friday?", "Yes, at nine.")
    assert (first.llm_first_token_ms, first.reply_complete_ms) == (410.0, 900.0)
    assert (cut.llm_first_token_ms, cut.reply_complete_ms) == (380.0, None)
    (usage,) = record.usage  # one provider and model: the requests added up, in billing buckets
    assert (usage.text_input_tokens, usage.cached_text_input_tokens, usage.text_output_tokens) == (1500, 1000, 50)
    micro = (1500 * 0.035 + 1000 * 0.035 / 4 + 50 * 0.14) / 1e6  # Nova Micro's list prices
    assert usage.cost_usd == pytest.approx(micro)
    assert [(e.kind, e.at_secs) for e in record.events] == [("filler", 4.0), ("reprompt", 20.0)]
    assert record.events[0].tool == "look_up" and record.events[0].delay_secs == 1.0
    assert record.failure is None


def test_a_deployments_pricing_overrides_the_plugins() -> None:
    overridden = parse_deployment(
        DEPLOYMENT
        + f"pricing: {{bedrock/{MODEL}: {{per_million_input_tokens: 1.0, per_million_output_tokens: 2.0}}}}\n"
    )
    record = relay_record(_relay_call(), overridden, default_registry())
    assert record is not None
    assert record.usage[0].cost_usd == pytest.approx((2500 * 1.0 + 50 * 2.0) / 1e6)  # cached at the input price


def test_a_call_that_ended_through_on_failure_says_why(deployment: Any) -> None:
    failure = {"say": "Sorry, something went wrong.", "transfer_to": "+15557770000", "reason": "llm: Timeout: read"}
    record = relay_record(_relay_call(failure=failure | {"at_ms": STARTED + 40_000}), deployment, default_registry())
    assert record is not None and record.failure is not None
    assert (record.failure.then, record.failure.transfer_to, record.failure.at_secs) == (
        "transfer",
        "+15557770000",
        40.0,
    )
    assert record.failure.error.fatal and record.failure.error.message == "llm: Timeout: read"


def test_only_ended_relay_calls_are_recorded(deployment: Any) -> None:
    live = _relay_call("CA2", ended_ms=None)
    live.metadata.pop("ended_ms")
    reconnected = _relay_call("CA3", connected_ms=STARTED + 50_000)  # connected again after its last end
    served = _relay_call("CA4", transport="twilio")  # a Media Streams call of the server, in the same table
    ended = _relay_call("CA5")
    records = ended_relay_records([live, reconnected, served, ended], deployment, default_registry())
    assert [record.call_id for record in records] == ["CA5"]
