"""No dead air and nothing kept in clear on the Lambda relay (issues 17 and 18), end to end.

The relay, TwiML and silence functions run in Lambda-like containers behind the API Gateway shim; DynamoDB and
the silence queue are moto's (server mode), the silence function is fed by an SQS event source like Lambda's;
the model is the Bedrock fake and Twilio's REST API a local fake. A simulated ConversationRelay client plays
Twilio:

- a slow tool gives the filler (``last: false``) at ``filler_after_secs``, then the answer; a quick one none;
- a silent caller gets the re-prompt when it is due (the reply's speaking time + ``reprompt_after_secs``),
  then the goodbye and ``end`` (``caller_silent``); a caller who answers the re-prompt carries on;
- a warm transfer hands off with the LLM's summary; the TwiML function holds the caller and rings the person,
  who hears the summary; rung out, the caller is back with the agent, the conversation intact;
- a caller who says a card number and an email, types a card on the keypad and gives a PIN to a sensitive
  tool leaves none of them in any DynamoDB item, any log line of the functions or any exported span;
- with ``OTEL_*`` set, every turn is a span of its call's trace (an OTLP/HTTP receiver on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree as ET

import pytest
import tool_functions
from twilio.request_validator import RequestValidator
from typer.testing import CliRunner

from tests.apigw_shim import (
    ApiGatewayShim,
    LambdaFunction,
    SqsEventSource,
    aws_environment,
    aws_service,
    moto_server,
    wait_until,
    write_handler_config,
)
from tests.fakes import Behaviour, FakeBedrock, ToolCall, Turn
from tests.fakes.script import count_tokens
from tests.simulators.server import RunningServer
from tests.test_calls_transfer import FakeTwilioCalls
from tests.test_serverless_relay import MODEL, TOKEN, RelayCaller, dynamodb, signature
from voxpipe.aws.conversations import ConversationTable, table_definition
from voxpipe.cli import app
from voxpipe.records.store import RecordStore
from voxpipe.serverless.relay_tracing import call_ids
from voxpipe.serverless.relay_turns import KEYPAD_ENTRY
from voxpipe.telephony import keypad

pytestmark = pytest.mark.timeout(180)

RELAY_URL = "wss://relay.voxpipe.test/prod"  # what the relay's signature check expects (test_serverless_relay's)
HTTP_URL = "https://hooks.voxpipe.test"
TABLE = "voxpipe-lambda-calls"
QUEUE = "voxpipe-lambda-silence"
FILLER = "One moment while I look that up."
SUMMARY = "The caller asked our opening hours and then asked for a person."
UNANSWERED = "Sorry, nobody could take your call. Let us carry on."
HOLD = "https://voice.example.com/hold.mp3"
REPROMPT, GOODBYE = "Are you still there?", "Goodbye for now."
REPROMPT_AFTER, HANGUP_AFTER = 3, 2
CARD, TYPED_CARD, EMAIL, PIN = "4111 1111 1111 1111", "5555555555554444", "jo.smith@example.com", "4821"
FUNCTIONS = tool_functions.__name__
DEPLOYMENT = f"""
name: lambda-calls
agent:
  instructions: You are a terse test agent.
  greeting: Hello, how can I help?
  tools:
    - kind: python
      name: look_up_booking
      parameters: {{type: object, properties: {{secs: {{type: number}}}}, required: [secs]}}
      options: {{function: "{FUNCTIONS}:look_up_booking"}}
      filler: "{FILLER}"
      filler_after_secs: 1.0
    - kind: python
      name: check_pin
      sensitive: true
      parameters: {{type: object, properties: {{pin: {{type: string}}}}, required: [pin]}}
      options: {{function: "{FUNCTIONS}:check_pin"}}
    - kind: transfer
      options:
        {{to: "+15557770000", mode: warm, ring_timeout_secs: 5, hold_audio: "{HOLD}", unanswered: "{UNANSWERED}"}}
stt: {{provider: testkit_stt}}
tts: {{provider: testkit_tts}}
llm:
  provider: bedrock
  model: {MODEL}
  options: {{region: us-east-1, endpoint_url: "${{BEDROCK_URL}}"}}
transport:
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}", account_sid: AC0123456789abcdef0123456789abcdef}}
  conversation_relay: {{language: en-GB}}
sessions: {{store: dynamodb, table: {TABLE}, ttl_secs: 3600}}
silence:
  reprompt_after_secs: {REPROMPT_AFTER}
  reprompts: ["{REPROMPT}"]
  hangup_after_secs: {HANGUP_AFTER}
  goodbye: "{GOODBYE}"
redact: {{entities: [card_number, ssn, email]}}
"""


def reply_to(turn: Turn) -> Any:
    """The model: slow and quick look-ups, a PIN check, a transfer, a summary; anything else is echoed."""
    results = " ".join(result.output for result in turn.tool_results)
    text = turn.last_user_text or ""
    if "Summarise this call" in text:
        return SUMMARY
    if '"took_secs": 0.2' in results:
        return "Quick answer: confirmed."
    if "booking" in results:
        return "Your booking is confirmed."
    if "verified" in results:
        return "Your PIN is accepted."
    if "transfer" in results:
        return "Transferring you now."
    for word, call in (
        ("booking", ToolCall("look_up_booking", {"secs": 3})),
        ("quick", ToolCall("look_up_booking", {"secs": 0.2})),
        ("human", ToolCall("transfer", {"reason": "asked"})),
        ("pin", ToolCall("check_pin", {"pin": PIN})),
    ):
        if word in text:
            return call
    return f"You said {text}."


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[str, str]]:
    """moto's endpoint and the silence queue's URL."""
    with moto_server() as endpoint:
        dynamodb(endpoint).create_table(**table_definition(TABLE))
        yield endpoint, aws_service("sqs", endpoint).create_queue(QueueName=QUEUE)["QueueUrl"]


@pytest.fixture(scope="module")
def twilio_rest() -> Iterator[tuple[FakeTwilioCalls, str]]:
    rest = FakeTwilioCalls()
    with RunningServer(rest.app) as server:
        yield rest, server.url


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps each ``POST /v1/traces`` body (protobuf) it is sent."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def spans(self) -> list[Any]:
        """Every span received, decoded."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            out += [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        return out


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, aws: tuple[str, str], twilio_rest: Any, otlp: OtlpReceiver
) -> Iterator[dict[str, str]]:
    endpoint, queue = aws
    with FakeBedrock(Behaviour(per_chunk_delay_s=0.01), replies=reply_to, region="us-east-1") as bedrock:
        yield {
            "VOXPIPE_HANDLER_CONFIG": str(write_handler_config(tmp_path_factory.mktemp("calls"), DEPLOYMENT)),
            "VOXPIPE_TABLE": TABLE,
            "VOXPIPE_RELAY_URL": RELAY_URL,
            "VOXPIPE_HTTP_URL": HTTP_URL,
            "VOXPIPE_SILENCE_QUEUE_URL": queue,
            "VOXPIPE_TWILIO_API_URL": twilio_rest[1],
            **aws_environment(dynamodb=endpoint, sqs=endpoint),
            "BEDROCK_URL": bedrock.url,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,  # traces of every turn
            "OTEL_SERVICE_NAME": "voxpipe-relay-test",
        }


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every log line the functions wrote (their containers' stderr)."""
    return tmp_path_factory.mktemp("logs") / "functions.log"


@pytest.fixture(scope="module")
def shim(env: dict[str, str], aws: tuple[str, str], logs: Path) -> Iterator[ApiGatewayShim]:
    relay = LambdaFunction("voxpipe.serverless.relay.handler", env, log=logs)
    shim = ApiGatewayShim({"$connect": relay, "$default": relay, "$disconnect": relay})
    with shim:
        relay.env["VOXPIPE_CONNECTIONS_URL"] = shim.endpoint
        silence = LambdaFunction("voxpipe.serverless.silence.handler", relay.env, log=logs)
        with SqsEventSource(aws_service("sqs", aws[0]), aws[1], silence) as checks:
            yield shim
        assert all("error" not in reply and not reply["heavy"] for reply in checks.invocations), checks.invocations
    assert not shim.errors, shim.errors
    assert not [(i.route, i.heavy) for i in shim.invocations if i.heavy]


def conversation(aws: tuple[str, str], call_sid: str) -> Any:
    return ConversationTable(TABLE, 3600, client=dynamodb(aws[0])).get(call_sid)


async def call(shim: ApiGatewayShim, aws: tuple[str, str], call_sid: str) -> RelayCaller:
    caller = await RelayCaller.dial(shim.client_url, signature())
    await caller.setup(call_sid)
    await wait_until(lambda: conversation(aws, call_sid))
    return caller


async def text(caller: RelayCaller, timeout: float = 20) -> tuple[dict[str, Any], float]:
    """The next message (a ``text``) and when it arrived (``time.monotonic()``)."""
    message = await caller.next_message(timeout)
    assert message["type"] == "text", message
    return message, time.monotonic()


# ------------------------------------------------------------------------------------------------ fillers


async def test_slow_tool_gets_its_filler_then_the_answer(
    shim: ApiGatewayShim, aws: tuple[str, str], otlp: OtlpReceiver
) -> None:
    """The filler, then the answer; the turns are traced (one trace per call, the tool and the LLM requests
    inside the turn, the filler an event of it)."""
    caller = await call(shim, aws, "CA00000000000000000000000000000f01")
    prompted = time.monotonic()
    await caller.prompt("check my booking")
    filler, filler_at = await text(caller)
    assert filler == {"type": "text", "token": FILLER + " ", "last": False}  # the answer follows in one utterance
    assert filler_at - prompted > 1.0  # the LLM's first round, then 1 s of the tool (and maybe a cold start)
    first, answer_at = await text(caller)  # the answer's first token
    assert answer_at - prompted > 3.0 and answer_at - filler_at > 1.5  # after the 3 s tool answered
    assert first["token"] + ("" if first["last"] else await caller.reply()) == "Your booking is confirmed."
    await caller.prompt("a quick one")
    assert await caller.reply() == "Quick answer: confirmed."  # 0.2 s: no filler
    await caller.hang_up()
    stored = conversation(aws, "CA00000000000000000000000000000f01")
    (event,) = stored.metadata["events"]
    assert event["kind"] == "filler" and event["tool"] == "look_up_booking" and 0.95 < event["delay_secs"] < 1.3
    messages = stored.messages
    trace_id, call_span = call_ids("CA00000000000000000000000000000f01")

    def of_call() -> list[Any]:
        return [span for span in otlp.spans() if int.from_bytes(span.trace_id, "big") == trace_id]

    await wait_until(lambda: len([span for span in of_call() if span.name == "turn"]) == 2)  # exported after replying
    spans = of_call()
    turns = [span for span in spans if span.name == "turn"]
    assert len(turns) == 2 and {int.from_bytes(t.parent_span_id, "big") for t in turns} == {call_span}
    slow = next(t for t in turns if t.events)
    assert [e.name for e in slow.events] == ["filler"]
    children = sorted((s for s in spans if s.parent_span_id == slow.span_id), key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in children] == [f"chat {MODEL}", "execute_tool look_up_booking", f"chat {MODEL}"]
    attributes = {a.key: a.value.string_value for a in children[0].attributes}
    assert attributes["gen_ai.system"] == "aws.bedrock" and attributes["gen_ai.request.model"] == MODEL
    quick = next(t for t in turns if not t.events)  # (its 0.2 s look-up needs no filler)
    quick_chats = sorted(
        (s for s in spans if s.parent_span_id == quick.span_id and s.name.startswith("chat")),
        key=lambda s: s.start_time_unix_nano,
    )
    for chat in (children[0], children[2], *quick_chats):  # the tokens Bedrock's metadata event reported
        tokens = {a.key: a.value.int_value for a in chat.attributes if a.key.startswith("gen_ai.usage.")}
        assert tokens["gen_ai.usage.input_tokens"] > tokens["gen_ai.usage.output_tokens"] > 0
    answer_tokens = {a.key: a.value.int_value for a in quick_chats[-1].attributes}
    assert answer_tokens["gen_ai.usage.output_tokens"] == count_tokens("Quick answer: confirmed.")
    assert 2.9 < (children[1].end_time_unix_nano - children[1].start_time_unix_nano) / 1e9 < 3.5  # the 3 s tool
    called = [m for m in messages if m.get("tool_calls")]
    assert called[0]["content"] == FILLER and not called[1]["content"]  # the filler is the bot's words
    assert [m["content"] for m in messages if m["role"] == "assistant" and not m.get("tool_calls")][-2:] == [
        "Your booking is confirmed.",
        "Quick answer: confirmed.",
    ]


# ------------------------------------------------------------------------------------------------ records


async def test_ended_relay_calls_become_call_records_with_turns_usage_and_cost(
    shim: ApiGatewayShim, aws: tuple[str, str], env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``voxpipe import-relay`` turns the measures the relay kept in DynamoDB into priced CallRecords."""
    call_sid = "CA00000000000000000000000000000f07"
    caller = await call(shim, aws, call_sid)
    prompted = time.time()
    await caller.prompt("a quick one")
    assert await caller.reply() == "Quick answer: confirmed."
    answered = time.time()
    await caller.hang_up()
    await wait_until(lambda: "ended_ms" in conversation(aws, call_sid).metadata)  # ($disconnect ran)
    stored = conversation(aws, call_sid).metadata
    requests = stored["usage"]  # the turn's two LLM requests (the look-up, then the answer)
    assert len(requests) == 2 and all(r["provider"] == "bedrock" and r["model"] == MODEL for r in requests)

    for name, value in env.items():  # the deployment's ${...} and the table's endpoint, as an operator has them
        monkeypatch.setenv(name, value)
    records = tmp_path / "calls.db"
    deployment_file = Path(env["VOXPIPE_HANDLER_CONFIG"]).with_name("deployment.yaml")
    command = ["import-relay", str(deployment_file), "--table", TABLE, "--records", str(records)]
    imported = CliRunner().invoke(app, command)
    assert imported.exit_code == 0, imported.output
    assert "ended relay calls of lambda-calls recorded in" in imported.output
    record = RecordStore(records).get(call_sid)
    assert record is not None and record.deployment == "lambda-calls" and record.caller_id == "+15550100"
    (turn,) = record.turns
    assert (turn.heard, turn.reply) == ("a quick one", "Quick answer: confirmed.")
    assert turn.llm_first_token_ms is not None and turn.reply_complete_ms is not None
    assert 0 < turn.llm_first_token_ms <= turn.reply_complete_ms < (answered - prompted) * 1000 + 1000
    assert 0 < record.duration_secs < 60 and abs(record.started_at.timestamp() - prompted) < 30
    (usage,) = record.usage
    assert (usage.role, usage.provider, usage.model) == ("llm", "bedrock", MODEL)
    assert usage.text_input_tokens + usage.cached_text_input_tokens == sum(r["input"] for r in requests)
    assert usage.text_output_tokens == sum(r["output"] for r in requests) > 0
    lite = 0.06 * usage.text_input_tokens + 0.015 * usage.cached_text_input_tokens + 0.24 * usage.text_output_tokens
    assert usage.cost_usd == pytest.approx(lite / 1e6) and usage.cost_usd > 0  # Nova Lite's list prices
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and len([r for r in RecordStore(records).list() if r.call_id == call_sid]) == 1
    wrong = CliRunner().invoke(app, [*command[:3], "no-such-table", *command[4:]])
    assert wrong.exit_code == 1 and "cannot read the relay's table no-such-table" in wrong.output
    assert "Traceback" not in wrong.output


# ------------------------------------------------------------------------------------------------ silence


async def test_silent_caller_is_reprompted_then_hung_up_on(shim: ApiGatewayShim, aws: tuple[str, str]) -> None:
    call_sid = "CA00000000000000000000000000000501"
    caller = await call(shim, aws, call_sid)
    await caller.prompt("hello")
    assert await caller.reply() == "You said hello."  # 3 words: ~1.2 s to say
    replied = time.monotonic()
    reprompt, reprompted = await text(caller)
    assert reprompt == {"type": "text", "token": REPROMPT, "last": True}
    assert abs(reprompted - replied - (3 / 2.5 + REPROMPT_AFTER)) < 0.5
    goodbye, said_goodbye = await text(caller)
    assert goodbye == {"type": "text", "token": GOODBYE, "last": True}
    assert abs(said_goodbye - reprompted - (4 / 2.5 + HANGUP_AFTER)) < 0.5
    end = await caller.next_message()
    assert end["type"] == "end" and json.loads(end["handoffData"]) == {"reason": "caller_silent"}
    await caller.hang_up()
    stored = conversation(aws, call_sid)
    assert [m["content"] for m in stored.messages][-3:] == ["You said hello.", REPROMPT, GOODBYE]
    assert stored.metadata["end_reason"] == "caller_silent"
    assert [e["kind"] for e in stored.metadata["events"]] == ["reprompt", "silence_hangup"]


async def test_caller_who_answers_the_reprompt_carries_on(shim: ApiGatewayShim, aws: tuple[str, str]) -> None:
    caller = await call(shim, aws, "CA00000000000000000000000000000502")
    await caller.prompt("hello")
    await caller.reply()
    assert (await text(caller))[0]["token"] == REPROMPT
    await caller.prompt("yes I am here")
    assert await caller.reply() == "You said yes I am here."
    replied = time.monotonic()
    again, at = await text(caller)  # the count starts again: a re-prompt, not the goodbye
    assert again["token"] == REPROMPT and abs(at - replied - (5 / 2.5 + REPROMPT_AFTER)) < 0.5
    await caller.hang_up()
    said = [m["content"] for m in conversation(aws, "CA00000000000000000000000000000502").messages]
    assert said[-4:] == [REPROMPT, "yes I am here", "You said yes I am here.", REPROMPT]


# ------------------------------------------------------------------------------------------------ warm transfer


def twiml_of(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 — the TwiML our own function wrote, in a test


async def twilio_posts(function: LambdaFunction, url: str, form: dict[str, str], token: str = TOKEN) -> dict[str, Any]:
    """Twilio's POST of ``form`` to ``url`` on the TwiML function, signed with the account's auth ``token``."""
    parts = urlsplit(url)
    event = {
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "body": urlencode(form),
        "headers": {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, form)},
        "requestContext": {"domainName": "hooks.voxpipe.test", "http": {"method": "POST"}},
    }
    reply, _ = await function.invoke(event)
    assert "result" in reply and not reply["heavy"], reply
    return reply["result"]


async def test_warm_transfer_briefs_the_person_and_brings_back_a_caller_nobody_took(
    shim: ApiGatewayShim, aws: tuple[str, str], env: dict[str, str], twilio_rest: Any
) -> None:
    rest, call_sid = twilio_rest[0], "CA000000000000000000000000000007a1"
    caller = await call(shim, aws, call_sid)
    await caller.prompt("what are your hours")
    await caller.reply()
    await caller.prompt("a human please")
    assert await caller.reply() == "Transferring you now."
    end = await caller.next_message()
    await caller.hang_up()
    handoff = json.loads(end["handoffData"])
    assert (handoff["reason"], handoff["mode"], handoff["to"]) == ("transfer", "warm", "+15557770000")
    assert (handoff["summary"], handoff["ring_timeout_secs"], handoff["hold_audio"]) == (SUMMARY, 5, HOLD)

    webhook = LambdaFunction("voxpipe.serverless.twiml.handler", env)
    try:
        form = {"CallSid": call_sid, "To": "+15559990000", "HandoffData": end["handoffData"]}
        hold = await twilio_posts(webhook, f"{HTTP_URL}/twiml/action", form)
        room = twiml_of(hold["body"]).find("Dial/Conference")
        assert room is not None and room.get("waitUrl") == HOLD and room.text == f"voxpipe-{call_sid}"
        (dial,) = rest.created
        leg = twiml_of(dial["Twiml"][0])
        assert [verb.tag for verb in leg] == ["Say", "Dial"] and leg[0].text == SUMMARY  # the summary first
        assert leg.find("Dial/Conference").text == f"voxpipe-{call_sid}"
        assert (dial["To"], dial["From"], dial["Timeout"]) == (["+15557770000"], ["+15559990000"], ["5"])
        status_url = dial["StatusCallback"][0]
        assert status_url.startswith(f"{HTTP_URL}/twiml/transfer-status?")
        assert dict(parse_qsl(urlsplit(status_url).query))["call"] == call_sid

        updates = len(rest.updates)
        answered = await twilio_posts(webhook, status_url, {"CallSid": "CAleg", "CallStatus": "in-progress"})
        assert answered["statusCode"] == 204 and len(rest.updates) == updates  # answered: nothing more to do
        await asyncio.sleep(0.3)  # some ring time
        rung_out = await twilio_posts(webhook, status_url, {"CallSid": "CAleg", "CallStatus": "no-answer"})
        assert rung_out["statusCode"] == 204
    finally:
        await webhook.stop()
    (updated, back) = rest.updates[-1]
    relay = twiml_of(back["Twiml"]).find("Connect/ConversationRelay")
    assert updated == call_sid and relay is not None and relay.get("welcomeGreeting") is None
    parameters = {p.get("name"): p.get("value") for p in relay}
    assert parameters["voxpipe_transfer"] == "no-answer" and parameters["voxpipe_say"] == UNANSWERED
    assert float(parameters["voxpipe_ring_secs"]) >= 0.3 and parameters["voxpipe_call_token"]

    # Twilio opens a new session of the same call with exactly those parameters: the agent is back.
    returned = await RelayCaller.dial(shim.client_url, signature())
    await returned.send({"type": "setup", "sessionId": "VXback", "callSid": call_sid, "customParameters": parameters})
    assert await returned.reply() == UNANSWERED
    await returned.prompt("what are your hours")
    assert await returned.reply() == "You said what are your hours."
    await returned.hang_up()
    said = [m["content"] for m in conversation(aws, call_sid).messages if m["role"] != "tool" and m["content"]]
    assert said == [
        "Hello, how can I help?",
        "what are your hours",
        "You said what are your hours.",
        "a human please",
        "Transferring you now.",
        UNANSWERED,
        "what are your hours",
        "You said what are your hours.",
    ]


# ------------------------------------------------------------------------------------------------ redaction


def clear_values(text: str) -> list[str]:
    """The personal values of the redaction call found in ``text`` (each only as a token of its own)."""
    digits = [CARD, CARD.replace(" ", ""), TYPED_CARD, PIN]
    found = [value for value in digits if re.search(rf"(?<![0-9A-Za-z]){value}(?![0-9A-Za-z])", text)]
    return found + ([EMAIL] if EMAIL in text else [])


async def test_card_email_and_pin_leave_no_trace_in_dynamodb_logs_or_traces(
    shim: ApiGatewayShim, aws: tuple[str, str], logs: Path, otlp: OtlpReceiver
) -> None:
    call_sid = "CA000000000000000000000000000018a1"
    caller = await call(shim, aws, call_sid)
    await caller.prompt(f"my card is {CARD} and my email is {EMAIL}")
    assert CARD in await caller.reply()  # the model had the words; the caller heard them back
    for group in re.findall("....", TYPED_CARD):  # four entries, each ended by #: the card is found across them
        for digit in group + "#":
            await caller.send({"type": "dtmf", "digit": digit})
            await asyncio.sleep(0.1)
        # Keys are invocations of their own: on a loaded machine an entry may split further. Each group is
        # answered whole before the next is typed, so the pieces are stored in the order they were typed.
        await asyncio.sleep(keypad.PAUSE_SECS + 0.5)
        await wait_until(lambda: not (c := conversation(aws, call_sid)).live and KEYPAD_ENTRY not in c.metadata)
        with contextlib.suppress(TimeoutError):
            while True:
                await caller.next_message(timeout=1.0)
    typed = [m["content"] for m in conversation(aws, call_sid).messages if "keypad" in str(m.get("content"))]
    entries = [entry for entry in typed if entry.startswith("(The caller")]
    assert entries and not [entry for entry in entries if re.search("[0-9]", entry)]  # every piece masked
    await caller.prompt("check my pin please")
    assert await caller.reply() == "Your PIN is accepted."
    await caller.send({"type": "mystery", "note": f"{CARD} {EMAIL}"})  # logged as ignored: masked in the log
    await caller.prompt(f"did you keep {PIN}")  # after the tool: the PIN is a secret of the call
    await caller.reply()
    await caller.hang_up()
    await wait_until(lambda: shim.invoked("$disconnect"))
    await asyncio.sleep(0.5)

    items = dynamodb(aws[0]).scan(TableName=TABLE)["Items"]
    stored = json.dumps(items)
    assert call_sid in stored and clear_values(stored) == []
    messages = conversation(aws, call_sid).messages
    assert "[card_number]" in json.dumps(messages) and "[email]" in json.dumps(messages)
    assert any("[sensitive]" in json.dumps(m) for m in messages if m.get("tool_calls"))
    log = logs.read_text(encoding="utf-8", errors="replace")
    assert "mystery" in log and "[card_number]" in log  # the line was written, masked
    assert clear_values(log) == []
    exported = b"".join(otlp.bodies).decode("utf-8", errors="replace")
    assert "[card_number]" in exported and clear_values(exported) == []  # the turns were traced, masked


def test_a_check_due_beyond_sqs_longest_delay_is_sent_on(
    aws: tuple[str, str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS delays a message by at most 900 s: a check due later reaches the function early and is sent on,
    delayed again, without touching the call."""
    from voxpipe.serverless import HandlerConfig
    from voxpipe.serverless.silence import Check, fire

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.setenv(name, env[name])
    config = HandlerConfig.from_json(json.loads(Path(env["VOXPIPE_HANDLER_CONFIG"]).read_text()), env)
    due = int((time.time() + 3600) * 1000)
    fire(config, Check("CA-later", "conn-later", "http://127.0.0.1:9/prod", "check-later", due))
    sqs = aws_service("sqs", aws[0])
    attributes = sqs.get_queue_attributes(QueueUrl=aws[1], AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert int(attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"]) >= 1
    assert conversation(aws, "CA-later") is None  # nothing was said or stored
