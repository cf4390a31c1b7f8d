"""Contract tests of Media Streams: each shared behaviour, run against both adapters.

Media Streams have two adapters over ``voxpipe.telephony.media_streams`` (through ``MediaStreamCall``): the
server's WebSocket and the serverless bridge (events through API Gateway, Lambda and SQS to the worker). Both
must group keypad digits into one entry. (The browser dialect's transcript
and latency events are checked on each adapter in its own file.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from tests.simulators import webhook_parameters
from tests.simulators.server import RunningServer
from tests.test_serverless_worker import (  # noqa: F401  (fixtures of the bridge adapter)
    BRIDGE_URL,
    CASCADE,
    FAST,
    TOKEN,
    Client,
    aws,
    bridge,
    environ,
)
from voxpipe.config.loader import parse_deployment
from voxpipe.telephony import keypad
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(120)

KEYPAD = CASCADE.replace("{when: hours,", '{when: keypad, say: "Thanks for the digits."}, {when: hours,')


@dataclass
class StreamAdapter:
    """``connect()`` opens a Twilio media stream (a ``Client``); ``messages(call)`` reads the stored conversation."""

    connect: Callable[[], Awaitable[Client]]
    messages: Callable[[str], Awaitable[list[dict[str, Any]] | None]]


@pytest.fixture(params=["server", "bridge"])
async def stream_adapter(request: pytest.FixtureRequest, registry: object) -> AsyncIterator[StreamAdapter]:
    if request.param == "server":
        unsigned = "twilio: {validate_signatures: false}"
        yaml = "insecure: true\n" + KEYPAD.replace('twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}', unsigned)
        app = create_app([parse_deployment(yaml)], warm_up=False)
        host = app.state.hosts["bridge-test"]
        with RunningServer(app) as server:

            async def server_connect() -> Client:
                return await Client.connect(f"{server.ws_url}/bridge-test/media", {})

            yield StreamAdapter(server_connect, lambda call: _stored(host.store, call))
        return
    run_bridge = request.getfixturevalue("bridge")
    async with run_bridge(KEYPAD, FAST) as (shim, worker):
        signature = RequestValidator(TOKEN).compute_signature(BRIDGE_URL, {})

        async def bridge_connect() -> Client:
            return await Client.connect(shim.client_url, {"X-Twilio-Signature": signature})

        yield StreamAdapter(bridge_connect, lambda call: _stored(worker.host.store, call))


async def _stored(store: Any, call: str) -> list[dict[str, Any]] | None:
    session = await store.get(call)
    return session.messages if session else None


async def test_media_stream_keypad_digits_are_one_entry(stream_adapter: StreamAdapter) -> None:
    call = "CA" + "4" * 32
    client = await stream_adapter.connect()
    client.stream_sid = "MZ" + "4" * 32
    parameters = {"from": "+15550100", **webhook_parameters("twilio", call)}  # as the webhook's TwiML gave them
    start = {"callSid": call, "streamSid": client.stream_sid, "customParameters": parameters}
    await client.send(client.event("connected"), client.event("start", start=start))
    for _ in range(300):  # the session opens on start (a cold Lambda container may hold the event back)
        if await stream_adapter.messages(call) is not None:
            break
        await asyncio.sleep(0.05)
    echo = asyncio.ensure_future(_echo_marks(client))  # as Twilio does once the audio before a mark played
    for digit in "12#":
        await client.send(client.event("dtmf", dtmf={"digit": digit}))
        await asyncio.sleep(0.2)  # a person typing

    for _ in range(200):
        messages = await stream_adapter.messages(call) or []
        if {"role": "assistant", "content": "Thanks for the digits."} in messages:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a wrongly split entry would show up by now
    messages = await stream_adapter.messages(call) or []
    assert [m["content"] for m in messages if m["role"] == "user"] == [keypad.entry_message("12#")["content"]]
    echo.cancel()
    await client.ws.close()


async def _echo_marks(client: Client) -> None:
    async for raw in client.ws:
        event = json.loads(raw)
        if event["event"] == "mark":
            await client.send(client.event("mark", mark=event["mark"]))
