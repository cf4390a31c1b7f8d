"""Issue 11/12: ``limits.concurrent_calls`` counted across every process that shares the deployment's sessions.

Two servers on one Redis (a fleet) or one SQLite file (the workers of a host), and real ``voxpipe serve
--workers 2`` processes, admit exactly the limit together; a worker killed while holding a slot frees it once
its lease runs out, while a live call renews its lease; a call cancelled as its socket closes gives its
lease back at once; when the store fails or hangs, each process counts its own calls, and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.security.test_bounds import UNSIGNED
from tests.security.test_limits_routes import _refused
from tests.simulators.server import free_port
from tests.test_serve_fleet import _caller, _serve
from tests.test_session_backends import redis_url  # noqa: F401 — a pytest fixture, by name
from voxpipe.config.loader import parse_deployment
from voxpipe.security.limits import DeploymentLimits, LimitExceeded, SharedWindows
from voxpipe.sessions.redis_limits import RedisWindows
from voxpipe.sessions.sqlite_limits import SQLiteWindows
from voxpipe.web.app import create_app

HOLDER = """
import asyncio, sys
from voxpipe.security.limits import DeploymentLimits

async def hold() -> None:
    store, where = sys.argv[1:3]
    if store == "redis":
        from voxpipe.sessions.redis_limits import RedisWindows as Store
    else:
        from voxpipe.sessions.sqlite_limits import SQLiteWindows as Store
    limits = DeploymentLimits(1, 10, 10, shared=Store(where, "open"), lease_secs=2.0)
    await limits.admit_call(None)
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(hold())
"""


def _store(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, Callable[[], int]]:
    """Where the sessions live (a Redis URL or a SQLite path), and how many live slots of deployment ``open``
    it holds, read straight from the store."""
    if store == "redis":
        url = request.getfixturevalue("redis_url")
        return url, lambda: _redis_held(url, "open")
    path = str(tmp_path / "s.db")
    return path, lambda: _sqlite_held(path)


def _redis_held(url: str, deployment: str) -> int:
    with redis.Redis.from_url(url) as client:
        return client.zcount(f"voxpipe:slots:{deployment}:concurrent_calls", time.time(), "+inf")


def _sqlite_held(path: str) -> int:
    query = "SELECT COUNT(*) FROM limit_slots WHERE name = 'open:concurrent_calls' AND expires > ?"
    with sqlite3.connect(path) as db:
        try:
            return db.execute(query, (time.time(),)).fetchone()[0]
        except sqlite3.OperationalError:  # no slot was taken yet: the table is made with the first
            return 0


def _wait_for(held: Callable[[], int], count: int) -> None:
    deadline = time.monotonic() + 10
    while held() != count:
        assert time.monotonic() < deadline, f"the store holds {held()} slots, not {count}"
        time.sleep(0.02)


def _shared(store: str, where: str) -> SharedWindows:
    return RedisWindows(where, "open") if store == "redis" else SQLiteWindows(where, "open")


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_two_servers_sharing_their_sessions_admit_exactly_the_concurrent_calls_together(
    store: str, registry: object, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where, held = _store(store, tmp_path, request)
    sessions = f"sessions: {{store: {store}, {'url' if store == 'redis' else 'path'}: '{where}'}}"
    fleet = UNSIGNED.replace("sessions: {store: memory}", sessions) + "limits: {concurrent_calls: 2}\n"
    one, two = (create_app([parse_deployment(fleet)], warm_up=False) for _ in range(2))
    with TestClient(one) as first, TestClient(two) as second:
        with first.websocket_connect("/open/media") as call_one:
            _wait_for(held, 1)
            with second.websocket_connect("/open/relay"):
                _wait_for(held, 2)
                for client, path in [(first, "/open/media"), (second, "/open/media"), (second, "/open/relay")]:
                    with client.websocket_connect(path) as third, pytest.raises(WebSocketDisconnect) as closed:
                        third.receive_text()
                    assert closed.value.code == 1013 and "concurrent_calls" in closed.value.reason
            _wait_for(held, 1)  # the second server's call ended: its slot is free for either server
            call_one.send_text(json.dumps({"event": "connected"}))  # the first call is untouched
            with second.websocket_connect("/open/media"):
                _wait_for(held, 2)
        _wait_for(held, 0)
        refused = (
            _refused(first.get("/metrics").text, "concurrent_calls"),
            _refused(second.get("/metrics").text, "concurrent_calls"),
        )
    assert refused == (1, 2)  # each server counts the refusals it answered


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_a_slot_of_a_killed_worker_is_free_again_after_its_lease_and_a_live_one_is_renewed(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where, held = _store(store, tmp_path, request)
    worker = subprocess.Popen(  # noqa: S603 — this interpreter and a fixed script
        [sys.executable, "-c", HOLDER, store, where], stdout=subprocess.PIPE
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"held\n"
    finally:
        worker.kill()  # SIGKILL: nothing is released, nothing cleaned up
        worker.wait(timeout=10)
    killed = time.monotonic()
    limits = DeploymentLimits(1, 10, 10, shared=_shared(store, where), lease_secs=1.0)
    other = DeploymentLimits(1, 10, 10, shared=_shared(store, where), lease_secs=1.0)
    try:
        with pytest.raises(LimitExceeded, match="concurrent_calls"):
            await limits.admit_call(None)
        while True:  # the dead worker's lease runs out (2 s after its last renewal)
            try:
                slot = await limits.admit_call(None)
                break
            except LimitExceeded:
                assert time.monotonic() - killed < 2.0 + 3.0, "the dead worker's slot never came back"
                await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # well beyond its 1 s lease: the live call renewed it
        assert held() == 1
        with pytest.raises(LimitExceeded, match="concurrent_calls"):
            await other.admit_call(None)
        await slot.release()
        await slot.release()  # twice: given back once
        assert held() == 0
        await (await other.admit_call(None)).release()
    finally:
        for each in (limits, other):
            assert each.shared is not None
            await each.shared.close()


async def test_slots_fall_back_to_the_process_when_the_store_fails_and_say_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = RedisWindows(f"redis://127.0.0.1:{free_port()}/0", "open")  # nothing listens there
    limits = DeploymentLimits(2, 10, 10, shared=down)
    try:
        with caplog.at_level(logging.WARNING, logger="voxpipe.security"):
            first = await limits.admit_call(None)
            second = await limits.admit_call(None)
            with pytest.raises(LimitExceeded, match="concurrent_calls"):  # this process's own count still bounds
                await limits.admit_call(None)
            await first.release()
            await (await limits.admit_call(None)).release()
            await second.release()
        assert limits.calls.in_use == 0
        warnings = [r for r in caplog.records if "shared limits unavailable" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await down.close()


async def test_a_cancelled_calls_slot_is_given_back_and_a_lapsed_lease_of_a_live_call_is_renewed(
    tmp_path: Path,
) -> None:
    """A call's task is cancelled as its socket closes, and an anyio cancel scope (Starlette's) cancels every
    await after it, the release's too: the lease still goes back at once, not after its time to live. A
    lease that lapsed while the store was unreachable is held again by the next renewal."""
    where = str(tmp_path / "s.db")
    limits = DeploymentLimits(1, 10, 10, shared=SQLiteWindows(where, "open"))
    with anyio.CancelScope() as scope:
        async with await limits.admit_call(None):
            assert _sqlite_held(where) == 1
            scope.cancel()
            await asyncio.sleep(3600)
    await limits.close()  # waits for the leases being given back
    assert _sqlite_held(where) == 0

    clock = [1000.0]
    store = SQLiteWindows(where, "open", clock=lambda: clock[0])
    try:
        await store.take_slot("concurrent_calls", 1, "live", 30)
        clock[0] += 31  # no renewal for longer than the lease: another call takes the place
        await store.take_slot("concurrent_calls", 1, "newcomer", 30)
        await store.renew_slot("concurrent_calls", "live", 30)  # the live call is counted again, over the limit
        with pytest.raises(LimitExceeded):
            await store.take_slot("concurrent_calls", 2, "third", 30)
    finally:
        await store.close()


async def test_a_hung_redis_is_a_failed_one_the_call_is_admitted_by_the_process_count_within_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis that accepts connections and never answers must not hold a new call at the door."""

    async def never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads until the client gives up, answers nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = RedisWindows(f"redis://127.0.0.1:{port}/0", "open", timeout_secs=0.3)
    limits = DeploymentLimits(1, 10, 10, shared=hung)
    try:
        with caplog.at_level(logging.WARNING, logger="voxpipe.security"):
            started = time.monotonic()
            slot = await limits.admit_call("198.51.100.7")  # the rate window, then the slot: each times out
            assert time.monotonic() - started < 2.0
            with pytest.raises(LimitExceeded, match="concurrent_calls"):
                await limits.admit_call(None)
            await slot.release()
        assert len([r for r in caplog.records if "shared limits unavailable" in r.getMessage()]) == 1
    finally:
        await limits.close()
        server.close()


@pytest.mark.timeout(180)
async def test_voxpipe_serve_with_two_workers_admits_the_concurrent_calls_once(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 — the fixture, by name
) -> None:
    """Real ``voxpipe serve --workers 2`` processes, Twilio played by the simulator: eight calls at once, the
    kernel spreading them over the workers, and ``concurrent_calls: 2`` admits two in all (counted per
    process, two workers would admit up to four). When they end, the next call is admitted."""
    with _serve(tmp_path, redis_url, workers=2, extra="limits: {concurrent_calls: 2}\n") as (port, _):
        async with contextlib.AsyncExitStack() as calls:
            callers = [await calls.enter_async_context(_caller(port, f"CA-slot-{n}")) for n in range(8)]
            deadline = time.monotonic() + 30
            while sum(call.closed.is_set() for call in callers) < 6:
                assert time.monotonic() < deadline, "the calls beyond the limit were not refused"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # the admitted two stay up
            refused = [call for call in callers if call.closed.is_set()]
            assert len(refused) == 6
            assert all(call.close_code == 1013 and "concurrent_calls" in call.close_reason for call in refused)
        _wait_for(lambda: _redis_held(redis_url, "desk"), 0)  # the two ended: their slots were given back
        async with _caller(port, "CA-slot-after") as after:
            await asyncio.sleep(1.5)
            assert not after.closed.is_set()
