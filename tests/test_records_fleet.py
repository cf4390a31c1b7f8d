"""Two `voxpipe serve` processes sharing Redis (sessions) and PostgreSQL (records), called over real sockets
as Twilio calls them: every call lands in one `voxpipe report`, an experiment's assignment of a caller is
the same on both servers, and a call that drops and reconnects to the other server resumes its conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.postgres_server import admin_url, fresh_database
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from tests.test_session_backends import redis_url  # noqa: F401 (a pytest fixture, by name)
from voxpipe.config.loader import parse_deployment
from voxpipe.pipeline.experiment import assign
from voxpipe.records.store import RecordStore
from voxpipe.sessions.redis import RedisSessionStore

pytestmark = pytest.mark.timeout(180)

TOKEN = "fleet-test-token"  # noqa: S105 — a made-up credential for a local test server; nothing real
PUBLIC = "https://fleet.example.com"
DEPLOYMENT = f"""
name: desk
agent: {{instructions: You take bookings.}}
vad: {{provider: testkit_vad, start_secs: 0.1, stop_secs: 0.15}}
turn: {{strategy: silence, timeout_secs: 0.1}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm, options: {{default_reply: "Noted."}}}}
tts: {{provider: testkit_tts}}
transport:
  public_url: {PUBLIC}
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
sessions: {{store: redis, url: "${{REDIS_URL}}"}}
experiment:
  name: desk-split
  variants:
    a: {{weight: 1}}
    b: {{weight: 1, overrides: {{llm: {{provider: testkit_llm, options: {{default_reply: "Booked."}}}}}}}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _serve(config: Path, env: dict[str, str]) -> Iterator[str]:
    """``voxpipe serve`` in its own process on a free port; yields its ws:// base URL once /readyz says 200."""
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
        [sys.executable, "-m", "voxpipe.cli", "serve", str(config), "--port", str(port), "--workers", "1"],
        env={**os.environ, **env, "VOXPIPE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "voxpipe serve did not become ready"
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                break
            time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


def _speech(secs: float = 0.5) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def _talk(base: str, caller: str, call_sid: str, turns: int = 1) -> None:
    """One Twilio connection: ``turns`` turns, each waiting for the bot's answer, then ``stop``."""
    call = TwilioMediaSimulator(
        f"{base}/desk/media",
        "wss://fleet.example.com/desk/media",
        TOKEN,
        call_sid=call_sid,
        parameters={"from": caller, "to": "+15559990000"},
    )
    async with call:
        await asyncio.sleep(1.0)  # the call's pipeline starts
        for _ in range(turns):
            answers = len(call.marks_echoed)
            await call.speak(_speech())
            await call.wait_for(lambda n=answers: len(call.marks_echoed) > n, timeout=20, what="an answer")
            await asyncio.sleep(1.0)  # the answer plays out and is written to the session
        await call.stop()
        await asyncio.sleep(0.3)


@pytest.fixture
def database() -> Iterator[str]:
    with admin_url() as admin, fresh_database(admin) as url:
        yield url


async def test_two_servers_share_records_assignment_and_sessions(
    tmp_path: Path,
    database: str,
    redis_url: str,  # noqa: F811
    run_cli: Callable[..., Any],
    registry: object,
) -> None:
    config = tmp_path / "desk.yaml"
    config.write_text(DEPLOYMENT)
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "REDIS_URL": redis_url, "VOXPIPE_RECORDS": database}
    experiment = parse_deployment(DEPLOYMENT, environ=env).experiment
    assert experiment is not None
    callers = [f"+1555000{i:04d}" for i in range(4)]
    with _serve(config, env) as first, _serve(config, env) as second:
        # Every caller calls both servers; the fifth call drops on the first server and reconnects on the second.
        servers = (first, second)
        await asyncio.gather(*(_talk(servers[j], c, f"CA{i}{j}") for i, c in enumerate(callers) for j in (0, 1)))
        await _talk(first, callers[0], "CA-moved")
        await _talk(second, callers[0], "CA-moved")
        deadline = time.monotonic() + 20
        # A record is saved as its connection ends; the moved call's second record replaces its first (one row
        # per call id), so nine rows.
        while len(RecordStore(database).list(experiment="desk-split")) < 9:
            assert time.monotonic() < deadline, "records did not all arrive"
            await asyncio.sleep(0.2)

    records = RecordStore(database).list(experiment="desk-split")
    by_call = {}
    for record in records:
        by_call.setdefault(record.call_id, []).append(record)
    assert set(by_call) == {f"CA{i}{j}" for i in range(4) for j in range(2)} | {"CA-moved"}
    for caller in callers:  # sticky: one variant per caller, whichever server took the call
        variants = {r.variant for r in records if r.caller_id == caller}
        assert variants == {assign(experiment, caller)}
    report = run_cli("report", "--experiment", "desk-split", "--json", "--records", database)
    assert report.returncode == 0, report.stderr
    assert sum(summary["calls"] for summary in json.loads(report.stdout)) == 9
    # The reconnected call resumed on the second server the conversation the first one had stored.
    session = await RedisSessionStore(redis_url).get("CA-moved")
    assert session is not None
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
