"""``voxpipe serve`` as a fleet runs it: several workers on one port, and a drain on SIGTERM.

Real processes and sockets, Twilio played by ``TwilioMediaSimulator``, sessions in a real ``redis-server``:

- with ``--workers 2`` a call that drops and reconnects is taken by the other worker and resumes its
  conversation (the session's ``served_by`` names the worker), and ``/metrics`` counts both workers' calls
  and both workers' stored recordings;
- SIGTERM during a live call (a rolling restart): ``/readyz`` turns 503, a new call is refused, the live call
  goes on and loses no turn, its record is complete, and the process exits once it ends;
- a call still live at the drain deadline ends through ``on_failure``, and its record says why;
- while draining, Twilio's voice webhook is redirected to ``drain.redirect_url`` or told ``drain.say``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from tests.test_session_backends import redis_url  # noqa: F401 (a pytest fixture, by name)
from voxpipe.config.loader import parse_deployment
from voxpipe.records.store import RecordStore
from voxpipe.sessions.redis import RedisSessionStore
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(180)

TOKEN = "fleet-test-token"  # noqa: S105 — a made-up credential for a local test server; nothing real
DEPLOYMENT = """
name: desk
agent: {instructions: You take bookings.}
vad: {provider: testkit_vad, start_secs: 0.1, stop_secs: 0.15}
turn: {strategy: silence, timeout_secs: 0.1}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm, options: {default_reply: "Noted."}}
tts: {provider: testkit_tts}
transport:
  public_url: https://fleet.example.com
  twilio: {auth_token: "${TWILIO_AUTH_TOKEN}"}
sessions: {store: redis, url: "${REDIS_URL}"}
drain: {deadline_secs: DEADLINE}
records: {path: calls.db}
recording: {enabled: true, store: "file://recordings"}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 — a local test server's http:// URL
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextlib.contextmanager
def _serve(
    tmp_path: Path, redis: str, workers: int, deadline: float = 60, extra: str = ""
) -> Iterator[tuple[int, subprocess.Popen]]:
    """``voxpipe serve --workers N`` on a free port, once ``/readyz`` says 200; stopped at the end if still up.
    ``extra``: more YAML for the deployment."""
    config = tmp_path / "desk.yaml"
    config.write_text(DEPLOYMENT.replace("DEADLINE", str(deadline)) + extra)
    port = _free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "REDIS_URL": redis,
        "VOXPIPE_RECORDS": str(tmp_path / "not-these.db"),  # the deployment's records: section wins
        "VOXPIPE_LOG_LEVEL": "WARNING",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "voxpipe.cli", "serve", str(config), "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(argv, env=env, cwd=tmp_path)  # noqa: S603 — fixed argv of this interpreter
    try:
        deadline_at = time.monotonic() + 90
        while _ready(port) != 200:
            assert server.poll() is None and time.monotonic() < deadline_at, "voxpipe serve did not become ready"
            time.sleep(0.2)
        yield port, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _ready(port: int) -> int | None:
    with contextlib.suppress(OSError):
        return _get(f"http://127.0.0.1:{port}/readyz")[0]
    return None


def _speech(secs: float = 0.5) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def _caller(port: int, call_sid: str) -> TwilioMediaSimulator:
    return TwilioMediaSimulator(
        f"ws://127.0.0.1:{port}/desk/media", "wss://fleet.example.com/desk/media", TOKEN, call_sid=call_sid
    )


async def _turn(call: TwilioMediaSimulator) -> None:
    answers = len(call.marks_echoed)
    await call.speak(_speech())
    await call.wait_for(lambda: len(call.marks_echoed) > answers, timeout=20, what="an answer")
    await asyncio.sleep(1.0)  # the answer plays out and is written to the session


async def _served_by(store: RedisSessionStore, call_sid: str, after: str | None) -> str:
    """The worker that took the call's latest connection (waits for a ``connected_at`` newer than ``after``)."""
    for _ in range(100):
        session = await store.get(call_sid)
        if session is not None and session.metadata.get("connected_at") != after:
            return str(session.metadata["connected_at"]) + "|" + str(session.metadata["served_by"])
        await asyncio.sleep(0.1)
    raise AssertionError("the connection was not taken")


async def _released(store: RedisSessionStore, call_sid: str, connected_at: str) -> None:
    """Wait until the connection taken at ``connected_at`` has been let go (a live call id refuses a second socket,
    as a real reconnect only comes after the first connection is gone)."""
    for _ in range(100):
        session = await store.get(call_sid)
        if session is not None and str(session.metadata.get("disconnected_at", "")) >= connected_at:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the previous connection was never let go")


async def test_a_call_resumes_on_another_worker_and_metrics_add_up(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    store = RedisSessionStore(redis_url)
    with _serve(tmp_path, redis_url, workers=2) as (port, _):
        async with _caller(port, "CA-workers") as call:
            first = await _served_by(store, "CA-workers", None)
            await asyncio.sleep(1.0)  # the call's pipeline starts
            await _turn(call)
            await call.stop()
        connected_at, first_worker = first.split("|")
        await _released(store, "CA-workers", connected_at)
        connections = 1
        for _ in range(30):  # the kernel picks the worker: reconnect until the other one takes the call
            async with _caller(port, "CA-workers") as call:
                connections += 1
                connected_at, worker = (await _served_by(store, "CA-workers", connected_at)).split("|")
                if worker != first_worker:
                    await asyncio.sleep(1.0)
                    await _turn(call)
                    await call.stop()
                    break
                await call.stop()
            await _released(store, "CA-workers", connected_at)
        assert worker != first_worker, "every reconnect went to the same worker"
        session = await store.get("CA-workers")
        assert session is not None
        assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]

        deadline = time.monotonic() + 20
        counted = (
            f'voxpipe_calls_total{{deployment="desk",variant=""}} {connections}.0',
            f'voxpipe_recordings_total{{outcome="stored"}} {connections}.0',  # each worker stored its own
        )
        while not all(line in _get(f"http://127.0.0.1:{port}/metrics")[1] for line in counted):
            assert time.monotonic() < deadline, _get(f"http://127.0.0.1:{port}/metrics")[1]
            await asyncio.sleep(0.2)
        wavs = sorted((tmp_path / "recordings").glob("*.wav"))  # one per connection, whichever worker took it
        assert len(wavs) == connections
    await store.close()
    (record,) = RecordStore(tmp_path / "calls.db").list()  # one joined record naming them all, in order
    assert [r.location for r in record.recordings] == [w.as_uri() for w in wavs]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rolling_restart_loses_no_turn(tmp_path: Path, redis_url: str, workers: int) -> None:  # noqa: F811
    """SIGTERM to ``voxpipe serve`` (with workers: to their supervisor, which passes it on) drains."""
    with _serve(tmp_path, redis_url, workers=workers) as (port, server):
        async with _caller(port, "CA-drain") as call:
            await asyncio.sleep(1.0)
            await _turn(call)
            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()  # uvicorn's supervisor looks at signals every 0.5 s; a worker at once
            # Not ready: 503, or (with two workers) a probe reset by the worker that exits first, the one without
            # a call, which drains at once; a load balancer's probe counts a reset as not ready too.
            while _ready(port) == 200:
                assert time.monotonic() - signalled < 1.0, "/readyz still 200 a second after SIGTERM"
                await asyncio.sleep(0.05)
            with pytest.raises(websockets.InvalidStatus):  # a new call is refused before it is accepted
                async with _caller(port, "CA-new"):
                    pass
            await _turn(call)  # the live call goes on
            assert server.poll() is None, "the server stopped with a call live"
            await call.stop()
        assert server.wait(timeout=30) is not None
    (record,) = RecordStore(tmp_path / "calls.db").list()  # where the deployment's records: section says
    assert not (tmp_path / "not-these.db").exists()
    assert record.call_id == "CA-drain"
    assert len(record.turns) == 2 and all(t.voice_to_voice_ms for t in record.turns)
    assert record.failure is None


async def test_the_drain_deadline_ends_a_call_through_on_failure(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with _serve(tmp_path, redis_url, workers=1, deadline=1.5) as (port, server):
        async with _caller(port, "CA-long") as call:
            await asyncio.sleep(1.0)
            await _turn(call)
            server.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert server.wait(timeout=30) is not None
            assert time.monotonic() - started >= 1.4
    (record,) = RecordStore(tmp_path / "calls.db").list()
    assert len(record.turns) == 1
    assert record.failure is not None and "drain deadline" in record.failure.error.message


@pytest.mark.parametrize(
    ("drain", "expected"),
    [
        (
            "{redirect_url: https://other.example.com/desk/twiml}",
            '<Response><Redirect method="POST">https://other.example.com/desk/twiml</Redirect></Response>',
        ),
        ("{say: Call back soon.}", "<Response><Say>Call back soon.</Say><Hangup /></Response>"),
    ],
)
async def test_twilio_webhook_while_draining(registry: object, drain: str, expected: str) -> None:
    deployment = parse_deployment(
        "name: desk\nagent: {instructions: Hi.}\nvad: {provider: testkit_vad}\nstt: {provider: testkit_stt}\n"
        "llm: {provider: testkit_llm}\ntts: {provider: testkit_tts}\ninsecure: true\n"
        "transport: {public_url: https://a.example.com, twilio: {validate_signatures: false}}\n"
        f"sessions: {{store: memory}}\ndrain: {drain}\n"
    )
    app = create_app([deployment], warm_up=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert "<Stream" in (await client.post("/desk/twiml", data={"CallSid": "CA1"})).text
        app.state.drain.begin()
        answer = await client.post("/desk/twiml", data={"CallSid": "CA2"})
        assert answer.status_code == 200 and answer.text.endswith(expected)
        assert (await client.get("/readyz")).status_code == 503


async def test_the_server_warms_up_the_models_its_variants_use(
    monkeypatch: pytest.MonkeyPatch, registry: object
) -> None:
    """A variant on Silero VAD gets the model loaded at start; a server with no deployment using it does not."""
    import voxpipe.pipeline.shared_models as shared_models
    from tests.simulators.server import RunningServer

    loaded: list[set[str]] = []
    monkeypatch.setattr(shared_models, "warm_up", lambda served: loaded.append(shared_models.models_used(served)))
    base = (
        "name: desk\nagent: {instructions: Hi.}\nvad: {provider: testkit_vad}\nstt: {provider: testkit_stt}\n"
        "llm: {provider: testkit_llm}\ntts: {provider: testkit_tts}\nsessions: {store: memory}\n"
    )
    silero = "{weight: 1, overrides: {vad: {provider: silero}}}"
    variants = f"experiment: {{name: vad, variants: {{a: {{weight: 1}}, b: {silero}}}}}\n"
    for text in (base, base + variants):
        with RunningServer(create_app([parse_deployment(text)])):
            pass
    assert loaded == [set(), {"silero"}]
