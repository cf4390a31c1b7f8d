"""A served process past its deployment's ``limits.max_loop_load`` turns new calls away
(voxpipe.security.loop_load).

The load is made the way production makes it, by calls: Twilio Media Streams callers (the simulator, one media
event every 20 ms each) against the app on a real socket, with deployments whose limit is low enough for a
few calls to pass it. New Twilio calls then hear ``busy_say``, or are redirected where ``drain.redirect_url``
is set; a browser page's call socket is closed with 1013; ``/readyz`` answers 503 and the refusals are
counted. The calls already connected go on, and once they end, the door opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from tests.simulators import page_subprotocols, page_token
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import TwilioMediaSimulator
from voxpipe.config.loader import parse_deployment
from voxpipe.security.limits import LimitExceeded
from voxpipe.security.loop_load import STALE_AFTER_SAMPLES, LoopLoad
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(120)

TOKEN = "loop-load-test-token"  # noqa: S105 — a made-up credential for a local test server; nothing real
PUBLIC = "https://busy.example.com"
PAGE = "https://app.example.com"
OTHER_INSTANCE = "https://spare.example.com/desk/twiml"
DEPLOYMENT = f"""
name: NAME
agent: {{instructions: You take bookings.}}
vad: {{provider: testkit_vad}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm}}
tts: {{provider: testkit_tts}}
transport:
  public_url: {PUBLIC}
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
  browser: {{allowed_origins: ["{PAGE}"]}}
sessions: {{store: memory}}
limits: {{max_loop_load: LIMIT, busy_say: Every line is busy. Call back soon.}}
"""


def _deployment(name: str, limit: str, extra: str = "") -> Any:
    text = DEPLOYMENT.replace("NAME", name).replace("LIMIT", limit) + extra
    return parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN})


async def _spin(secs: float) -> None:
    """Keep the loop's own thread busy for ``secs``, yielding to it every 10 ms as a loaded server does."""
    until = time.monotonic() + secs
    while time.monotonic() < until:
        slice_end = time.monotonic() + 0.01
        while time.monotonic() < slice_end:
            pass
        await asyncio.sleep(0)


async def _until(condition: Callable[[], Any], secs: float, what: str) -> None:
    deadline = time.monotonic() + secs
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


async def test_the_share_is_the_loops_own_cpu_not_other_threads() -> None:
    load = LoopLoad(sample_secs=0.1, samples=3)
    load.start()
    try:
        await _spin(0.5)
        assert load.share > 0.7
        assert load.above(0.5) and not load.above(1.0)  # a limit of 1 never turns a call away
        stop = threading.Event()
        burner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])  # a model's thread
        burner.start()
        try:
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            burner.join()
        assert load.share < 0.3
    finally:
        load.stop()


SIBLING = """
import asyncio, sys, time
from pathlib import Path
from voxpipe.security.limits import LimitExceeded
from voxpipe.security.loop_load import STALE_AFTER_SAMPLES, LoopLoad

async def work(folder: str, busy: bool, secs: float) -> None:
    load = LoopLoad(sample_secs=0.1, samples=3, siblings=Path(folder))
    load.start()
    until = time.monotonic() + secs
    while time.monotonic() < until:
        if busy:
            spin_until = time.monotonic() + 0.01
            while time.monotonic() < spin_until:
                pass
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(0.05)
    load.stop()

asyncio.run(work(sys.argv[1], sys.argv[2] == "busy", float(sys.argv[3])))
"""


async def _sibling_worker(folder: Path, busy: bool, secs: float) -> asyncio.subprocess.Process:
    """Another worker process of the host, its loop busy or idle for ``secs``, publishing its load in ``folder``."""
    sibling = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIBLING, str(folder), "busy" if busy else "idle", str(secs)
    )
    await _until(lambda: _published(folder), 10, "the sibling worker publishes its load")
    return sibling


async def _published(folder: Path) -> bool:
    return any(folder.glob("loop-load.*[0-9]"))


async def test_a_busy_worker_beside_an_idle_one_turns_no_call_away_but_a_busy_host_does(tmp_path: Path) -> None:
    """The workers of a host share one socket, and the least busy takes a new call: the host is judged."""
    load = LoopLoad(sample_secs=0.1, samples=3, siblings=tmp_path)
    load.start()
    try:
        idle = await _sibling_worker(tmp_path, busy=False, secs=3)
        await _spin(1.0)
        assert load.share > 0.7 and load.host_share < 0.3  # this worker is busy, its sibling is not
        assert not load.above(0.5)
        load.check(0.5)  # (no LimitExceeded)
        await idle.wait()  # the sibling stopped: its published load is gone with it
        await _spin(0.5)
        assert load.above(0.5)
        busy = await _sibling_worker(tmp_path, busy=True, secs=2)
        await _spin(1.0)
        assert load.host_share > 0.5  # every worker busy: the host turns calls away
        with pytest.raises(LimitExceeded, match="max_loop_load"):
            load.check(0.5)
        busy.kill()  # a worker that dies leaves its file, but an old one counts no more
        await busy.wait()
        await _spin(STALE_AFTER_SAMPLES * 0.1 + 0.5)
        assert load.above(0.5)
    finally:
        load.stop()
    assert not (tmp_path / f"loop-load.{os.getpid()}").exists()  # a stopped worker takes its load away


def _signed_webhook(call_sid: str, name: str = "desk") -> tuple[dict[str, str], dict[str, str]]:
    form = {"CallSid": call_sid, "From": "+15550001111"}
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/{name}/twiml", form)
    return form, {"X-Twilio-Signature": signature}


async def _browser_call_refusal(ws_url: str, token: str) -> websockets.frames.Close | None:
    """Open a browser page's call socket; how the server closed it (``None``: still open after 2 s, a call)."""
    async with websockets.connect(ws_url, origin=PAGE, subprotocols=page_subprotocols(token)) as socket:
        try:
            await socket.send('{"event": "start", "start": {}}')
            await asyncio.wait_for(socket.wait_closed(), 2)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            return None
        return socket.protocol.close_rcvd


async def test_an_overloaded_process_turns_new_twilio_calls_away_until_its_load_falls() -> None:
    desk = _deployment("desk", "0.03")
    spare = _deployment("line2", "0.03", f"drain: {{redirect_url: {OTHER_INSTANCE}}}\n")
    with RunningServer(create_app([desk, spare], warm_up=False)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            page = page_token(httpx.Client(base_url=server.url), "desk", PAGE)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            async def overloaded() -> bool:
                answer = await client.get("/readyz")
                return answer.status_code == 503 and answer.json()["overloaded"]

            form, headers = _signed_webhook("CA" + "0" * 32)
            assert "<Stream" in (await client.post("/desk/twiml", data=form, headers=headers)).text
            callers = [
                TwilioMediaSimulator(
                    f"{server.ws_url}/desk/media",
                    f"{PUBLIC.replace('https', 'wss')}/desk/media",
                    TOKEN,
                    call_sid=f"CA{n:032d}",
                )
                for n in range(1, 9)
            ]
            async with contextlib.AsyncExitStack() as calls:
                for caller in callers:
                    await calls.enter_async_context(caller)
                await _until(overloaded, 20, "/readyz says overloaded while eight calls run")
                form, headers = _signed_webhook("CA" + "9" * 32)
                turned_away = await client.post("/desk/twiml", data=form, headers=headers)
                assert turned_away.status_code == 200
                assert turned_away.text.endswith("<Say>Every line is busy. Call back soon.</Say><Hangup /></Response>")
                form, headers = _signed_webhook("CA" + "7" * 32, "line2")
                redirected = await client.post("/line2/twiml", data=form, headers=headers)
                assert redirected.text.endswith(f'<Redirect method="POST">{OTHER_INSTANCE}</Redirect></Response>')
                refusal = await _browser_call_refusal(f"{server.ws_url}/desk/ws", page)
                assert refusal is not None and refusal.code == 1013 and "max_loop_load" in refusal.reason
                metrics = (await client.get("/metrics")).text
                assert 'voxpipe_refused_total{deployment="desk",limit="max_loop_load"} 2.0' in metrics
                assert 'voxpipe_refused_total{deployment="line2",limit="max_loop_load"} 1.0' in metrics
                assert not any(caller.closed.is_set() for caller in callers)  # the calls let in go on
                for caller in callers:
                    await caller.stop()
            await _until(ready, 20, "/readyz says ready once the calls ended")
            form, headers = _signed_webhook("CA" + "8" * 32)
            assert "<Stream" in (await client.post("/desk/twiml", data=form, headers=headers)).text
            assert await _browser_call_refusal(f"{server.ws_url}/desk/ws", page) is None
