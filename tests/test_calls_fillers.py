"""Slow tools are never silent, end to end on Twilio Media Streams and ConversationRelay.

A 3 s tool gives the filler at 1 s and the reply right after it (no gap over 300 ms, the filler not cut); a
0.2 s tool gives no filler. The filler is long enough to still be playing when the tool answers, which is
where pipecat alone would leave a gap (it runs the LLM only once the filler has finished playing).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tool_functions
import yaml

from tests.cloud_fixtures import KEY, cloud_fixture, config, fakes_fixture, said  # noqa: F401 (fixtures, by name)
from tests.fakes import Behaviour, FakeOpenAIRealtime, ToolCall
from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.test_calls_silence import gaps
from tests.test_conversation_relay import DEPLOYMENT as RELAY_DEPLOYMENT
from tests.test_conversation_relay import TOKEN as RELAY_TOKEN
from tests.test_twilio_media import DEPLOYMENT, PUBLIC, STORY, TOKEN, audible, simulator, speech, stored_messages
from voxpipe.bench.simulated_call import simulate_call
from voxpipe.config.loader import apply_overrides, parse_deployment
from voxpipe.pipeline.latency import first_audible
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app

FILLER = "One moment while I look that booking up in our reservations system for you, thank you."
TOOL = f"""
    - kind: python
      name: look_up_booking
      parameters: {{type: object, properties: {{secs: {{type: number}}}}, required: [secs]}}
      options: {{function: "{tool_functions.__name__}:look_up_booking"}}
      filler: "{FILLER}"
      filler_after_secs: 1.0
"""
SECS_PER_CHAR = 0.04
RULES = "".join(
    f"      - {{when: {when}, tool_call: {{name: look_up_booking, arguments: {{secs: {secs}}}}}, say: {say!r}}}\n"
    for when, secs, say in (("booking", 3.0, "Your booking is confirmed."), ("quick", 0.2, "Quick answer: confirmed."))
)


def quiet_since(heard: list, secs: float) -> bool:
    """Something was heard, and nothing for the last ``secs``."""
    chunks = audible(heard)
    return bool(chunks) and time.monotonic() - (chunks[-1].at + len(chunks[-1].pcm) / 2 / 8000) > secs


def with_tool(text: str) -> str:
    text = text.replace("  tools:\n", "  tools:" + TOOL, 1)
    return text.replace("    replies:\n", "    replies:\n" + RULES, 1) + "silence: off\n"


async def test_slow_tool_gets_its_filler_then_the_reply_without_a_gap(tmp_path: Path, registry: object) -> None:
    transcripts = json.dumps(["check my booking", "a quick one"])
    text = DEPLOYMENT.format(transcripts=transcripts, story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    # An LLM that takes 0.5 s: waiting for the filler to end before running it would leave 0.5 s of dead air.
    text = with_tool(text).replace("secs_per_char: 0.02", f"secs_per_char: {SECS_PER_CHAR}")
    text = text.replace("    replies:\n", "    latency_secs: 0.5\n    replies:\n", 1)
    records = RecordStore(tmp_path / "calls.db")
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})], records=records, warm_up=False)
    with RunningServer(app) as server:
        async with simulator(server) as call:
            await call.wait_for(lambda: audible(call.heard), what="the greeting")
            await asyncio.sleep(1.5)
            spoke_at = await call.speak(speech())
            await call.wait_for(lambda: quiet_since(call.heard_after(spoke_at), 1.0), timeout=20, what="the reply")
            slow = audible(call.heard_after(spoke_at))
            quick_at = await call.speak(speech())
            await call.wait_for(lambda: audible(call.heard_after(quick_at)), timeout=20, what="the quick answer")
            await asyncio.sleep(1.5)
            quick = audible(call.heard_after(quick_at))
            await call.stop()
    filler_and_reply = [p for p in slow if p.at < quick_at]
    secs = sum(len(p.pcm) for p in filler_and_reply) / 2 / 8000
    assert secs > SECS_PER_CHAR * (len(FILLER) + len("Your booking is confirmed.")) - 0.3  # neither was cut
    assert gaps(filler_and_reply, 0.3) == []  # the reply follows the filler with no gap
    assert 1.6 < filler_and_reply[0].at - spoke_at < 2.4  # end of turn (~0.25 s) + the LLM (0.5 s) + 1 s
    quick_secs = sum(len(p.pcm) for p in quick) / 2 / 8000
    assert quick_secs < SECS_PER_CHAR * len("Quick answer: confirmed.") + 0.3  # the reply alone: no filler
    contents = [m.get("content") for m in stored_messages(tmp_path, call.call_sid) if m["role"] == "assistant"]
    assert FILLER in contents and "Your booking is confirmed." in contents
    await asyncio.sleep(0.3)
    (record,) = records.list()
    fillers = [e for e in record.events if e.kind == "filler"]
    assert len(fillers) == 1 and fillers[0].tool == "look_up_booking"
    assert 0.95 < fillers[0].delay_secs < 1.3


async def test_relay_slow_tool_sends_the_filler_then_the_reply(tmp_path: Path, registry: object) -> None:
    text = with_tool(RELAY_DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")))
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": RELAY_TOKEN})], warm_up=False)
    with RunningServer(app) as server:
        async with RelaySimulator(f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay") as relay:
            prompted = time.monotonic()
            await relay.prompt("check my booking")
            filler, _ = await relay.reply()
            filler_at = time.monotonic() - prompted
            reply, _ = await relay.reply()
            reply_at = time.monotonic() - prompted
            prompted = time.monotonic()
            await relay.prompt("a quick one")
            quick, _ = await relay.reply()
    assert filler == FILLER and 0.9 < filler_at < 1.4
    assert reply == "Your booking is confirmed." and 3.0 < reply_at < 3.6
    assert quick == "Quick answer: confirmed."


async def test_caller_who_speaks_during_a_slow_tool_is_heard_with_its_result(tmp_path: Path, registry: object) -> None:
    transcripts = json.dumps(["check my booking", "and it is for two people"])
    text = DEPLOYMENT.format(transcripts=transcripts, story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    app = create_app([parse_deployment(with_tool(text), environ={"TWILIO_AUTH_TOKEN": TOKEN})], warm_up=False)
    with RunningServer(app) as server:
        async with simulator(server) as call:
            await call.wait_for(lambda: audible(call.heard), what="the greeting")
            await asyncio.sleep(1.5)
            await call.speak(speech())
            await asyncio.sleep(0.6)  # the tool is running: the caller speaks again
            await call.speak(speech())
            await asyncio.sleep(4.5)  # the tool answers (3 s) and the agent replies
            await call.stop()
    messages = stored_messages(tmp_path, call.call_sid)
    said = json.dumps(messages)
    assert "and it is for two people" in said  # heard
    assert "confirmed" in said  # the tool was not cancelled: its result is in the conversation
    users = [i for i, m in enumerate(messages) if m.get("content") == "and it is for two people"]
    results = [i for i, m in enumerate(messages) if "confirmed" in json.dumps(m) and m["role"] != "assistant"]
    assert users and results and results[-1] > users[0]  # the result reached the LLM after what the caller said


async def test_realtime_slow_tool_gets_its_filler_through_the_session(tmp_path: Path, registry: object) -> None:
    text = f"""
name: phone
mode: realtime
agent:
  instructions: Be brief.
  tools:{TOOL}
vad: {{start_secs: 0.1, stop_secs: 0.2}}
realtime:
  provider: testkit_realtime
  options:
    latency_secs: 0.5
    secs_per_char: {SECS_PER_CHAR}
    transcripts: ["check my booking"]
    replies:
      - {{when: "say exactly", say: "{FILLER}"}}
{RULES}insecure: true
transport: {{public_url: {PUBLIC}, twilio: {{validate_signatures: false}}}}
sessions: {{store: sqlite, path: "{tmp_path / "s.db"}"}}
silence: off
"""
    records = RecordStore(tmp_path / "calls.db")
    with RunningServer(create_app([parse_deployment(text)], records=records, warm_up=False)) as server:
        async with simulator(server, auth_token=None) as call:
            await asyncio.sleep(0.5)
            spoke_at = await call.speak(speech())
            await call.wait_for(lambda: quiet_since(call.heard_after(spoke_at), 1.5), timeout=20, what="the reply")
            await call.stop()
    filler_and_reply = audible(call.heard_after(spoke_at))
    secs = sum(len(p.pcm) for p in filler_and_reply) / 2 / 8000
    assert secs > SECS_PER_CHAR * (len(FILLER) + len("Your booking is confirmed.")) - 0.3  # neither was cut
    # The filler (asked of the model at 1 s) still plays when the tool answers (3 s): the reply, asked of the
    # model as soon as the result is in, follows it with no gap (the model's 0.5 s latency is not heard).
    assert gaps(filler_and_reply, 0.3) == []
    contents = [m.get("content") for m in stored_messages(tmp_path, call.call_sid) if m["role"] == "assistant"]
    assert contents[-2:] == [FILLER, "Your booking is confirmed."]
    await asyncio.sleep(0.3)
    (record,) = records.list()
    assert [e.kind for e in record.events] == ["filler"]


@pytest.mark.usefixtures("cloud")
async def test_openai_realtime_speaks_the_filler_then_the_reply(fakes: Callable[..., Any]) -> None:
    """Against the OpenAI Realtime fake (0.5 s before each response's first byte): the filler is asked of the
    session while the tool runs (3 s) and spoken; the reply, asked for as soon as the tool answers, follows it
    with no gap. Each response of the fake is scripted in order, so the session must be asked for the filler
    before the tool's result reaches it."""
    realtime = fakes(
        FakeOpenAIRealtime,
        Behaviour(api_key=KEY, first_byte_delay_s=0.5),
        transcripts=["Check my booking."],
        replies=["Hello there.", ToolCall("look_up_booking", {"secs": 3.0}), FILLER, "Your booking is confirmed."],
    )
    slow_tool = yaml.safe_load(TOOL)[0]
    deployment = apply_overrides(
        config("realtime-openai", realtime=realtime), {"agent": {"tools": [{"kind": "end_call"}, slow_tool]}}
    )
    result = await simulate_call(deployment, [said("Check my booking.")], settle_secs=2.5)
    created = [str(m.get("item")) for m in realtime.messages("conversation.item.create")]
    asked = [i for i, item in enumerate(created) if "say exactly" in item]
    answered = [i for i, item in enumerate(created) if "function_call_output" in item]
    assert asked and answered and asked[0] < answered[0]  # the filler was asked for while the tool ran
    reply = result.turns[-1].reply
    assert reply.startswith(FILLER) and reply.endswith("Your booking is confirmed.")
    after = [c for c in result.bot_audio if c.started_at > result.caller_turn_starts[0]]
    heard = [c for c in after if first_audible(c.audio, c.sample_rate) is not None]
    assert heard[-1].started_at - heard[0].started_at > 0.05 * (len(FILLER) + len("Your booking is confirmed.")) - 0.5
    pauses = [b.started_at - a.started_at - len(a.audio) / 2 / a.sample_rate for a, b in itertools.pairwise(heard)]
    assert max(pauses) < 0.3, max(pauses)  # the fake's speech pauses ~0.1 s between syllables; no more
