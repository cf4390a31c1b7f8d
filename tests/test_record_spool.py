"""A call's record outlives an outage of its store (voxpipe.records.spool).

The store goes down for real: the SQLite file replaced by garbage (a failed disk, a bad restore), or the
PostgreSQL database closed to connections with its sessions cut (a restart, a failover). A record that cannot be
saved when its call ends is retried, then waits in the spool; it reaches the store after the next record the
store takes, or when ``voxpipe serve`` starts again. The served test runs relay calls end to end: the caller
notices nothing of the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.simulators.server import RunningServer
from tests.test_records_store import postgres_admin, postgres_url, target  # noqa: F401 — the store fixtures
from tests.test_relay_recordings import record, relay_call
from voxpipe.config.loader import parse_deployment
from voxpipe.records import spool as spool_module
from voxpipe.records.model import CallRecord
from voxpipe.records.spool import RecordKeeper, RecordSpool, spool_path
from voxpipe.records.store import RecordStore, is_postgres_url
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def store_down(store: RecordStore, admin_url: str | None = None) -> Iterator[None]:
    """The store fails for real while inside: its SQLite file garbage, or its PostgreSQL database refusing
    connections with the open ones cut."""
    if store.path is not None:
        names = [store.path.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]  # SQLite's files only
        files = [store.path.with_name(name) for name in names if store.path.with_name(name).is_file()]
        for path in files:
            path.rename(path.with_name(path.name + ".aside"))
        store.path.write_bytes(b"not a database" * 100)
        try:
            yield
        finally:
            store.path.unlink()
            for path in files:
                path.with_name(path.name + ".aside").rename(path)
        return
    import psycopg

    database = store.location.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "RETRY_DELAYS_SECS", (0.01, 0.02))


@pytest.fixture
def logged() -> Iterator[list[str]]:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    logger.remove(sink)


async def test_records_wait_while_the_store_is_down_and_follow_the_next_saved(
    target: str,  # noqa: F811
    request: pytest.FixtureRequest,
    tmp_path: Path,
    quick_retries: None,
    logged: list[str],
) -> None:
    store = RecordStore(target)
    spool = RecordSpool(tmp_path / "spool.jsonl")
    keeper = RecordKeeper(store.save, spool)
    admin = request.getfixturevalue("postgres_admin") if is_postgres_url(target) else None
    with store_down(store, admin):
        await keeper.keep(record("VX1"))  # never raises
        await keeper.keep(record("VX2"))
    assert spool.waiting() == 2
    assert store.list() == []
    assert sum("its record not saved" in line for line in logged) == 4  # two retries each
    assert any(f"the record waits in {spool.path}" in line for line in logged), logged
    await keeper.keep(record("VX3"))  # the store is back: the spool follows, oldest first
    assert [r.call_id for r in store.list()] == ["VX1", "VX2", "VX3"]
    assert spool.waiting() == 0
    await keeper.keep(record("VX4"))  # an empty spool adds nothing
    assert len(store.list()) == 4


def test_a_drain_stops_at_the_first_refusal_and_keeps_the_rest_in_order(tmp_path: Path, logged: list[str]) -> None:
    spool = RecordSpool(tmp_path / "spool.jsonl")
    for call_id in ("VX1", "VX2", "VX3"):
        spool.add(record(call_id))
    with spool.path.open("ab") as file:
        file.write(b'{"not": "a record"}\n')
    saved: list[str] = []

    def save(kept: CallRecord) -> None:
        if kept.call_id == "VX2" and not saved[1:]:
            saved.append("refused")
            raise spool_module.RecordStoreError("record store x: down")
        saved.append(kept.call_id)

    assert spool.drain(save) == 1
    assert spool.waiting() == 3  # VX2, VX3 and the stray line, in order
    assert spool.drain(save) == 3
    assert saved == ["VX1", "refused", "VX2", "VX3"]
    assert spool.waiting() == 0
    assert any("not a call record was dropped" in line for line in logged), logged


async def test_a_record_that_can_be_neither_saved_nor_spooled_is_logged_whole(
    tmp_path: Path, quick_retries: None, logged: list[str]
) -> None:
    def down(_: CallRecord) -> None:
        raise spool_module.RecordStoreError("record store x: down")

    lost = record("VX1")
    await RecordKeeper(down, RecordSpool(tmp_path / "no such folder" / "spool.jsonl")).keep(lost)
    assert any("could be neither saved" in line and lost.model_dump_json() in line for line in logged), logged


def test_the_spool_of_a_sqlite_store_is_beside_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(spool_module.SPOOL_VARIABLE, raising=False)
    assert spool_path(RecordStore(tmp_path / "calls.db")) == tmp_path / "calls.db.spool.jsonl"
    monkeypatch.setenv(spool_module.SPOOL_VARIABLE, str(tmp_path / "elsewhere.jsonl"))
    assert spool_path(RecordStore(tmp_path / "calls.db")) == tmp_path / "elsewhere.jsonl"


# ------------------------------------------------------------------------------------------------ served


def _relay_app(tmp_path: Path, records: RecordStore) -> Any:
    from tests.test_conversation_relay import DEPLOYMENT, TOKEN

    deployment = parse_deployment(
        DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")), environ={"TWILIO_AUTH_TOKEN": TOKEN}
    )
    return create_app([deployment], records=records, warm_up=False)


async def _until(condition: Any, what: str) -> None:
    for _ in range(200):
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_a_call_ending_while_the_store_is_down_is_saved_after_the_next_call_or_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(spool_module.SPOOL_VARIABLE, raising=False)
    records = RecordStore(tmp_path / "calls.db")
    spool = RecordSpool(spool_path(records))
    with RunningServer(_relay_app(tmp_path, records)) as server:
        with store_down(records):
            first = await relay_call(server, "CA" + "1" * 32)  # the caller hears the reply as ever
            await _until(lambda: spool.waiting() == 1, "the record spooled")
        assert records.get(first) is None
        second = await relay_call(server, "CA" + "2" * 32)  # the store is back: this record takes the spool
        await _until(lambda: records.get(second) is not None and spool.waiting() == 0, "the spool saved")
        assert records.get(first).turns[0].reply == "We are open nine to five."
        with store_down(records):
            last = await relay_call(server, "CA" + "3" * 32)
            await _until(lambda: spool.waiting() == 1, "the last record spooled")
    with RunningServer(_relay_app(tmp_path, records)):  # (the store is back) a restart saves what waited
        await _until(lambda: records.get(last) is not None and spool.waiting() == 0, "the spool saved at start")


async def test_a_start_does_not_wait_for_a_locked_store_to_take_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds the SQLite file's write lock as the server starts with a record spooled (a save
    then waits up to 10 s for it): the server serves a call at once, and once the lock is let go both records,
    the spooled one and the call's, reach the store."""
    monkeypatch.delenv(spool_module.SPOOL_VARIABLE, raising=False)
    records = RecordStore(tmp_path / "calls.db")
    records.list()  # the file and its table exist
    spool = RecordSpool(spool_path(records))
    spool.add(record("VX-waiting"))
    locker = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        starting = time.monotonic()
        with RunningServer(_relay_app(tmp_path, records)) as server:
            call = await relay_call(server, "CA" + "4" * 32)  # the caller hears the reply as ever
            assert time.monotonic() - starting < 9.0  # before the spooled save's wait for the lock (10 s) ends
            locker.rollback()
            await _until(lambda: records.get(call) is not None, "the call's record saved")
            await _until(lambda: records.get("VX-waiting") is not None and spool.waiting() == 0, "the spool saved")
    finally:
        locker.close()
