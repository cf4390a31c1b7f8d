"""Warm transfer on the serverless audio bridge, end to end (issue 17).

A Twilio Media Streams client on the API Gateway shim, ``worker.handler`` queuing its messages in SQS (moto
server, FIFO), and ``BridgeWorker`` running the deployment's pipeline (voxpipe-testkit providers); Twilio's REST
API is a local fake, and the stack's TwiML function (``twiml.handler`` in a Lambda-like container) gets the dial
leg's signed status callbacks:

- the agent's warm transfer replaces the live call's TwiML with the hold conference (over REST) and rings the
  person with a dial leg whose TwiML says the LLM's summary before joining the caller; answered, nothing more;
- rung out, the TwiML function points the caller's call at a new bridge stream of the same call (a fresh call
  token, the stream's own parameters kept); the worker resumes the conversation, says the ``unanswered`` line
  and carries on, with the history intact and both transfer events in the call's record.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.apigw_shim import LambdaFunction, wait_until, write_handler_config
from tests.simulators import webhook_parameters
from tests.simulators.server import RunningServer
from tests.test_calls_transfer import FakeTwilioCalls
from tests.test_serverless_calls import twilio_posts, twiml_of
from tests.test_serverless_worker import (  # noqa: F401 — aws, environ and bridge are fixtures
    ACCOUNT,
    BRIDGE_URL,
    CASCADE,
    FAST,
    TOKEN,
    Bridge,
    BridgeWorker,
    Client,
    aws,
    bridge,
    chunks,
    environ,
    speech_then_silence,
    started,
    twilio_client,
)
from voxpipe.audio import g711
from voxpipe.records.model import CallEvent
from voxpipe.serverless.transfer import STATUS_PATH, bridge_route
from voxpipe.transports.twilio_account import TransferRoute

HTTP_URL = "https://hooks.voxpipe.test"
CALL_SID = "CA0000000000000000000000000000a7a1"
NUMBERS = {"from": "+15551230000", "to": "+15559990000"}  # the stream's own parameters (the number called: "to")
SUMMARY = "The caller asked our opening hours and then asked for a person."
UNANSWERED = "Sorry, nobody could take your call. Let us carry on."
HOURS = "We are open from nine to five every day."
HOLD = "https://voice.example.com/hold.mp3"
PHONE = (
    CASCADE.replace(
        "  greeting: Hi there.\n",
        "  greeting: Hi there.\n  tools:\n    - kind: transfer\n      options:\n"
        f'        {{to: "+15557770000", mode: warm, ring_timeout_secs: 5, hold_audio: "{HOLD}", '
        f'unanswered: "{UNANSWERED}"}}\n',
    )
    .replace('transcripts: ["what are your hours"]', 'transcripts: ["what are your hours", "a human please"]')
    .replace(
        "replies: [",
        f'replies: [{{when: Summarise, say: "{SUMMARY}"}}, '
        '{when: human, tool_call: {name: transfer, arguments: {reason: asked}}, say: "Let me connect you."}, ',
    )
    .replace(
        'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}',
        f'twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}", account_sid: {ACCOUNT}}}',
    )
    + "silence: off\n"
)


async def speak(client: Client) -> None:
    """One turn of the caller's (the STT fake hears its next transcript)."""
    await client.stream([client.media(g711.encode(c)) for c in chunks(speech_then_silence(8000), 1600)])


async def said(worker: BridgeWorker) -> list[str]:
    """What was said in the call's conversation so far (tool calls, results and progress notes left out)."""
    session = await worker.host.store.get(CALL_SID)
    contents = [m.get("content") for m in (session.messages if session else []) if m["role"] != "tool"]
    return [c for c in contents if isinstance(c, str) and c and not re.match(r"^\{|^IN_PROGRESS", c)]


async def until_said(worker: BridgeWorker, text: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in await said(worker):
        assert asyncio.get_running_loop().time() < deadline, f"never said {text!r}: {await said(worker)}"
        await asyncio.sleep(0.1)


async def test_warm_transfer_on_the_bridge_briefs_the_person_and_brings_back_a_caller_nobody_took(
    bridge: Bridge,  # noqa: F811
    environ: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    rest = FakeTwilioCalls()
    route = bridge_route({"VOXPIPE_HTTP_URL": HTTP_URL + "/", "VOXPIPE_BRIDGE_URL": BRIDGE_URL})  # as the worker's main
    assert route == TransferRoute(HTTP_URL + STATUS_PATH, BRIDGE_URL) and bridge_route({}) is None
    with RunningServer(rest.app) as rest_server:
        async with bridge(PHONE, FAST, twilio_client=rest.client(rest_server.url), transfer_route=route) as (
            shim,
            worker,
        ):
            caller = await twilio_client(shim, CALL_SID, webhook_parameters("twilio", CALL_SID) | NUMBERS)
            await started(worker)
            await caller.collect(lambda got: any(m["event"] == "media" for m in got))  # the greeting
            await asyncio.sleep(1.2)
            await speak(caller)  # what are your hours
            await until_said(worker, HOURS)
            await speak(caller)  # a human please: "Let me connect you.", then the warm transfer
            await wait_until(lambda: rest.created and rest.updates, timeout=20)
            await wait_until(lambda: not any(not call.closed.is_set() for call in worker.calls.values()))

            # The live call is put on hold over REST; the person is rung with the summary first.
            ((held, hold),) = rest.updates
            room = twiml_of(hold["Twiml"]).find("Dial/Conference")
            assert held == CALL_SID and room is not None
            assert (room.get("waitUrl"), room.text) == (HOLD, f"voxpipe-{CALL_SID}")
            (dial,) = rest.created
            leg = twiml_of(dial["Twiml"][0])
            assert [verb.tag for verb in leg] == ["Say", "Dial"] and leg[0].text == SUMMARY  # the summary first
            assert leg.find("Dial/Conference").text == f"voxpipe-{CALL_SID}"
            assert (dial["To"], dial["From"], dial["Timeout"]) == (["+15557770000"], [NUMBERS["to"]], ["5"])
            status_url = dial["StatusCallback"][0]
            assert status_url.startswith(f"{HTTP_URL}/twiml/transfer-status?")
            assert dict(parse_qsl(urlsplit(status_url).query))["call"] == CALL_SID

            # The dial leg's status callbacks, signed by Twilio, reach the stack's TwiML function.
            config = write_handler_config(tmp_path, PHONE)
            webhook = LambdaFunction(
                "voxpipe.serverless.twiml.handler",
                environ
                | {"VOXPIPE_HANDLER_CONFIG": str(config), "VOXPIPE_HTTP_URL": HTTP_URL}
                | {"VOXPIPE_TWILIO_API_URL": rest_server.url},
            )
            try:
                answered = await twilio_posts(
                    webhook, status_url, {"CallSid": "CAleg", "CallStatus": "in-progress"}, TOKEN
                )
                assert answered["statusCode"] == 204 and len(rest.updates) == 1  # answered: nothing more to do
                await asyncio.sleep(0.3)  # some ring time
                rung_out = await twilio_posts(
                    webhook, status_url, {"CallSid": "CAleg", "CallStatus": "no-answer"}, TOKEN
                )
                assert rung_out["statusCode"] == 204
            finally:
                await webhook.stop()
            (updated, back) = rest.updates[-1]
            stream = twiml_of(back["Twiml"]).find("Connect/Stream")
            assert updated == CALL_SID and stream is not None and stream.get("url") == BRIDGE_URL
            parameters = {p.get("name"): p.get("value") for p in stream}
            assert parameters["voxpipe_transfer"] == "no-answer" and parameters["voxpipe_say"] == UNANSWERED
            assert float(parameters["voxpipe_ring_secs"]) >= 0.3 and parameters["voxpipe_call_token"]
            assert {k: parameters[k] for k in NUMBERS} == NUMBERS

            # Twilio opens a new stream of the same call with exactly those parameters: the agent is back.
            returned = await twilio_client(shim, CALL_SID, parameters)
            await until_said(worker, UNANSWERED)
            await speak(returned)  # what are your hours (a new call's STT)
            deadline = asyncio.get_running_loop().time() + 20
            while (await said(worker)).count(HOURS) < 2:
                assert asyncio.get_running_loop().time() < deadline, await said(worker)
                await asyncio.sleep(0.1)
            await returned.ws.close()
            assert await said(worker) == [
                "Hi there.",
                "what are your hours",
                HOURS,
                "a human please",
                "Let me connect you.",
                UNANSWERED,
                "what are your hours",
                HOURS,
            ]
            await wait_until(lambda: not worker.calls)
    # One record of the call: both connections' turns, the transfer asked for and its outcome.
    records = worker.host.bookkeeping.records

    def transfers() -> list[CallEvent]:
        return [e for r in records.list() for e in r.events if e.kind == "transfer"]

    await wait_until(lambda: len(transfers()) == 2, timeout=10)
    (record,) = records.list()
    assert record.call_id == CALL_SID
    assert [t.heard for t in record.turns] == ["what are your hours", "a human please", "what are your hours"]
    asked, rung_out_event = [e for e in record.events if e.kind == "transfer"]
    assert (asked.mode, asked.to, asked.summary, asked.answered) == ("warm", "+15557770000", SUMMARY, None)
    assert (rung_out_event.answered, rung_out_event.status, rung_out_event.text) == (False, "no-answer", UNANSWERED)
    assert rung_out_event.ring_secs >= 0.3 and rung_out_event.at_secs > asked.at_secs
