"""Contract tests of ConversationRelay: each shared behaviour, run against both adapters.

ConversationRelay has two adapters over ``voxpipe.telephony.conversation_relay`` and ``keypad``: the server's
(``voxpipe serve``, one process holds the session) and the Lambda's (each message its own invocation, the
conversation in DynamoDB). Both must group keypad digits into one entry, deliver it in order before the next
prompt, store an entry still pending at the end of the session without answering it, treat partial prompts
as previews of the final one, and (tested in their own files) carry the model's reason as ``detail`` in the
handoff data.
(Media Streams: ``test_telephony_stream_contracts.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.apigw_shim import ApiGatewayShim, wait_until
from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.test_conversation_relay import DEPLOYMENT as SERVER_DEPLOYMENT
from tests.test_conversation_relay import TOKEN as SERVER_TOKEN
from tests.test_conversation_relay import stored as server_stored
from tests.test_serverless_relay import (  # noqa: F401  (module fixtures of the Lambda adapter)
    RelayCaller,
    aws,
    bedrock,
    config_file,
    lambda_env,
    shim,
    signature,
    table,
)
from voxpipe.config.loader import parse_deployment
from voxpipe.telephony import keypad
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(120)


class Caller:
    """Twilio's side of one ConversationRelay session, whichever adapter answers."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], reply: Callable[[], Awaitable[str]]):
        self.send = send
        self.reply = reply

    async def prompt(self, text: str, *, last: bool = True) -> None:
        await self.send({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})

    async def dtmf(self, digit: str) -> None:
        await self.send({"type": "dtmf", "digit": digit})


@dataclass
class RelayAdapter:
    """``session(call)`` opens a session; ``messages(call)`` reads its stored conversation."""

    session: Callable[[str], Any]
    messages: Callable[[str], Awaitable[list[dict[str, Any]]]]


def _server(tmp_path: Path) -> Any:
    text = SERVER_DEPLOYMENT.replace("{db}", str(tmp_path / "s.db"))
    app = create_app([parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": SERVER_TOKEN})], warm_up=False)
    return RunningServer(app)


@pytest.fixture(params=["server", "lambda"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path, registry: object) -> AsyncIterator[RelayAdapter]:
    if request.param == "server":
        with _server(tmp_path) as server:

            @asynccontextmanager
            async def server_session(call: str) -> AsyncIterator[Caller]:
                simulator = RelaySimulator(
                    f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay", session_id=call
                )
                async with simulator:
                    yield Caller(simulator.send, lambda: _text(simulator.reply()))

            yield RelayAdapter(server_session, lambda call: server_stored(tmp_path, call))
        return
    lambda_shim: ApiGatewayShim = request.getfixturevalue("shim")
    conversations = table(request.getfixturevalue("aws"))

    @asynccontextmanager
    async def lambda_session(call: str) -> AsyncIterator[Caller]:
        caller = await RelayCaller.dial(lambda_shim.client_url, signature())
        await caller.setup(call)
        await wait_until(lambda: conversations.get(call))
        # Keys arrive as concurrent invocations: start their containers first, as a live relay has them warm.
        before = len(lambda_shim.invoked("$default"))
        for _ in range(3):
            await caller.send({"type": "error", "description": "warming up"})
        await wait_until(lambda: len(lambda_shim.invoked("$default")) >= before + 3)
        try:
            yield Caller(caller.send, caller.reply)
        finally:
            await caller.hang_up()

    async def lambda_messages(call: str) -> list[dict[str, Any]]:
        return conversations.get(call).messages

    yield RelayAdapter(lambda_session, lambda_messages)


async def _text(reply: Awaitable[tuple[str, float]]) -> str:
    return (await reply)[0]


def _users(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


async def _settled(adapter: RelayAdapter, call: str, users: int) -> list[dict[str, Any]]:
    """The stored conversation once it holds ``users`` user turns and the reply after the last one."""
    for _ in range(100):
        messages = await adapter.messages(call)
        if len(_users(messages)) >= users and messages[-1]["role"] == "assistant":
            return messages
        await asyncio.sleep(0.1)
    raise AssertionError(f"the conversation did not settle: {messages}")


async def test_keypad_digits_are_one_entry_ended_by_hash(adapter: RelayAdapter) -> None:
    call = "CA" + "1" * 32
    async with adapter.session(call) as caller:
        for digit in "42#":
            await caller.dtmf(digit)
            await asyncio.sleep(0.2)  # a person typing
        assert await caller.reply()
    messages = await _settled(adapter, call, 1)
    assert _users(messages) == [keypad.entry_message("42#")["content"]]


async def test_keypad_digits_are_one_entry_ended_by_a_pause(adapter: RelayAdapter) -> None:
    call = "CA" + "2" * 32
    async with adapter.session(call) as caller:
        for digit in "71":
            await caller.dtmf(digit)
            await asyncio.sleep(0.3)  # a person typing, well within the pause
        assert await caller.reply()
        await caller.dtmf("x")  # not a key: ignored, the session goes on
        await caller.prompt("are you there")
        assert await caller.reply()
    messages = await _settled(adapter, call, 2)
    assert _users(messages) == [keypad.entry_message("71")["content"], "are you there"]


async def test_keypad_digits_come_in_order_before_the_next_prompt(adapter: RelayAdapter) -> None:
    """Keys typed, then words said within the pause: the entry is stored first and answered with the words."""
    call = "CA" + "4" * 32
    async with adapter.session(call) as caller:
        for digit in "58":
            await caller.dtmf(digit)
            await asyncio.sleep(0.2)
        await caller.prompt("that is my account")
        assert await caller.reply()
        await asyncio.sleep(keypad.PAUSE_SECS + 0.5)  # the entry's pause ends: no second answer to it
    messages = await _settled(adapter, call, 2)
    assert _users(messages) == [keypad.entry_message("58")["content"], "that is my account"]
    assert [m["role"] for m in messages[-3:]] == ["user", "user", "assistant"]


async def test_keys_pending_when_the_session_ends_are_stored_unanswered(adapter: RelayAdapter) -> None:
    call = "CA" + "5" * 32
    async with adapter.session(call) as caller:
        await caller.prompt("what are your hours")
        assert await caller.reply()
        await caller.dtmf("9")
        await asyncio.sleep(0.3)  # the session ends within the pause
    for _ in range(50):
        messages = await adapter.messages(call)
        if messages[-1]["role"] == "user":
            break
        await asyncio.sleep(0.1)
    assert messages[-1] == keypad.entry_message("9")  # stored, and no reply was asked of the LLM
    assert _users(messages) == ["what are your hours", keypad.entry_message("9")["content"]]


async def test_partial_prompts_preview_the_final_one(adapter: RelayAdapter) -> None:
    call = "CA" + "3" * 32
    async with adapter.session(call) as caller:
        await caller.prompt("what are", last=False)
        await caller.prompt("what are your", last=False)
        await caller.prompt("what are your hours")
        assert await caller.reply()
    messages = await _settled(adapter, call, 1)
    assert _users(messages) == ["what are your hours"]


def test_both_webhooks_answer_the_same_conversation_relay_twiml(tmp_path: Path) -> None:
    """The server's ``/twiml`` and the Lambda's, for one deployment, differ only in the URLs they were given."""
    import json

    from tests.apigw_shim import write_handler_config
    from tests.test_serverless_relay import DEPLOYMENT as LAMBDA_DEPLOYMENT
    from voxpipe.serverless import HandlerConfig
    from voxpipe.serverless.twiml import relay_twiml as lambda_twiml
    from voxpipe.transports.twilio_account import relay_twiml as server_twiml

    yaml = LAMBDA_DEPLOYMENT.replace("transport:\n", "transport:\n  public_url: https://voice.example.com\n")
    environ = {"TWILIO_AUTH_TOKEN": "t", "BEDROCK_URL": "http://127.0.0.1:1"}
    deployment = parse_deployment(yaml, environ=environ)
    data = json.loads(write_handler_config(tmp_path, yaml).read_text())
    relay_url = "wss://voice.example.com/relay-test/relay"
    config = HandlerConfig.from_json(data, environ | {"VOXPIPE_RELAY_URL": relay_url})
    action = "https://voice.example.com/relay-test/connect-action"
    assert lambda_twiml(config, action) == server_twiml(deployment)
