"""Warm transfer end to end on Twilio Media Streams: the simulator plays the caller, a fake plays Twilio's REST API.

The agent's transfer tool puts the caller on hold (the hold leg's TwiML: a conference with the hold audio) and
rings the person (the dial leg: a new call whose TwiML says the LLM's summary before joining them), with a status
callback. Answered: /metrics counts it. Rung out: the caller's call is pointed back at a new media stream of the
same call, the conversation resumes with its history, and the agent says nobody answered, then carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl
from xml.etree import ElementTree as ET

import httpx
from fastapi import Request
from twilio.request_validator import RequestValidator

from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.test_calls_silence import ACCOUNT
from tests.test_conversation_relay import DEPLOYMENT as RELAY_DEPLOYMENT
from tests.test_conversation_relay import TOKEN as RELAY_TOKEN
from tests.test_conversation_relay import stored
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
from voxpipe.config.loader import parse_deployment
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app

SUMMARY = "The caller asked our opening hours and then asked for a person."
UNANSWERED = "Sorry, nobody could take your call. Let us carry on."
HOLD = "https://voice.example.com/hold.mp3"
TRANSFER = f"""
    - kind: transfer
      options:
        {{to: "+15557770000", mode: warm, ring_timeout_secs: 5, hold_audio: "{HOLD}", unanswered: "{UNANSWERED}"}}
"""
RULES = f"""      - {{when: Summarise, say: "{SUMMARY}"}}
      - {{when: human, tool_call: {{name: transfer, arguments: {{reason: asked}}}}, say: "Let me connect you."}}
"""


class FakeTwilioCalls(FakeTwilioRest):
    """Twilio's REST API for calls: updates of live calls, and new calls (``POST .../Calls.json``)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, list[str]]] = []

        @self.app.post("/2010-04-01/Accounts/{account}/Calls.json")
        async def create(account: str, request: Request) -> dict[str, str]:
            form: dict[str, list[str]] = {}
            for key, value in parse_qsl((await request.body()).decode()):
                form.setdefault(key, []).append(value)
            self.created.append(form)
            return {"sid": "CA" + uuid.uuid4().hex, "account_sid": account, "status": "queued"}


def twiml_of(text: str) -> ET.Element:
    """A TwiML document our own server wrote (trusted: parsed with the standard library)."""
    return ET.fromstring(text)  # noqa: S314 — our server's own TwiML, in a test


def phone(tmp_path: Path) -> object:
    transcripts = json.dumps(["what are your hours", "a human please", "what are your hours"])
    text = DEPLOYMENT.format(transcripts=transcripts, story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    text = text.replace('twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}', ACCOUNT)
    text = text.replace("  tools:\n", "  tools:" + TRANSFER, 1).replace("    replies:\n", "    replies:\n" + RULES, 1)
    return parse_deployment(text + "silence: off\n", environ={"TWILIO_AUTH_TOKEN": TOKEN})


async def post_status(server: RunningServer, call_sid: str, status: str) -> httpx.Response:
    form = {"CallSid": "CAdialleg", "CallStatus": status}
    url = f"{PUBLIC}/phone/transfer-status?call={call_sid}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post(
            f"/phone/transfer-status?call={call_sid}", data=form, headers={"X-Twilio-Signature": signature}
        )


async def ask_for_a_person(server: RunningServer) -> str:
    async with simulator(server) as call:
        await call.wait_for(lambda: audible(call.heard), what="the greeting")
        await asyncio.sleep(1.2)
        await turn(call)  # hours
        await turn(call)  # a human please: "Let me connect you.", then the transfer
        await call.wait_for(call.closed.is_set, what="the stream to end for the transfer")
    await asyncio.sleep(0.5)
    return call.call_sid


@contextlib.contextmanager
def served(tmp_path: Path) -> Iterator[tuple[FakeTwilioCalls, RecordStore, RunningServer]]:
    """The phone deployment served, with Twilio's REST API faked; its records kept."""
    rest, records = FakeTwilioCalls(), RecordStore(tmp_path / "calls.db")
    with RunningServer(rest.app) as rest_server:
        app = create_app([phone(tmp_path)], records=records, warm_up=False, twilio_client=rest.client(rest_server.url))
        with RunningServer(app) as server:
            yield rest, records, server


async def test_answered_warm_transfer_delivers_the_summary_first(tmp_path: Path, registry: object) -> None:
    with served(tmp_path) as (rest, records, server):
        call_sid = await ask_for_a_person(server)
        ((updated, hold),) = rest.updates
        (dial,) = rest.created
        assert (await post_status(server, call_sid, "in-progress")).status_code == 204
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
        for _ in range(50):  # the outcome is written after the status callback is answered
            if len([e for e in records.list()[0].events if e.kind == "transfer"]) == 2:
                break
            await asyncio.sleep(0.1)
    assert updated == call_sid
    room = twiml_of(hold["Twiml"]).find("Dial/Conference")
    assert room is not None and room.get("waitUrl") == HOLD and room.text == f"voxpipe-{call_sid}"
    leg = twiml_of(dial["Twiml"][0])
    assert [verb.tag for verb in leg] == ["Say", "Dial"]  # the summary first, then the caller
    assert leg[0].text == SUMMARY and leg.find("Dial/Conference").text == f"voxpipe-{call_sid}"
    assert dial["To"] == ["+15557770000"] and dial["From"] == ["+15559990000"] and dial["Timeout"] == ["5"]
    assert dial["StatusCallback"] == [f"{PUBLIC}/phone/transfer-status?call={call_sid}"]
    (record,) = records.list()
    requested, answered = [e for e in record.events if e.kind == "transfer"]
    assert (requested.mode, requested.to, requested.summary, requested.answered) == (
        "warm",
        "+15557770000",
        SUMMARY,
        None,
    )
    assert (answered.mode, answered.answered, answered.status) == ("warm", True, "in-progress")
    assert answered.ring_secs is not None and answered.at_secs > requested.at_secs
    assert 'voxpipe_transfers_total{answered="yes",deployment="phone",mode="warm"} 1.0' in metrics


async def test_rung_out_warm_transfer_returns_the_caller_to_the_agent(tmp_path: Path, registry: object) -> None:
    with served(tmp_path) as (rest, records, server):
        call_sid = await ask_for_a_person(server)
        assert (await post_status(server, call_sid, "no-answer")).status_code == 204
        (_, back) = rest.updates[-1]
        stream = twiml_of(back["Twiml"]).find("Connect/Stream")
        assert stream is not None and stream.get("url") == "wss://voice.example.com/phone/media"
        parameters = {p.get("name"): p.get("value") for p in stream}
        assert parameters["voxpipe_transfer"] == "no-answer" and parameters["voxpipe_say"] == UNANSWERED
        assert parameters["voxpipe_call_token"]  # a fresh binding: the first stream's token may have expired
        # bound=False: the new stream's start carries exactly the return TwiML's parameters, token included
        async with simulator(server, call_sid=call_sid, parameters=parameters, bound=False) as call:
            await call.wait_for(lambda: audible(call.heard), what="the agent back on the line")
            await asyncio.sleep(1.5)
            _, answer = await turn(call)  # the conversation carries on
            assert answer
            await call.stop()
    contents = [m["content"] for m in stored_messages(tmp_path, call_sid) if isinstance(m.get("content"), str)]
    said = [c for c in contents if not re.match(r"^\{|^IN_PROGRESS", c)]
    assert said[:4] == [
        "Hello, thanks for calling.",
        "what are your hours",
        "We are open nine to five.",
        "a human please",
    ]
    assert said[-3:] == [UNANSWERED, "what are your hours", "We are open nine to five."]
    # One record of the call: the turns before the transfer and after the return, the transfer asked for and
    # its outcome (the second connection's record joined to the first's, not replacing it).
    (record,) = records.list()
    assert [t.heard for t in record.turns] == ["what are your hours", "a human please", "what are your hours"]
    assert [t.index for t in record.turns] == [1, 2, 3]
    requested, returned = [e for e in record.events if e.kind == "transfer"]
    assert (requested.mode, requested.summary, requested.answered) == ("warm", SUMMARY, None)
    assert (returned.mode, returned.answered, returned.status, returned.text) == (
        "warm",
        False,
        "no-answer",
        UNANSWERED,
    )
    assert returned.at_secs > requested.at_secs and returned.ring_secs is not None


def relay_deployment(tmp_path: Path) -> object:
    text = RELAY_DEPLOYMENT.replace("{db}", str(tmp_path / "s.db"))
    text = text.replace('options: {to: "+15557770000"}', "options:\n" + TRANSFER.split("options:\n")[1].rstrip())
    text = text.replace("    auth_token:", "    account_sid: AC0123456789abcdef0123456789abcdef\n    auth_token:", 1)
    text = text.replace("    replies:\n", f'    replies:\n      - {{when: Summarise, say: "{SUMMARY}"}}\n', 1)
    return parse_deployment(text + "silence: off\n", environ={"TWILIO_AUTH_TOKEN": RELAY_TOKEN})


async def signed_post(server: RunningServer, path: str, form: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/relay/{path}", form)
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post(f"/relay/{path}", data=form, headers={"X-Twilio-Signature": signature})


async def test_relay_warm_transfer_carries_the_summary_and_comes_back_when_rung_out(
    tmp_path: Path, registry: object
) -> None:
    rest = FakeTwilioCalls()
    with RunningServer(rest.app) as rest_server:
        app = create_app([relay_deployment(tmp_path)], warm_up=False, twilio_client=rest.client(rest_server.url))
        with RunningServer(app) as server:
            url = (f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay")
            async with RelaySimulator(*url) as relay:
                await relay.prompt("what are your hours")
                await relay.reply()
                await relay.prompt("a human please")
                assert (await relay.reply())[0] == "Transferring you now."
                end = await relay.next_message()
            handoff = json.loads(end["handoffData"])
            assert (handoff["reason"], handoff["mode"], handoff["to"]) == ("transfer", "warm", "+15557770000")
            assert handoff["summary"] == SUMMARY and handoff["session"] == relay.session_id
            form = {"CallSid": relay.call_sid, "To": "+15559990000", "HandoffData": end["handoffData"]}
            hold = await signed_post(server, "connect-action", form)
            assert twiml_of(hold.text).find("Dial/Conference").get("waitUrl") == HOLD
            await asyncio.sleep(0.5)
            (dial,) = rest.created
            assert [verb.tag for verb in twiml_of(dial["Twiml"][0])] == ["Say", "Dial"]
            assert twiml_of(dial["Twiml"][0])[0].text == SUMMARY
            status = f"transfer-status?call={relay.call_sid}"
            assert (await signed_post(server, status, {"CallSid": "CAleg", "CallStatus": "busy"})).status_code == 204
            (_, back) = rest.updates[-1]
            connect = twiml_of(back["Twiml"]).find("Connect/ConversationRelay")
            assert connect is not None and connect.get("welcomeGreeting") is None
            parameters = {p.get("name"): p.get("value") for p in connect}
            assert parameters["voxpipe_call_token"]  # the returning session binds to the CallSid afresh
            async with RelaySimulator(*url, call_sid=relay.call_sid, custom_parameters=parameters) as returned:
                assert (await returned.reply())[0] == UNANSWERED
                await returned.prompt("what are your hours")
                assert (await returned.reply())[0] == "We are open nine to five."
    said = [m["content"] for m in await stored(tmp_path, relay.session_id) if isinstance(m.get("content"), str)]
    said = [c for c in said if not c.startswith(("{", "IN_PROGRESS"))]
    assert said == [
        "Hi, this is the relay agent.",
        "what are your hours",
        "We are open nine to five.",
        "a human please",
        "Transferring you now.",
        UNANSWERED,
        "what are your hours",
        "We are open nine to five.",
    ]
