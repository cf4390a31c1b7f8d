"""The audio bridge end to end: a browser or Twilio client on the API Gateway WebSocket shim, ``worker.handler``
in Lambda-like containers queuing its messages in SQS (moto server, FIFO), and ``BridgeWorker`` running the
deployment's pipeline (voxpipe-testkit providers) and posting audio back through the shim's ``@connections``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import websockets
from twilio.request_validator import RequestValidator
from voxpipe_testkit.audio import tone

from tests.apigw_shim import (
    FRAME_LIMIT,
    ApiGatewayShim,
    LambdaFunction,
    aws_environment,
    moto_server,
    serverless_registry,
    wait_until,
    write_handler_config,
)
from tests.fakes import Behaviour, FakeOpenAI
from tests.simulators import webhook_parameters
from tests.simulators.server import RunningServer
from tests.test_twilio_media import FakeTwilioRest
from voxpipe.audio import g711
from voxpipe.aws.conversations import table_definition
from voxpipe.config.loader import parse_deployment
from voxpipe.records.model import CallRecord
from voxpipe.records.spool import RecordSpool, spool_path
from voxpipe.records.store import RecordStore
from voxpipe.security.browser_access import PAGE_PURPOSE
from voxpipe.security.tokens import SECRET_VARIABLE, Signer
from voxpipe.serverless.apigw_transport import LinkSettings
from voxpipe.serverless.worker import BridgeSettings, BridgeWorker
from voxpipe.telephony import twiml
from voxpipe.transports.twilio_account import TransferRoute, TwilioClientFactory

pytestmark = pytest.mark.timeout(120)

TABLE = "voxpipe-bridge-test"
TOKEN = "twilio-bridge-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
BRIDGE_URL = "wss://bridge.voxpipe.test/prod"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
ORIGIN = "https://app.voxpipe.test"
OTHER_ORIGIN = "https://other.voxpipe.test"  # allowed too: its tokens open nothing for ORIGIN's pages
CASCADE = f"""
name: bridge-test
agent:
  instructions: You are a scripted test agent.
  greeting: Hi there.
vad: {{provider: testkit_vad}}
turn: {{strategy: silence, timeout_secs: 0.2}}
stt: {{provider: testkit_stt, options: {{transcripts: ["what are your hours"]}}}}
llm: {{provider: testkit_llm, options: {{replies: [{{when: hours, say: "We are open from nine to five every day."}}]}}}}
tts: {{provider: testkit_tts, options: {{secs_per_char: 0.02}}}}
transport:
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
  browser: {{allowed_origins: ["{ORIGIN}", "{OTHER_ORIGIN}"], session_token_secs: 300}}
sessions: {{store: memory, ttl_secs: 600}}
"""
REALTIME = """
name: bridge-test
mode: realtime
agent:
  instructions: You are a scripted test agent.
vad: {provider: testkit_vad, start_secs: 0.1, stop_secs: 0.3}
realtime:
  provider: testkit_realtime
  options: {transcripts: ["is it open"], replies: [{when: open, say: "Yes, we are open."}]}
sessions: {store: memory}
"""


def aws_client(service: str, endpoint: str) -> Any:
    return botocore.session.get_session().create_client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",  # noqa: S106 — a made-up credential for a local fake; nothing real
    )


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto with the table and the FIFO queue, and the environment the Lambda and the worker see."""
    with moto_server() as endpoint:
        aws_client("dynamodb", endpoint).create_table(**table_definition(TABLE))
        queue = aws_client("sqs", endpoint).create_queue(
            QueueName="voxpipe-bridge-test.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"]
        config = write_handler_config(tmp_path_factory.mktemp("bridge"), CASCADE)
        yield {
            "VOXPIPE_HANDLER_CONFIG": str(config),
            "VOXPIPE_TABLE": TABLE,
            "VOXPIPE_QUEUE_URL": queue,
            "VOXPIPE_BRIDGE_URL": BRIDGE_URL,
            **aws_environment(dynamodb=endpoint, sqs=endpoint),
            "TWILIO_AUTH_TOKEN": TOKEN,
            SECRET_VARIABLE: os.environ[SECRET_VARIABLE],  # the bridge function signs and checks page tokens
        }


@pytest.fixture
def environ(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    return aws


Bridge = Callable[..., Any]


@pytest.fixture
def bridge(environ: dict[str, str], tmp_path: Path) -> Bridge:
    """``async with bridge(deployment_yaml, settings, idle_timeout_secs=..., disconnect=True) as (shim, worker)``."""

    @asynccontextmanager
    async def run(
        yaml: str,
        settings: BridgeSettings,
        idle_timeout_secs: float = 600,
        disconnect: bool = True,
        twilio_client: TwilioClientFactory | None = None,
        transfer_route: TransferRoute | None = None,
        start: asyncio.Event | None = None,
    ) -> AsyncIterator[tuple[ApiGatewayShim, BridgeWorker]]:
        """``start``: the worker starts once it is set (by default at once, and ``$connect`` lets clients in only
        once it has written its status)."""
        function = LambdaFunction("voxpipe.serverless.worker.handler", environ)
        routes = {"$connect": function, "$default": function} | ({"$disconnect": function} if disconnect else {})
        shim = ApiGatewayShim(routes, idle_timeout_secs=idle_timeout_secs)
        deployment = parse_deployment(yaml, "deployment.yaml", environ, serverless_registry())
        records = RecordStore(tmp_path / "calls.db")
        worker = BridgeWorker(
            deployment,
            environ["VOXPIPE_QUEUE_URL"],
            TABLE,
            settings,
            records=records,
            twilio_client=twilio_client,
            transfer_route=transfer_route,
        )
        stop = asyncio.Event()

        async def serve() -> None:
            if start is not None:
                await start.wait()
            await worker.run(stop)

        async with shim:
            function.env["VOXPIPE_CONNECTIONS_URL"] = shim.endpoint
            running = asyncio.ensure_future(serve())
            try:
                if start is None:
                    await asyncio.wait_for(worker.status.published.wait(), 10)
                yield shim, worker
            finally:
                stop.set()
                if start is not None:
                    start.set()
                await asyncio.wait_for(running, 30)
        assert not shim.errors, shim.errors
        assert not [(i.route, i.heavy) for i in shim.invocations if i.heavy]  # the Lambda stays light

    return run


FAST = BridgeSettings(poll_wait_secs=1, session_check_secs=60)


class Client:
    """A media-stream client (the browser page, or Twilio) on the shim: numbered events out, bot audio in.

    Once it reads (``read_in_background``; a page or a Twilio call from the start, else from the first ``stream``
    or ``collect`` on) it plays the bot's audio as the
    page and Twilio do: each ``mark`` is echoed once the audio before it has played (at real time), and a
    ``clear`` echoes the pending ones at once."""

    def __init__(self, ws: Any, stream_sid: str = "", payload_bytes_per_sec: int = 32000):
        self.ws = ws
        self.sequence = 0
        self.received: list[dict[str, Any]] = []
        self.stream_sid = stream_sid
        self.payload_bytes_per_sec = payload_bytes_per_sec  # the page's PCM16 at 16 kHz; Twilio's mu-law: 8000
        self._played_until = 0.0  # when the audio received so far will have played (time.monotonic())
        self._echoes: dict[str, asyncio.TimerHandle] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, headers: dict[str, str], subprotocols: list[str] | None = None) -> Client:
        socket = await websockets.connect(
            url, additional_headers=headers, subprotocols=subprotocols, open_timeout=20, max_size=None
        )
        return cls(socket, payload_bytes_per_sec=8000 if "X-Twilio-Signature" in headers else 32000)

    @classmethod
    async def page(cls, shim: ApiGatewayShim, issued: dict[str, Any] | None = None) -> Client:
        """A browser page of the allowed origin, as ``app.js`` connects: its token first (or ``issued``, the
        answer of ``/bridge/token`` it kept), then the socket."""
        issued = issued or json.loads((await shim.page_token(ORIGIN))["body"])
        client = await cls.connect(shim.client_url, {"Origin": ORIGIN}, ["voxpipe", f"token.{issued['token']}"])
        assert client.ws.subprotocol == "voxpipe"
        client.stream_sid = issued["session_id"]  # the session (and stream) id is the token's
        client.read_in_background()  # a page plays what it is sent from the start
        return client

    def page_start(self) -> dict[str, Any]:
        return self.event("start", start={"sampleRate": 16000})

    def event(self, kind: str, **body: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"event": kind, "sequenceNumber": str(self.sequence), "streamSid": self.stream_sid, **body}

    async def send(self, *events: dict[str, Any]) -> None:
        for event in events:
            await self.ws.send(json.dumps(event))

    async def stream(self, events: list[dict[str, Any]], every_secs: float = 0.1) -> None:
        """Send events at the pace of the audio they carry, as a live client does."""
        self.read_in_background()
        for event in events:
            await self.send(event)
            await asyncio.sleep(every_secs)

    def media(self, payload: bytes) -> dict[str, Any]:
        return self.event("media", media={"track": "inbound", "payload": base64.b64encode(payload).decode()})

    async def collect(self, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 20) -> None:
        """Wait until ``until(received)``; raises what ended the reading (``ConnectionClosed``...) first."""
        reader = self.read_in_background()
        deadline = time.monotonic() + timeout
        while not until(self.received):
            if reader.done():
                reader.result()
            assert time.monotonic() < deadline, f"not received in time; got {[m['event'] for m in self.received]}"
            await asyncio.sleep(0.01)

    def read_in_background(self) -> asyncio.Task[None]:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        return self._reader

    async def _read(self) -> None:
        while True:
            message = await self.ws.recv()  # ConnectionClosed once closed
            assert len(message) <= FRAME_LIMIT, len(message)
            self.received.append(json.loads(message))
            self._play(self.received[-1])

    def _play(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        if event["event"] == "media":
            payload = base64.b64decode(event["media"]["payload"])
            self._played_until = max(now, self._played_until) + len(payload) / self.payload_bytes_per_sec
        elif event["event"] == "mark" and event["mark"]["name"] != "keepalive":
            name = event["mark"]["name"]
            self._echoes[name] = asyncio.get_running_loop().call_later(
                max(0.0, self._played_until - now), self._echo, name
            )
        elif event["event"] == "clear":
            self._played_until = now
            for name, echo in list(self._echoes.items()):
                echo.cancel()
                self._echo(name)

    def _echo(self, name: str) -> None:
        self._echoes.pop(name, None)
        task = asyncio.ensure_future(self.send(self.event("mark", mark={"name": name})))
        task.add_done_callback(lambda done: done.exception())  # a closed socket: nobody listens any more

    def audio(self, decode: Callable[[bytes], bytes] = bytes) -> bytes:
        return b"".join(decode(base64.b64decode(m["media"]["payload"])) for m in self.received if m["event"] == "media")


def speech_then_silence(rate: int, speech_secs: float = 0.6, silence_secs: float = 0.7) -> bytes:
    """A caller's turn: pipecat's VAD measures volume over 400 ms, so the line is silent before the speech too."""
    return b"\0\0" * int(0.5 * rate) + tone(speech_secs, rate, 300.0, 0.3) + b"\0\0" * int(silence_secs * rate)


def chunks(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def started(worker: BridgeWorker) -> None:
    """Wait until the worker has started the call (a cold Lambda container can hold ``start`` back a while)."""
    await wait_until(lambda: any(call.hosted is not None for call in worker.calls.values()))


# ------------------------------------------------------------------------------------------------ calls


async def test_browser_call_through_the_queue_with_aggregated_audio(bridge: Bridge) -> None:
    async with bridge(CASCADE, FAST) as (shim, worker):
        with pytest.raises(websockets.InvalidStatus):  # an allowed origin with no token (see test_bridge_tokens.py)
            await Client.connect(shim.client_url, {"Origin": ORIGIN})
        client = await Client.page(shim)
        session_id = client.stream_sid
        await client.send(client.page_start())
        await started(worker)
        await client.stream([client.media(c) for c in chunks(speech_then_silence(16000), 3200)])  # 100 ms each
        reply_secs = len("Hi there.We are open from nine to five every day.") * 0.02
        answer = {"event": "transcript", "role": "assistant", "text": "We are open from nine to five every day."}
        await client.collect(
            lambda got: len(client.audio()) >= 0.95 * reply_secs * 16000 * 2 and answer in got  # played, then told
        )
        # The browser dialect's events, as on `voxpipe serve` (issue 13): the transcript and the reply's latency.
        assert {"event": "transcript", "role": "user", "text": "what are your hours"} in client.received
        assert [m for m in client.received if m["event"] == "latency"][-1]["ms"] > 0
        deadline = time.monotonic() + 10
        while (session := await worker.host.store.get(session_id)) is None or session.messages[-1][
            "role"
        ] != "assistant":
            assert time.monotonic() < deadline, "the conversation was not stored"
            await asyncio.sleep(0.05)
        assert session.messages[-2:] == [
            {"role": "user", "content": "what are your hours"},
            {"role": "assistant", "content": "We are open from nine to five every day."},
        ]
        media = [m for m in client.received if m["event"] == "media"]
        marks = [m for m in client.received if m["event"] == "mark"]
        # Aggregated: ~200 ms per message instead of pipecat's 20 ms chunks (the tail of each reply is shorter).
        assert len(media) <= reply_secs / 0.2 + 4 and len(marks) == len(media)
        assert all(m["streamSid"] == session_id for m in media)
        connection_id = next(iter(worker.calls))
        assert worker.calls[connection_id].transport.link.posts == len(client.received)
        await client.ws.close()
        await wait_until(lambda: not worker.calls)  # $disconnect -> SQS -> the call ends
        # Measured and recorded on the call host, as a served call is.
        records = worker.host.bookkeeping.records
        [record] = await wait_until(records.list)
        assert record.call_id == session_id and [t.heard for t in record.turns] == ["what are your hours"]
        assert record.turns[0].voice_to_voice_ms is not None and record.cost_usd > 0


async def test_twilio_realtime_call_with_out_of_order_delivery(bridge: Bridge) -> None:
    async with bridge(REALTIME, FAST) as (shim, worker):
        signature = RequestValidator(TOKEN).compute_signature(BRIDGE_URL, {})
        with pytest.raises(websockets.InvalidStatus):
            await Client.connect(shim.client_url, {"X-Twilio-Signature": "forged"})
        client = await Client.connect(shim.client_url, {"X-Twilio-Signature": signature})
        client.stream_sid = "MZ0000000000000000000000000000test"
        start = {
            "callSid": "CA00000000000000000000000000000099",
            "streamSid": client.stream_sid,
            "tracks": ["inbound"],
            "customParameters": webhook_parameters("twilio", "CA00000000000000000000000000000099"),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await client.send(client.event("connected"), client.event("start", start=start))
        await started(worker)
        audio = [client.media(g711.encode(c)) for c in chunks(speech_then_silence(8000), 1600)]  # 100 ms each
        audio[2], audio[3] = audio[3], audio[2]  # delivered out of order: the worker restores the order
        await client.stream(audio)
        expected = len("Yes, we are open.") * 0.02 * 8000 * 2
        await client.collect(lambda got: len(client.audio(g711.decode)) >= 0.95 * expected)
        call = next(iter(worker.calls.values()))
        assert call.hosted.pipeline.services["realtime"].transcripts == ["is it open"]
        await client.ws.close()
        await wait_until(lambda: not worker.calls)
        # Issue 11: the same start (its binding token spent, in the table) replayed on a new connection: closed.
        replay = await Client.connect(shim.client_url, {"X-Twilio-Signature": signature})
        replay.stream_sid = client.stream_sid
        await replay.send(replay.event("connected"), replay.event("start", start=start))
        with pytest.raises(websockets.ConnectionClosed):
            await replay.collect(lambda got: False)
        assert not replay.received


async def test_a_failed_twilio_call_is_told_and_ended_through_twilios_rest_api(
    bridge: Bridge, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge does not answer the ``<Connect action>`` webhook: when a Twilio call cannot go on (here the TTS
    answers 500 from the greeting on, with no backup), the live call's TwiML is replaced over Twilio's REST API
    with ``on_failure``'s ``<Say>`` then the ``<Dial>`` of its transfer, and the record says why."""
    failing = CASCADE.replace(
        "tts: {provider: testkit_tts, options: {secs_per_char: 0.02}}",
        "tts: {provider: openai, options: {api_key: '${OPENAI_API_KEY}', base_url: '${OPENAI_BASE_URL}'}}\n"
        'on_failure: {say: "Sorry, our line has a problem.", then: {transfer: {to: "+15557770000"}}}',
    ).replace(
        'twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}',
        f'twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}", account_sid: {ACCOUNT}}}',
    )
    rest = FakeTwilioRest()
    with FakeOpenAI(Behaviour(api_key="test-key", fail_status=500, fail_count=1000)) as tts:
        monkeypatch.setitem(environ, "OPENAI_API_KEY", "test-key")  # (what the deployment is read with)
        monkeypatch.setitem(environ, "OPENAI_BASE_URL", tts.url + "/v1")
        with RunningServer(rest.app) as rest_server:
            async with bridge(failing, FAST, twilio_client=rest.client(rest_server.url)) as (shim, worker):
                client = await twilio_client(shim, "CA00000000000000000000000000000042")
                await wait_until(lambda: bool(rest.updates), timeout=10)
                failed_at = time.monotonic()
                await client.ws.close()
    assert tts.requests("/v1/audio/speech"), "the greeting was never asked of the TTS"
    ((sid, form),) = rest.updates  # once, to the call's CallSid, with the ending TwiML Twilio would run
    assert sid == "CA00000000000000000000000000000042" and set(form) == {"Twiml"}
    assert form["Twiml"] == twiml.end_call("Sorry, our line has a problem.", "+15557770000")
    assert "<Say>Sorry, our line has a problem.</Say><Dial>+15557770000</Dial>" in form["Twiml"]
    assert failed_at - tts.requests("/v1/audio/speech")[0]["time"] <= 2.0  # told within 2 s of the fault
    await wait_until(lambda: bool(worker.host.bookkeeping.records.list()), timeout=10)
    (record,) = worker.host.bookkeeping.records.list()
    assert record.failure is not None and record.failure.then == "transfer"
    assert (record.failure.error.role, record.failure.error.provider, record.failure.error.kind) == (
        "tts",
        "openai",
        "server",
    )


async def twilio_client(shim: ApiGatewayShim, call_sid: str, parameters: dict[str, str] | None = None) -> Client:
    """A Twilio Media Streams client whose call has started (signed; its ``<Parameter>``s are ``parameters``, by
    default only the token binding it to ``call_sid``)."""
    signature = RequestValidator(TOKEN).compute_signature(BRIDGE_URL, {})
    client = await Client.connect(shim.client_url, {"X-Twilio-Signature": signature})
    client.stream_sid = "MZ0000000000000000000000000000fail"
    start = {
        "callSid": call_sid,
        "streamSid": client.stream_sid,
        "tracks": ["inbound"],
        "customParameters": webhook_parameters("twilio", call_sid) if parameters is None else parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    await client.send(client.event("connected"), client.event("start", start=start))
    client.read_in_background()  # Twilio plays what it is sent from the start
    return client


# ------------------------------------------------------------------------------------------------ limits


async def test_large_windows_are_split_under_the_frame_limit(bridge: Bridge) -> None:
    settings = BridgeSettings(poll_wait_secs=1, link=LinkSettings(aggregate_secs=3.0, lead_secs=3.5))
    long_greeting = CASCADE.replace("greeting: Hi there.", "greeting: " + "Hello and welcome. " * 8)
    async with bridge(long_greeting, settings) as (shim, _):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: len(client.audio()) >= 0.95 * len("Hello and welcome. " * 8) * 0.02 * 32000)
        sizes = [e["bytes"] for e in shim.entries("http") if e["method"] == "POST"]
        assert max(sizes) <= FRAME_LIMIT < 3.0 * 16000 * 2  # a 3 s window (96 KB) went out in pieces
        await client.ws.close()


async def test_keepalive_holds_an_idle_connection_open(bridge: Bridge) -> None:
    settings = BridgeSettings(poll_wait_secs=1, link=LinkSettings(keepalive_secs=0.3))
    quiet = CASCADE.replace("greeting: Hi there.", "")
    async with bridge(quiet, settings, idle_timeout_secs=1.0) as (shim, _):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: sum(m.get("mark", {}).get("name") == "keepalive" for m in got) >= 6, 10)
        assert not shim.entries("idle_timeout") and client.ws.close_code is None
        await client.ws.close()


async def test_a_gone_connection_ends_the_call(bridge: Bridge) -> None:
    long_greeting = CASCADE.replace("greeting: Hi there.", "greeting: " + "This greeting goes on and on. " * 6)
    async with bridge(long_greeting, FAST, disconnect=False) as (shim, worker):  # no $disconnect: only 410 tells
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: any(m["event"] == "media" for m in got))
        await client.ws.close()
        call = next(iter(worker.calls.values()))
        await asyncio.wait_for(call.closed.wait(), 15)
        await asyncio.wait_for(call.hosted.done(), 10)  # the pipeline (and its provider connections) ended
        assert any(e["method"] == "POST" for e in shim.entries("http")) and not shim.clients


async def test_a_deleted_session_row_ends_the_call(bridge: Bridge, environ: dict[str, str]) -> None:
    settings = BridgeSettings(poll_wait_secs=1, session_check_secs=0.2)
    async with bridge(CASCADE, settings) as (shim, worker):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await client.collect(lambda got: any(m["event"] == "media" for m in got))
        connection_id = next(iter(worker.calls))
        call = worker.calls[connection_id]
        dynamodb = aws_client("dynamodb", environ["AWS_ENDPOINT_URL_DYNAMODB"])
        dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "conn#" + connection_id}})
        await asyncio.wait_for(call.closed.wait(), 10)
        await asyncio.wait_for(call.hosted.done(), 10)
        assert connection_id not in worker.calls
        await client.ws.close()


def test_worker_needs_a_queue_and_a_table(tmp_path: Path) -> None:
    from voxpipe.serverless.worker import main

    (tmp_path / "deployment.yaml").write_text(CASCADE)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "deployment.yaml"), "--queue-url", ""])


def test_the_worker_runs_calls_without_a_web_framework(tmp_path: Path) -> None:
    """The bridge worker hosts calls like `voxpipe serve`, but never imports FastAPI or Starlette."""
    (tmp_path / "deployment.yaml").write_text(CASCADE)
    probe = """
import asyncio, sys
from voxpipe.config.loader import load_deployment
from voxpipe.serverless.worker import BridgeWorker, BridgeCall, BridgeSettings

async def main():
    worker = BridgeWorker(load_deployment(sys.argv[1]), 'https://sqs.test/q.fifo', 'table')
    for connect in ({'client': 'twilio'}, {'client': 'browser', 'session_id': 's' * 32}):
        slot = await worker.status.admit()
        dialect = worker._dialect(connect)
        BridgeCall(worker.host, worker.twilio, 'c', 'https://apigw.test/prod', dialect, BridgeSettings(), slot)

asyncio.run(main())
web = sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules)
assert not web, web
"""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    env["TWILIO_AUTH_TOKEN"] = TOKEN
    done = subprocess.run(  # noqa: S603 — fixed argv: this interpreter, no caller input
        [sys.executable, "-c", probe, str(tmp_path / "deployment.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


async def test_records_spooled_during_a_store_outage_are_saved_when_the_worker_starts(
    bridge: Bridge, tmp_path: Path
) -> None:
    """A record a store outage left in the spool (``records.spool``) is saved when the worker starts, as
    ``voxpipe serve`` does, not only after the next call's record."""
    waiting = CallRecord(call_id="CA-spooled", deployment="bridge-test", mode="cascade", started_at=0, duration_secs=1)
    spool = RecordSpool(spool_path(RecordStore(tmp_path / "calls.db")))
    spool.add(waiting)
    async with bridge(CASCADE, FAST) as (_, worker):
        saved = await wait_until(lambda: [r.call_id for r in worker.host.bookkeeping.records.list()], timeout=10)
    assert saved == ["CA-spooled"]
    assert spool.waiting() == 0


async def test_a_redelivered_connect_leaves_the_live_call_alone(bridge: Bridge) -> None:
    """SQS delivers at least once: a second ``connect`` for a live connection neither replaces nor ends it."""
    async with bridge(CASCADE, FAST) as (shim, worker):
        client = await Client.page(shim)
        await client.send(client.page_start())
        await started(worker)
        [(connection_id, call)] = worker.calls.items()
        redelivered = {"event": "connect", "connection_id": connection_id, "client": "browser", "endpoint": "x"}
        await worker.dispatch(redelivered)
        assert worker.calls[connection_id] is call and not call.closed.is_set() and call.hosted is not None
        await client.ws.close()


async def test_a_browser_is_admitted_only_with_a_live_token_of_its_own_origin(bridge: Bridge) -> None:
    """``POST /bridge/token`` answers only allowed origins; ``$connect`` refuses no token, another origin's,
    an expired or a tampered one, or a spoofed ``Origin``; the call's id is the token's, whatever ``start`` says."""
    async with bridge(CASCADE, FAST) as (shim, worker):
        for origin in ("https://evil.example", None):
            assert (await shim.page_token(origin))["statusCode"] == 403
        answer = await shim.page_token(ORIGIN)
        assert answer["headers"]["Access-Control-Allow-Origin"] == ORIGIN  # only the page's origin reads it
        mine = json.loads(answer["body"])
        assert 290 < mine["expires_at"] - time.time() <= 300  # the YAML's session_token_secs reached the Lambda
        theirs = json.loads((await shim.page_token(OTHER_ORIGIN))["body"])["token"]
        stale = Signer(os.environ[SECRET_VARIABLE].encode(), clock=lambda: time.time() - 3600)
        expired = stale.mint(PAGE_PURPOSE, f"{mine['session_id']} {ORIGIN}", 600)
        tampered = mine["token"][:-2] + ("AA" if not mine["token"].endswith("AA") else "BB")
        refusals = [
            (ORIGIN, None, 401),
            (ORIGIN, theirs, 401),
            (ORIGIN, expired, 401),
            (ORIGIN, tampered, 401),
            ("https://evil.example", mine["token"], 403),
        ]
        for origin, token, status in refusals:
            offered = ["voxpipe"] + ([f"token.{token}"] if token else [])
            with pytest.raises(websockets.InvalidStatus) as refused:
                await Client.connect(shim.client_url, {"Origin": origin}, offered)
            assert refused.value.response.status_code == status, (origin, token)
        assert not [i for i in shim.invocations if i.route == "$default"] and not worker.calls
        # A valid token, but a start naming another session: refused and disconnected, nothing opened.
        client = await Client.page(shim, mine)
        await client.send(client.event("start", start={"sessionId": "someone-elses-session-0001"}))
        await asyncio.wait_for(client.ws.wait_closed(), 20)
        assert await worker.host.store.get("someone-elses-session-0001") is None
        # The token opens one live call: a second socket with it is closed while the first goes on.
        first = await Client.page(shim, mine)
        await first.send(first.page_start())
        await started(worker)
        second = await Client.page(shim, mine)
        await second.send(second.page_start())
        await asyncio.wait_for(second.ws.wait_closed(), 20)
        assert first.ws.close_code is None and any(c.hosted for c in worker.calls.values())
        await first.ws.close()
