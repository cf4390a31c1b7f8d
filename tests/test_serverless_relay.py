"""ConversationRelay on Lambda, end to end: a simulated Twilio ConversationRelay client holds calls through the
API Gateway WebSocket shim, whose ``$connect``/``$default``/``$disconnect`` invocations run ``relay.handler``
in Lambda-like containers (separate processes); history lives in DynamoDB (moto server); tokens come from the
Bedrock converse-stream fake, which rejects any request Bedrock would (roles must alternate...).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.apigw_shim import (
    ApiGatewayShim,
    LambdaFunction,
    aws_environment,
    aws_service,
    moto_server,
    wait_until,
    write_handler_config,
)
from tests.fakes import Behaviour, FakeBedrock, Turn
from tests.faulty_proxy import FaultyProxy
from tests.simulators import webhook_parameters
from voxpipe.aws.conversations import ConversationTable, table_definition
from voxpipe.config.models import DEFAULT_FAILURE_SAY
from voxpipe.security.call_binding import PARAMETER
from voxpipe.serverless import ConnectionGone, Connections, HandlerConfig
from voxpipe.serverless.twiml import handler as twiml_handler

pytestmark = pytest.mark.timeout(120)

TOKEN = "twilio-test-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
RELAY_URL = "wss://relay.voxpipe.test/prod"
TABLE = "voxpipe-relay-test"
SILENCE_QUEUE = "voxpipe-silence-test"  # the relay queues its silence checks here (no consumer in this module)
MODEL = "amazon.nova-lite-v1:0"
CALL = "CA00000000000000000000000000000001"
DEPLOYMENT = f"""
name: relay-test
agent:
  instructions: You are a terse test agent.
  greeting: Hello, how can I help?
  tools:
    - kind: end_call
stt: {{provider: testkit_stt}}  # ConversationRelay does speech itself; the loader still wants a cascade
tts: {{provider: testkit_tts}}
llm:
  provider: bedrock
  model: {MODEL}
  options: {{region: us-east-1, endpoint_url: "${{BEDROCK_URL}}"}}
transport:
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
  conversation_relay: {{language: en-GB, tts_provider: ElevenLabs, voice: test-voice}}
sessions: {{store: dynamodb, table: {TABLE}, ttl_secs: 3600}}
"""


def reply_to(turn: Turn) -> Any:
    """The fake model's script: 'bye' ends the call, 'long' talks at length, anything else is echoed."""
    from tests.fakes import ToolCall

    text = turn.last_user_text or ""
    if turn.tool_results:
        return "That did not work." if '"error"' in turn.tool_results[-1].output else "Goodbye then."
    if "another call" in text:  # the caller talked the model into naming another call (an undeclared argument)
        return ToolCall("end_call", {"reason": "done", "call_sid": "CA" + "f" * 32})
    if "odd reason" in text:  # ... or into a reason that is no string
        return ToolCall("end_call", {"reason": {"$ne": None}})
    if "bye" in text:
        return ToolCall("end_call", {"reason": "caller is done"})
    if "long" in text:
        return " ".join(f"word{i}" for i in range(60)) + "."
    return f"You said {text}."


def dynamodb(endpoint: str) -> Any:
    return aws_service("dynamodb", endpoint)


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    with moto_server() as endpoint:
        dynamodb(endpoint).create_table(**table_definition(TABLE))
        aws_service("sqs", endpoint).create_queue(QueueName=SILENCE_QUEUE)
        yield endpoint


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock(Behaviour(per_chunk_delay_s=0.02), replies=reply_to, region="us-east-1") as fake:
        yield fake


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handler configuration ``voxpipe deploy sam`` writes for the test deployment."""
    return write_handler_config(tmp_path_factory.mktemp("relay"), DEPLOYMENT)


@pytest.fixture(scope="module")
def lambda_env(aws: str, bedrock: FakeBedrock, config_file: Path) -> dict[str, str]:
    return {
        "VOXPIPE_HANDLER_CONFIG": str(config_file),
        "VOXPIPE_TABLE": TABLE,
        "VOXPIPE_RELAY_URL": RELAY_URL,
        **aws_environment(dynamodb=aws, sqs=aws),
        "VOXPIPE_SILENCE_QUEUE_URL": f"{aws}/123456789012/{SILENCE_QUEUE}",
        "BEDROCK_URL": bedrock.url,
        "TWILIO_AUTH_TOKEN": TOKEN,
    }


@pytest.fixture(scope="module")
def shim(lambda_env: dict[str, str]) -> Iterator[ApiGatewayShim]:
    function = LambdaFunction("voxpipe.serverless.relay.handler", lambda_env)
    shim = ApiGatewayShim({"$connect": function, "$default": function, "$disconnect": function})
    with shim:
        function.env["VOXPIPE_CONNECTIONS_URL"] = shim.endpoint
        yield shim
    assert not shim.errors, shim.errors


def table(aws: str) -> ConversationTable:
    return ConversationTable(TABLE, 3600, client=dynamodb(aws))


class RelayCaller:
    """Twilio's side of a ConversationRelay session: opens the signed WebSocket, speaks prompts, reads tokens."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def dial(cls, url: str, signature: str | None = None) -> RelayCaller:
        headers = {"X-Twilio-Signature": signature} if signature is not None else {}
        return cls(await websockets.connect(url, additional_headers=headers, open_timeout=20))

    async def setup(self, call_sid: str = CALL, binding: dict[str, str] | None = None) -> None:
        """``binding``: the token parameter to bring (default: a fresh one, as the TwiML webhook gives)."""
        binding = webhook_parameters("conversation_relay", call_sid) if binding is None else binding
        await self.send(
            {
                "type": "setup",
                "sessionId": "VX" + call_sid[2:],
                "callSid": call_sid,
                "from": "+15550100",
                "to": "+15550199",
                "direction": "inbound",
                "customParameters": {"campaign": "test", **binding},
            }
        )

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def prompt(self, text: str) -> None:
        await self.send({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True})

    async def next_message(self, timeout: float = 20) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.received.append(message)
        return message

    async def reply(self, timeout: float = 20) -> str:
        """The tokens of one reply, up to the one with ``last: true``."""
        tokens = []
        while True:
            message = await self.next_message(timeout)
            assert message["type"] == "text", message
            tokens.append(message["token"])
            if message["last"]:
                return "".join(tokens)

    async def hang_up(self) -> None:
        await self.ws.close()


def signature(url: str = RELAY_URL) -> str:
    return RequestValidator(TOKEN).compute_signature(url, {})


# ------------------------------------------------------------------------------------------------ the handshake


async def test_connect_requires_a_valid_twilio_signature(shim: ApiGatewayShim) -> None:
    for bad in (None, "not-a-signature", signature("wss://somewhere.else/prod")):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RelayCaller.dial(shim.client_url, bad)
        assert refused.value.response.status_code == 403
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.hang_up()
    connect = shim.invoked("$connect")[-1]
    assert connect.event["headers"]["X-Twilio-Signature"] == signature()
    assert connect.event["requestContext"]["eventType"] == "CONNECT"


# ------------------------------------------------------------------------------------------------ a whole call


async def test_a_call_with_interrupt_concurrent_prompts_and_reconnect(
    shim: ApiGatewayShim, bedrock: FakeBedrock, aws: str
) -> None:
    conversations = table(aws)
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup()
    await wait_until(lambda: conversations.get(CALL))
    assert conversations.get(CALL).messages == [{"role": "assistant", "content": "Hello, how can I help?"}]

    # Two ordinary turns: tokens stream back, each reply ends with last=true; history grows in DynamoDB.
    requests_before = len(bedrock.requests())
    await caller.prompt("what are your hours")
    assert await caller.reply() == "You said what are your hours."
    await caller.prompt("thanks")
    assert await caller.reply() == "You said thanks."
    assert len([m for m in caller.received if m["type"] == "text"]) > 4  # streamed, not one message
    first_request = bedrock.requests()[requests_before]["json"]
    assert first_request["messages"][0] == {"role": "user", "content": [{"text": "(The call connected.)"}]}
    assert first_request["system"] == [{"text": "You are a terse test agent."}]

    # An interrupt while a long reply streams: the reply stops, and only what was heard is kept.
    start = len(caller.received)
    await caller.prompt("tell me something long")
    heard = "".join([(await caller.next_message())["token"] for _ in range(3)])
    await caller.send({"type": "interrupt", "utteranceUntilInterrupt": heard, "durationUntilInterruptMs": 800})
    await wait_until(lambda: not conversations.get(CALL).live and len(conversations.get(CALL).messages) == 7)
    await asyncio.sleep(0.3)  # any token still in flight
    long_reply = caller.received[start:]
    assert not any(m["last"] for m in long_reply), "an interrupted reply is not finished with last=true"
    assert len("".join(m["token"] for m in long_reply)) < len(reply_to(Turn(0, {}, "long", [])))
    assert conversations.get(CALL).messages[-1] == {"role": "assistant", "content": heard}

    # Two prompts at once: two concurrent invocations (two containers); neither turn is lost.
    start = len(caller.received)
    await caller.prompt("first of two")
    await caller.prompt("second of two")
    while sum(m["last"] for m in caller.received[start:]) < 2:
        await caller.next_message()
    await wait_until(lambda: len(conversations.get(CALL).messages) == 11)
    stored = [(m["role"], m["content"]) for m in conversations.get(CALL).messages[7:]]
    assert sorted(c for r, c in stored if r == "user") == ["first of two", "second of two"]
    # The later invocation may already see both turns (Bedrock gets them merged into one user message).
    assert len([c for r, c in stored if r == "assistant" and c.startswith("You said")]) == 2
    first, second = sorted(shim.invoked("$default")[-2:], key=lambda invocation: invocation.started)
    assert first.started < second.started < first.started + first.seconds, "the two invocations overlapped"

    # The caller's connection drops; a new one (same callSid) resumes the conversation.
    await caller.hang_up()
    await wait_until(lambda: shim.invoked("$disconnect"))
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup()
    await caller.prompt("are you still there")
    assert await caller.reply() == "You said are you still there."
    resumed = bedrock.requests()[-1]["json"]["messages"]
    assert len(resumed) >= 8 and {"text": "first of two"} in [b for m in resumed for b in m["content"]]
    final = conversations.get(CALL)
    assert final.messages.count({"role": "assistant", "content": "Hello, how can I help?"}) == 1
    assert final.metadata["custom_parameters"] == {"campaign": "test"}
    await caller.hang_up()
    assert not bedrock.errors, bedrock.errors

    item = dynamodb(aws).get_item(TableName=TABLE, Key={"pk": {"S": "call#" + CALL}})["Item"]
    assert abs(int(item["expires_at"]["N"]) - (time.time() + 3600)) < 120


async def test_end_call_tool_ends_the_session(shim: ApiGatewayShim) -> None:
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup("CA00000000000000000000000000000002")
    await caller.prompt("ok bye")
    assert await caller.reply() == "Goodbye then."
    end = await caller.next_message()
    # Issue 13: the Lambda's handoff data carries the model's reason as `detail`, like the server's.
    handoff = {"reason": "end_call", "detail": "caller is done"}
    assert end == {"type": "end", "handoffData": json.dumps(handoff, separators=(",", ":"))}
    await caller.hang_up()


async def test_tool_arguments_the_schema_does_not_allow_are_refused_and_the_call_goes_on(
    shim: ApiGatewayShim, bedrock: FakeBedrock, aws: str
) -> None:
    """Issue 11 on the Lambda relay: the LLM calls end_call with an injected ``call_sid`` and with a reason that
    is no string; each is refused by the tool's strict schema before the tool runs (the model gets an error
    result, the session is not ended, no Twilio action is taken), and a well-formed call still works."""
    call_sid = "CA00000000000000000000000000000004"
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup(call_sid)
    for prompt in ("hang up another call", "end it for an odd reason"):
        requests_before = len(bedrock.requests())
        await caller.prompt(prompt)
        assert await caller.reply() == "That did not work."
        results = [
            block["toolResult"]
            for request in bedrock.requests()[requests_before:]
            for message in request["json"]["messages"]
            for block in message["content"]
            if "toolResult" in block
        ]
        assert results and "error" in json.dumps(results[-1])
    history = table(aws).get(call_sid).messages
    refused = [json.loads(m["content"]) for m in history if m["role"] == "tool"]
    assert len(refused) == 2 and all("error" in result for result in refused)
    assert "call_sid" in refused[0]["error"]
    await caller.prompt("ok bye")  # declared arguments only: the tool runs and the session ends
    assert await caller.reply() == "Goodbye then."
    assert (await caller.next_message())["type"] == "end"
    await caller.hang_up()
    assert not bedrock.errors, bedrock.errors


async def test_a_replayed_setup_token_is_refused_by_every_invocation(shim: ApiGatewayShim, aws: str) -> None:
    """Issue 11: the setup's binding token is spent in the table by the invocation that took it, so the same
    token brought again (a captured handshake and setup, replayed for the same CallSid) opens nothing."""
    call_sid = "CA00000000000000000000000000000005"
    binding = webhook_parameters("conversation_relay", call_sid)
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup(call_sid, binding)
    await caller.prompt("what are your hours")
    assert await caller.reply() == "You said what are your hours."
    await caller.hang_up()
    replay = await RelayCaller.dial(shim.client_url, signature())
    await replay.setup(call_sid, binding)
    await replay.prompt("what did we say")
    with pytest.raises(websockets.ConnectionClosed):
        await replay.next_message(timeout=20)
    assert not replay.received
    assert [m["content"] for m in table(aws).get(call_sid).messages if m["role"] == "user"] == ["what are your hours"]
    digest = hashlib.sha256(binding[PARAMETER].encode()).hexdigest()
    spent = dynamodb(aws).get_item(TableName=TABLE, Key={"pk": {"S": "spent#" + digest}})["Item"]
    assert 100 < int(spent["expires_at"]["N"]) - time.time() <= 121


async def test_a_failed_llm_ends_the_session_through_on_failure(
    shim: ApiGatewayShim, bedrock: FakeBedrock, aws: str
) -> None:
    """No LLM of the chain answers: the caller hears on_failure's text as the last ``text``, then ``end`` hands
    the call off (reason ``failure``; ``<Connect action>`` then hangs up), as on the server. The call's
    measures keep the failure for its record (``voxpipe import-relay``)."""
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup("CA00000000000000000000000000000003")
    healthy, bedrock.behaviour = bedrock.behaviour, Behaviour(fail_status=500, fail_count=1000)
    try:
        await caller.prompt("what are your hours")
        prompted = time.monotonic()
        text = await caller.next_message()
        end = await caller.next_message()
    finally:
        bedrock.behaviour = healthy
    assert text == {"type": "text", "token": DEFAULT_FAILURE_SAY, "last": True}
    assert end["type"] == "end" and json.loads(end["handoffData"])["reason"] == "failure"
    assert "to" not in json.loads(end["handoffData"])
    assert time.monotonic() - prompted < 5.0  # Bedrock's retries of a 500 included
    await caller.hang_up()
    await wait_until(lambda: "ended_ms" in table(aws).get("CA00000000000000000000000000000003").metadata)
    measures = table(aws).get("CA00000000000000000000000000000003").metadata
    assert measures["failure"]["say"] == DEFAULT_FAILURE_SAY and measures["failure"]["reason"].startswith("llm: ")
    (turn,) = measures["turns"]
    assert turn["heard"] == "what are your hours" and turn["reply"] == "" and turn["last_text_ms"] is None
    assert "usage" not in measures  # the failed requests reported no tokens


async def test_a_setup_while_dynamodb_is_down_ends_the_session_through_on_failure(
    lambda_env: dict[str, str],
) -> None:
    """The conversation table is out of reach when the call starts (its endpoint refuses connections): the
    caller hears on_failure's text and the session ends with handoff data, as when the LLM fails; before, the
    invocation raised, and every prompt after Twilio's greeting was answered by silence."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    function = LambdaFunction("voxpipe.serverless.relay.handler", {**lambda_env, "AWS_ENDPOINT_URL_DYNAMODB": dead})
    down = ApiGatewayShim({"$connect": function, "$default": function, "$disconnect": function})
    with down:
        function.env["VOXPIPE_CONNECTIONS_URL"] = down.endpoint
        caller = await RelayCaller.dial(down.client_url, signature())
        await caller.setup("CA00000000000000000000000000000009")
        text = await caller.next_message()
        end = await caller.next_message()
        await caller.hang_up()
    assert text == {"type": "text", "token": DEFAULT_FAILURE_SAY, "last": True}
    handoff = json.loads(end["handoffData"])
    assert end["type"] == "end" and handoff["reason"] == "failure" and "session store" in json.dumps(handoff)


async def test_dynamodb_failing_mid_call_ends_the_session_through_on_failure(
    lambda_env: dict[str, str], aws: str
) -> None:
    """The conversation table answers the setup and the first turn, then its connections are cut (a proxy in
    front of moto): the next prompt gets on_failure's text and the session ends with handoff data, within the
    client's three attempts, and the turn answered before the outage is in the table."""
    down = threading.Event()
    call_sid = "CA00000000000000000000000000000010"
    with FaultyProxy(aws, lambda method, path: "cut" if down.is_set() else "pass") as proxy:
        function = LambdaFunction(
            "voxpipe.serverless.relay.handler", {**lambda_env, "AWS_ENDPOINT_URL_DYNAMODB": proxy.url}
        )
        with ApiGatewayShim({"$connect": function, "$default": function, "$disconnect": function}) as shim:
            function.env["VOXPIPE_CONNECTIONS_URL"] = shim.endpoint
            caller = await RelayCaller.dial(shim.client_url, signature())
            await caller.setup(call_sid)
            await caller.prompt("what are your hours")
            assert await caller.reply() == "You said what are your hours."
            down.set()
            await caller.prompt("and on sunday")
            prompted = time.monotonic()
            text = await caller.next_message()
            end = await caller.next_message()
            failed_after = time.monotonic() - prompted
            await caller.hang_up()
    assert text == {"type": "text", "token": DEFAULT_FAILURE_SAY, "last": True}
    assert end["type"] == "end" and json.loads(end["handoffData"])["reason"] == "failure"
    assert failed_after < 8.0  # three attempts, not DynamoDB's default ten
    stored = [m["content"] for m in table(aws).get(call_sid).messages if m["role"] == "user"]
    assert stored == ["what are your hours"]


# ------------------------------------------------------------------------------------------------ the parts


def test_expired_history_is_filtered_on_read_and_overwritten(aws: str) -> None:
    now = [1_000_000.0]
    conversations = ConversationTable(TABLE, 60, client=dynamodb(aws), clock=lambda: now[0])
    conversations.mutate("CA-expiry", lambda c: c.messages.append({"role": "user", "content": "old"}))
    assert conversations.get("CA-expiry").messages == [{"role": "user", "content": "old"}]
    now[0] += 61  # past the TTL: DynamoDB may not have deleted the item yet, but nobody may read it
    assert conversations.get("CA-expiry") is None
    fresh, _ = conversations.mutate("CA-expiry", lambda c: c.messages.append({"role": "user", "content": "new"}))
    assert fresh.messages == [{"role": "user", "content": "new"}] and fresh.version == 2


def test_conditional_writes_lose_no_turn_under_contention(aws: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    conversations = table(aws)

    def add(n: int) -> None:
        conversations.mutate("CA-race", lambda c: c.messages.append({"role": "user", "content": str(n)}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(24)))
    stored = conversations.get("CA-race")
    assert sorted(int(m["content"]) for m in stored.messages) == list(range(24))
    assert stored.version == 24


def test_gone_connections_raise_and_moto_accepts_posts(
    shim: ApiGatewayShim, aws: str, lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, lambda_env[name])
    with pytest.raises(ConnectionGone):
        Connections(shim.endpoint).post("AAAAAAAAAAAAAA==", "hello")
    # moto's @connections (root endpoint, no stage) accepts the same requests: the client's shape is AWS's.
    Connections(aws).post_json("AAAAAAAAAAAAAA==", {"type": "text", "token": "hi", "last": True})


def test_twiml_webhook_answers_conversation_relay_and_checks_the_signature(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"TWILIO_AUTH_TOKEN": TOKEN, "BEDROCK_URL": "", "VOXPIPE_RELAY_URL": RELAY_URL}
    config = HandlerConfig.from_json(json.loads(config_file.read_text()), environ)
    monkeypatch.setattr("voxpipe.serverless.twiml.handler_config", lambda: config)
    form = {"CallSid": CALL, "From": "+15550100"}
    body = urlencode(form)

    def post(path: str, data: str, params: dict[str, str], signed: bool = True) -> dict[str, Any]:
        url = f"https://hooks.voxpipe.test{path}"
        headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params)} if signed else {}
        event = {
            "rawPath": path,
            "body": data,
            "isBase64Encoded": False,
            "headers": headers,
            "requestContext": {"domainName": "hooks.voxpipe.test", "http": {"method": "POST"}},
        }
        return twiml_handler(event)

    assert post("/twiml", body, form, signed=False)["statusCode"] == 403
    answer = post("/twiml", body, form)
    assert answer["statusCode"] == 200 and answer["headers"]["Content-Type"] == "text/xml"
    twiml = answer["body"]
    assert '<Connect action="https://hooks.voxpipe.test/twiml/action">' in twiml
    for attribute in (
        f'url="{RELAY_URL}"',
        'welcomeGreeting="Hello, how can I help?"',
        'language="en-GB"',
        'ttsProvider="ElevenLabs"',
        'voice="test-voice"',
        'interruptible="true"',
    ):
        assert attribute in twiml
    handoff = json.dumps({"reason": "transfer", "to": "+15550123"})
    action = post("/twiml/action", urlencode({"HandoffData": handoff}), {"HandoffData": handoff})
    assert "<Dial>+15550123</Dial>" in action["body"]
    assert "<Hangup />" in post("/twiml/action", "", {})["body"]


def test_handler_configuration_keeps_secrets_as_templates(config_file: Path) -> None:
    text = config_file.read_text()
    assert TOKEN not in text and "${TWILIO_AUTH_TOKEN}" in text and "${BEDROCK_URL}" in text
    with pytest.raises(Exception, match="TWILIO_AUTH_TOKEN is not set"):
        HandlerConfig.from_json(json.loads(text), {"BEDROCK_URL": "http://x"})


async def test_handlers_never_load_pipecat_pydantic_or_pluggy(shim: ApiGatewayShim, lambda_env: dict[str, str]) -> None:
    """Every path of the relay and TwiML handlers, a tool call included, in fresh Lambda containers."""
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup("CA00000000000000000000000000000009")
    await caller.prompt("tell me something long")
    await caller.next_message()
    await caller.send({"type": "interrupt", "utteranceUntilInterrupt": "word0", "durationUntilInterruptMs": 200})
    for digit in "1#":
        await caller.send({"type": "dtmf", "digit": digit})
        await asyncio.sleep(0.2)  # a person typing
    await caller.reply()
    await caller.prompt("ok bye")  # the end_call tool runs
    assert await caller.reply() == "Goodbye then."
    assert (await caller.next_message())["type"] == "end"
    await caller.send({"type": "error", "description": "a test error"})
    await caller.ws.send("{not json")
    await caller.hang_up()
    await wait_until(lambda: shim.invoked("$disconnect"))

    webhook = LambdaFunction("voxpipe.serverless.twiml.handler", lambda_env | {"VOXPIPE_HTTP_URL": "https://h.test"})
    form = {"CallSid": "CA9", "HandoffData": '{"reason":"transfer","to":"+15550123"}'}
    heavy = []
    try:
        for path in ("/twiml", "/twiml/action"):
            url = "https://h.test" + path
            event = {
                "rawPath": path,
                "body": urlencode(form),
                "headers": {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, form)},
                "requestContext": {"domainName": "h.test"},
            }
            reply, _ = await webhook.invoke(event)
            assert reply["result"]["statusCode"] == 200, reply
            heavy += reply["heavy"]
    finally:
        await webhook.stop()
    routes = {invocation.route for invocation in shim.invocations}
    assert {"$connect", "$default", "$disconnect"} <= routes
    assert not heavy and not [(i.route, i.heavy) for i in shim.invocations if i.heavy]


def test_a_reply_turn_whose_invocation_died_is_forgotten_not_kept_forever() -> None:
    """A Lambda timeout never runs ``close_turn``: the next turn forgets the dead one, so later interrupts
    cut only the reply being spoken, not everything to ""."""
    from voxpipe.aws.conversations import Conversation
    from voxpipe.serverless.relay_turns import LIVE_SINCE, LIVE_TURN_MAX_MS, forget_stale_turns

    conversation = Conversation("CA1", live={"dead": None, "current": None})
    conversation.metadata[LIVE_SINCE] = {"dead": 1_000, "current": 1_000 + LIVE_TURN_MAX_MS}
    forget_stale_turns(conversation, 2_000 + LIVE_TURN_MAX_MS)
    assert conversation.live == {"current": None} and conversation.metadata[LIVE_SINCE] == {
        "current": 1_000 + LIVE_TURN_MAX_MS
    }
    conversation.live["legacy"] = None  # an entry written before start times were kept: forgotten too
    forget_stale_turns(conversation, 2_000 + LIVE_TURN_MAX_MS)
    assert list(conversation.live) == ["current"]
