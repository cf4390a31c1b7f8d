"""``silence:`` end to end: a simulated caller who goes quiet on Twilio Media Streams and on ConversationRelay.

The caller is re-prompted at the configured time (measured from the end of the bot's audio as the caller heard
it), then told goodbye and hung up on through the same path as a tool's ``end_call`` (Twilio's REST API, or
ConversationRelay's ``end``); a caller who answers the re-prompt carries on. Timers are short: tests, not waits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_caller import LiveCaller, live_call

from tests.cloud_fixtures import cloud_fixture, config, fakes_fixture  # noqa: F401 (pytest fixtures, by name)
from tests.fakes import FakeOpenAIRealtime
from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.test_conversation_relay import DEPLOYMENT as RELAY_DEPLOYMENT
from tests.test_conversation_relay import TOKEN as RELAY_TOKEN
from tests.test_twilio_media import (
    DEPLOYMENT,
    PUBLIC,
    STORY,
    TOKEN,
    FakeTwilioRest,
    audible,
    simulator,
    stored_messages,
    turn,
)
from voxpipe.config.loader import apply_overrides, parse_deployment
from voxpipe.pipeline.builder import CallPipeline
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app

REPROMPT_SECS = 1.5
HANGUP_SECS = 1.0
SILENCE = (
    f'silence: {{reprompt_after_secs: {REPROMPT_SECS}, reprompts: ["Are you still there?"], '
    f'hangup_after_secs: {HANGUP_SECS}, goodbye: "Goodbye for now."}}\n'
)
ACCOUNT = 'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}", account_sid: AC0123456789abcdef0123456789abcdef}'


def phone_deployment(tmp_path: Path, transcripts: list[str]) -> object:
    text = DEPLOYMENT.format(transcripts=json.dumps(transcripts), story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    text = text.replace('twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}', ACCOUNT) + SILENCE
    return parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})


def gaps(chunks: list, min_gap: float = 0.3) -> list[tuple[float, float]]:
    """(end of one burst of audible audio, start of the next) for each pause longer than ``min_gap``."""
    out = []
    for before, after in itertools.pairwise(chunks):
        end = before.at + len(before.pcm) / 2 / 8000
        if after.at - end > min_gap:
            out.append((end, after.at))
    return out


async def test_silent_caller_is_reprompted_then_hung_up_through_rest(tmp_path: Path, registry: object) -> None:
    rest, records = FakeTwilioRest(), RecordStore(tmp_path / "calls.db")
    with RunningServer(rest.app) as rest_server:
        app = create_app(
            [phone_deployment(tmp_path, [])],
            records=records,
            warm_up=False,
            twilio_client=rest.client(rest_server.url),
        )
        with RunningServer(app) as server:
            async with simulator(server) as call:
                await call.wait_for(call.closed.is_set, timeout=20, what="the server to hang up")
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.url) as client:
                body = (await client.get("/metrics")).text
    assert rest.updates == [(call.call_sid, {"Status": "completed"})]
    bursts = gaps(audible(call.heard))
    assert len(bursts) == 2  # greeting | re-prompt | goodbye
    (greeting_end, reprompt_at), (reprompt_end, goodbye_at) = bursts
    assert abs(reprompt_at - greeting_end - REPROMPT_SECS) < 0.5
    assert abs(goodbye_at - reprompt_end - HANGUP_SECS) < 0.5
    messages = stored_messages(tmp_path, call.call_sid)
    spoken = ["Hello, thanks for calling.", "Are you still there?", "Goodbye for now."]
    assert [m["content"] for m in messages] == spoken
    (record,) = records.list()
    assert record.end_reason == "caller_silent"
    assert [e.kind for e in record.events] == ["reprompt", "silence_hangup"]
    assert 'voxpipe_call_events_total{deployment="phone",kind="reprompt"} 1.0' in body
    assert 'voxpipe_call_events_total{deployment="phone",kind="silence_hangup"} 1.0' in body


async def test_caller_who_answers_the_reprompt_carries_on(tmp_path: Path, registry: object) -> None:
    app = create_app([phone_deployment(tmp_path, ["what are your hours"])], warm_up=False)
    with RunningServer(app) as server:
        async with simulator(server) as call:
            await call.wait_for(lambda: len(gaps(audible(call.heard))) == 1, timeout=10, what="the re-prompt")
            await asyncio.sleep(0.5)
            _, answer = await turn(call)
            assert answer
            await asyncio.sleep(REPROMPT_SECS - 0.6)  # the count started again: no goodbye yet
            assert not call.closed.is_set()
            quiet_from = time.monotonic()
            await call.wait_for(lambda: audible(call.heard_after(quiet_from)), timeout=10, what="a new re-prompt")
            await asyncio.sleep(1.0)  # it has played, and entered the conversation
            await call.stop()
    contents = [m["content"] for m in stored_messages(tmp_path, call.call_sid)]
    assert contents[:5] == [
        "Hello, thanks for calling.",
        "Are you still there?",
        "what are your hours",
        "We are open nine to five.",
        "Are you still there?",
    ]


async def test_silent_relay_caller_is_reprompted_then_the_session_ends(tmp_path: Path, registry: object) -> None:
    text = RELAY_DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")) + SILENCE
    records = RecordStore(tmp_path / "calls.db")
    app = create_app(
        [parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": RELAY_TOKEN})], records=records, warm_up=False
    )
    with RunningServer(app) as server:
        async with RelaySimulator(f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay") as relay:
            await relay.prompt("what are your hours")
            await relay.reply()
            replied_at = time.monotonic()
            reprompt, _ = await relay.reply()
            reprompt_at = time.monotonic()
            assert reprompt == "Are you still there?"
            assert abs(reprompt_at - replied_at - REPROMPT_SECS) < 0.5
            goodbye, _ = await relay.reply()
            assert goodbye == "Goodbye for now."
            assert abs(time.monotonic() - reprompt_at - HANGUP_SECS) < 0.5
            end = await relay.next_message()
    assert end["type"] == "end"
    assert json.loads(end["handoffData"])["detail"] == "caller_silent"
    await asyncio.sleep(0.3)
    (record,) = records.list()
    assert record.end_reason == "caller_silent"


async def test_realtime_silent_caller_is_reprompted_then_hung_up(tmp_path: Path, registry: object) -> None:
    """Speech to speech: the model is asked to say the re-prompt and the goodbye verbatim, through its session."""
    text = f"""
name: phone
mode: realtime
agent: {{instructions: Be brief., greeting: Hello there.}}
vad: {{start_secs: 0.1, stop_secs: 0.2}}
realtime:
  provider: testkit_realtime
  options:
    transcripts: []
    replies:
      - {{when: "Greet", say: "Hello there."}}
      - {{when: "still there", say: "Are you still there?"}}
      - {{when: "Goodbye", say: "Goodbye for now."}}
insecure: true
transport: {{public_url: {PUBLIC}, twilio: {{validate_signatures: false}}}}
sessions: {{store: sqlite, path: "{tmp_path / "s.db"}"}}
{SILENCE}"""
    records = RecordStore(tmp_path / "calls.db")
    with RunningServer(create_app([parse_deployment(text)], records=records, warm_up=False)) as server:
        async with simulator(server, auth_token=None) as call:
            await call.wait_for(call.closed.is_set, timeout=20, what="the server to hang up")
    bursts = gaps(audible(call.heard))
    assert len(bursts) == 2  # greeting | re-prompt | goodbye
    (greeting_end, reprompt_at), (reprompt_end, goodbye_at) = bursts
    assert abs(reprompt_at - greeting_end - REPROMPT_SECS) < 0.5
    assert abs(goodbye_at - reprompt_end - HANGUP_SECS) < 0.5
    await asyncio.sleep(0.3)
    (record,) = records.list()
    assert record.end_reason == "caller_silent"
    assert [e.kind for e in record.events] == ["reprompt", "silence_hangup"]


@pytest.mark.usefixtures("cloud")
async def test_openai_realtime_silent_caller_hears_the_reprompt_and_the_goodbye(fakes: Callable[..., Any]) -> None:
    """Against the OpenAI Realtime fake: each line is handed to the session as an item and answered."""
    realtime = fakes(
        FakeOpenAIRealtime, replies=["Hello there.", "Are you still there?", "Goodbye for now."], transcripts=[]
    )
    deployment = apply_overrides(
        config("realtime-openai", realtime=realtime),
        {"silence": {"reprompt_after_secs": REPROMPT_SECS, "reprompts": ["Are you still there?"],
                     "hangup_after_secs": HANGUP_SECS, "goodbye": "Goodbye for now."}},
    )  # fmt: skip

    async def silent(caller: LiveCaller, call_pipeline: CallPipeline) -> None:
        await call_pipeline.worker.queue_frames(call_pipeline.opening_frames())  # as a served call begins
        await caller.silence(8.0)

    record = await live_call(deployment, silent)
    asked = [str(m.get("item")) for m in realtime.messages("conversation.item.create")]
    assert any("Are you still there?" in item for item in asked) and any("Goodbye for now." in item for item in asked)
    assert len(realtime.messages("response.create")) == 3  # greeting, re-prompt, goodbye
    assert record.end_reason == "caller_silent"
    assert [e.kind for e in record.events] == ["reprompt", "silence_hangup"]
