"""The session store fails under live calls: a real ``redis-server`` stopped, hung or killed (issue 12's fleet).

Twilio is played by ``TwilioMediaSimulator`` and ``RelaySimulator`` against the served app:

- Redis hangs mid-call (SIGSTOP: commands time out instead of failing fast) and comes back: the caller's turns
  are answered all along, and the conversation is whole in Redis by the end of the call;
- Redis dies mid-call for good: the turns are answered, the call ends and leaves the process (it used to stay
  among the host's live calls, holding up a drain), the loss is logged and the call's record keeps its turns;
- Redis is down as a call starts (the call's token cannot be checked as unspent, nor its session opened): the
  caller hears the deployment's ``on_failure`` message and is transferred, on Media Streams (``<Connect
  action>``) and on ConversationRelay (last text, then handoff), instead of a silent hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from voxpipe.config.loader import parse_deployment
from voxpipe.records.store import RecordStore
from voxpipe.sessions.redis import RedisSessionStore
from voxpipe.web.app import create_app

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]

TOKEN = "outage-test-token"  # noqa: S105 — a made-up credential for a local test server; nothing real
PUBLIC = "https://desk.example.com"
SORRY = "Sorry, we cannot take your call right now."
HUMAN = "+15557770000"
DEPLOYMENT = f"""
name: desk
agent: {{instructions: You take bookings., greeting: "Hello, desk here."}}
vad: {{provider: testkit_vad, start_secs: 0.1, stop_secs: 0.15}}
turn: {{strategy: silence, timeout_secs: 0.1}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm, options: {{default_reply: "Noted."}}}}
tts: {{provider: testkit_tts}}
transport:
  public_url: {PUBLIC}
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
sessions: {{store: redis, url: "${{REDIS_URL}}"}}
on_failure: {{say: "{SORRY}", then: {{transfer: {{to: "{HUMAN}"}}}}}}
"""


class RedisServer:
    """A throw-away ``redis-server`` that a test can hang (SIGSTOP), resume and kill."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(  # noqa: S603 — fixed argv of an installed tool, no outside input
            [str(shutil.which("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def hang(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


class Logged:
    """What the server logged: loguru's lines and the standard library's (``voxpipe.sessions`` uses it)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.lines: list[str] = []
        self._caplog = caplog

    def has(self, text: str) -> bool:
        return any(text in line for line in [*self.lines, *(r.getMessage() for r in self._caplog.records)])


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Logged]:
    from loguru import logger

    caplog.set_level("INFO", logger="voxpipe.sessions")
    seen = Logged(caplog)
    sink = logger.add(lambda message: seen.lines.append(str(message)), level="INFO")
    yield seen
    logger.remove(sink)


@contextlib.contextmanager
def served(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[RunningServer, Any, RecordStore]]:
    deployment = parse_deployment(DEPLOYMENT, environ={"TWILIO_AUTH_TOKEN": TOKEN, "REDIS_URL": redis.url})
    records = RecordStore(tmp_path / "calls.db")
    app = create_app([deployment], records=records, warm_up=False)
    with RunningServer(app) as server:
        yield server, app.state.hosts["desk"], records


def caller(server: RunningServer) -> TwilioMediaSimulator:
    return TwilioMediaSimulator(f"{server.ws_url}/desk/media", f"{PUBLIC.replace('https', 'wss')}/desk/media", TOKEN)


def speech(secs: float = 0.6) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def turn(call: TwilioMediaSimulator, timeout: float = 8.0) -> None:
    """The caller speaks; the bot answers within ``timeout``, and the answer plays out."""
    answers = len(call.marks_echoed)
    await call.speak(speech())
    await call.wait_for(lambda: len(call.marks_echoed) > answers, timeout=timeout, what="an answer")
    await asyncio.sleep(1.0)


async def greeted_and_answered(call: TwilioMediaSimulator) -> None:
    """The greeting played to its end (the caller talking over it would cut it from the conversation), then the
    caller's first turn was answered (the store still up)."""
    await call.wait_for(lambda: len(call.marks_echoed) > 0, what="the greeting")
    played = -1
    while played != len(call.marks_echoed):  # until no mark has come back for half a second
        played = len(call.marks_echoed)
        await asyncio.sleep(0.5)
    await turn(call)


async def until_ended(host: Any, timeout: float = 15.0) -> None:
    """The host has let go of every call."""
    deadline = time.monotonic() + timeout
    while host.calls:
        assert time.monotonic() < deadline, f"calls still live: {host.calls}"
        await asyncio.sleep(0.05)


async def test_a_hung_store_holds_up_no_turn_and_the_conversation_is_stored_once_it_is_back(
    tmp_path: Path, redis: RedisServer, logged: Logged
) -> None:
    with served(tmp_path, redis) as (server, host, _):
        async with caller(server) as call:
            await greeted_and_answered(call)
            redis.hang()
            started = time.monotonic()
            await turn(call)  # answered as ever: the session write waits in the background, then times out
            await turn(call)
            assert time.monotonic() - started < 8.0
            await asyncio.sleep(2.5)  # (past the client's timeout: the write failed and waits)
            redis.resume()
        await until_ended(host)
    assert logged.has("the store failed")
    store = RedisSessionStore(redis.url)
    session = await store.get(call.call_sid)
    await store.close()
    assert session is not None
    roles = [message["role"] for message in session.messages]
    assert roles == ["assistant"] + ["user", "assistant"] * 3, session.messages  # greeting, then every turn


async def test_a_store_dead_for_good_ends_the_call_cleanly_and_keeps_its_turns_in_the_record(
    tmp_path: Path, redis: RedisServer, logged: Logged
) -> None:
    with served(tmp_path, redis) as (server, host, records):
        async with caller(server) as call:
            await greeted_and_answered(call)
            redis.kill()
            await turn(call)
        await until_ended(host)  # flush tries again for a few seconds, then gives up
        for _ in range(100):
            record = records.get(call.call_sid)
            if record is not None:
                break
            await asyncio.sleep(0.05)
    assert record is not None and [t.reply for t in record.turns] == ["Noted.", "Noted."]  # both turns
    assert logged.has("messages of the conversation could not be stored")


async def test_a_call_starting_while_the_store_is_down_is_told_and_transferred(
    tmp_path: Path, redis: RedisServer, logged: Logged
) -> None:
    with served(tmp_path, redis) as (server, host, _):
        redis.kill()
        async with caller(server) as call:
            await call.wait_for(call.closed.is_set, timeout=10, what="the server to close the stream")
            answer = await call.connect_action(f"{server.url}/desk/connect-action", f"{PUBLIC}/desk/connect-action")
        assert f"<Say>{SORRY}</Say><Dial>{HUMAN}</Dial>" in answer, answer
        assert not host.calls
    assert logged.has("could not check that the token is unused")


async def test_a_relay_session_starting_while_the_store_is_down_is_told_and_handed_off(
    tmp_path: Path, redis: RedisServer
) -> None:
    with served(tmp_path, redis) as (server, _, _):
        redis.kill()
        simulator = RelaySimulator(
            f"{server.ws_url}/desk/relay", f"{PUBLIC.replace('https', 'wss')}/desk/relay", auth_token=TOKEN
        )
        async with simulator as session:
            said = await session.next_message()
            ended = await session.next_message()
    assert said["type"] == "text" and said["token"] == SORRY and said["last"] is True
    assert ended["type"] == "end" and HUMAN in ended["handoffData"]


async def test_redis_commands_time_out_rather_than_hang(redis: RedisServer) -> None:
    """A hung Redis fails the session store's commands in seconds (a call's start must not wait forever)."""
    store = RedisSessionStore(redis.url)
    await store.get("CA1")  # connected
    redis.hang()
    started = time.monotonic()
    with pytest.raises((RedisTimeout, RedisConnectionError)) as failure:
        await store.get("CA1")
    assert time.monotonic() - started < 5.0, failure.value
    redis.resume()
    await store.close()
    client = Redis.from_url(redis.url)
    assert await client.ping()
    await client.aclose()
