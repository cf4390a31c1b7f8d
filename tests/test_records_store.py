"""The record store contract, run against both backends (SQLite and a real PostgreSQL server), and the
ways a fleet uses it: several writers, a dropped connection, an unreachable database, the CLI on top."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.postgres_server import admin_url, fresh_database
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.records.model import CallEvent, CallRecord, FallbackEvent, Recording, TurnRecord, Usage
from voxpipe.records.store import RecordStore, RecordStoreError

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres_admin() -> Iterator[str]:
    with admin_url() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store is opened: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "calls.db")
    return str(request.getfixturevalue("postgres_url"))


def _record(
    call_id: str, started: datetime, *, experiment: str | None = None, variant: str | None = None
) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        deployment="booking",
        mode="cascade",
        started_at=started,
        duration_secs=42.5,
        caller_id="+15550100",
        experiment=experiment,
        variant=variant,
        turns=[TurnRecord(index=1, heard="book a table", reply="Booked.", voice_to_voice_ms=812.5)],
        usage=[Usage(role="llm", provider="openai", model="gpt-4o-mini", text_input_tokens=120, cost_usd=0.00042)],
        fallbacks=[FallbackEvent(role="tts", from_provider="a", to_provider="b", reason="HTTP 503", at_secs=3.2)],
        errors=["tts a: HTTP 503"],
    )


def test_a_record_comes_back_whole(target: str) -> None:
    record = _record("CA1", NOW, experiment="e", variant="fast")
    RecordStore(target).save(record)
    assert RecordStore(target).list() == [record]


def test_saving_a_call_again_replaces_its_record(target: str) -> None:
    store = RecordStore(target)
    store.save(_record("CA1", NOW))
    updated = _record("CA1", NOW, experiment="e", variant="slow").model_copy(update={"duration_secs": 90.0})
    store.save(updated)
    assert store.list() == [updated]
    assert store.list(experiment="e") == [updated]


def test_a_record_is_found_by_call_id(target: str) -> None:
    store = RecordStore(target)
    store.save(_record("CA1", NOW))
    assert store.get("CA1") == _record("CA1", NOW) and store.get("CA2") is None


def test_a_later_connection_of_a_call_continues_its_record() -> None:
    """A reconnect (or a caller back from a warm transfer) adds to the call's record: nothing is replaced."""
    first = _record("CA1", NOW)
    second = _record("CA1", NOW + timedelta(seconds=60)).model_copy(
        update={"events": [CallEvent(kind="transfer", at_secs=1.0, mode="warm", answered=False)]}
    )
    joined = second.continuing(first)
    assert joined.started_at == NOW and joined.duration_secs == 60 + 42.5
    assert [t.index for t in joined.turns] == [1, 2] and joined.cost_usd == 2 * first.cost_usd
    assert [f.at_secs for f in joined.fallbacks] == [3.2, 63.2] and joined.events[0].at_secs == 61.0
    assert len(joined.errors) == 2


def test_a_later_connection_keeps_its_own_recording_beside_the_earlier_ones() -> None:
    """Each connection's WAV stays on the joined record, in order, with its start on the call's clock and the
    record's turns its audio holds."""
    first = _record("CA1", NOW).model_copy(update={"recordings": [Recording(location="file:///r/a.wav", turns=[1])]})
    second = _record("CA1", NOW + timedelta(seconds=60)).model_copy(
        update={"recordings": [Recording(location="file:///r/b.wav", turns=[1])]}
    )
    third = _record("CA1", NOW + timedelta(seconds=90))  # a connection not recorded (none of its own)
    joined = third.continuing(second.continuing(first))
    assert joined.recordings == [
        Recording(location="file:///r/a.wav", offset_secs=0.0, turns=[1]),
        Recording(location="file:///r/b.wav", offset_secs=60.0, turns=[2]),
    ]
    assert [t.index for t in joined.turns] == [1, 2, 3]


def _old_row(target: str, call_id: str, started: datetime, recording: str) -> None:
    """A row as voxpipe wrote it before each connection kept its own recording: ``recording``, one location."""
    old = json.loads(_record(call_id, started).model_dump_json(exclude={"recordings"})) | {"recording": recording}
    row = (call_id, "booking", None, None, started.isoformat(), json.dumps(old))
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as db:
            db.execute("INSERT INTO calls VALUES (%s, %s, %s, %s, %s, %s::jsonb)", row)
    else:
        with sqlite3.connect(target) as db:
            db.execute("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?)", row)


def test_an_old_record_with_one_recording_loads_lists_and_joins(
    target: str, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    store = RecordStore(target)  # the table exists, as in a database of an earlier version
    started = datetime.now(UTC) - timedelta(minutes=5)
    _old_row(target, "CA-old", started, "file:///r/CA-old.wav")
    [loaded] = store.list()
    assert loaded.recordings == [Recording(location="file:///r/CA-old.wav", turns=[1])]
    assert store.get("CA-old") == loaded
    table = run_cli("calls", "--records", target, env={"COLUMNS": "300"})
    assert table.returncode == 0, table.stderr
    assert "file:///r/CA-old.wav" in table.stdout
    listing = run_cli("calls", "--json", "--records", target)
    assert [r["location"] for r in json.loads(listing.stdout)["recordings"]] == ["file:///r/CA-old.wav"]
    # the caller reconnects after the upgrade: the old connection's recording stays, the new one follows it
    later = _record("CA-old", started + timedelta(seconds=30)).model_copy(
        update={"recordings": [Recording(location="file:///r/CA-old-2.wav", turns=[1])]}
    )
    store.save(later.continuing(loaded))
    [joined] = store.list()
    assert [(r.location, r.offset_secs, r.turns) for r in joined.recordings] == [
        ("file:///r/CA-old.wav", 0.0, [1]),
        ("file:///r/CA-old-2.wav", 30.0, [2]),
    ]
    table = run_cli("calls", "--records", target, env={"COLUMNS": "300"})
    assert "file:///r/CA-old.wav" in table.stdout and "file:///r/CA-old-2.wav (+30.0 s)" in table.stdout


def test_listing_is_oldest_first_and_filters_by_instant_and_experiment(target: str) -> None:
    store = RecordStore(target)
    paris = timezone(timedelta(hours=2))
    store.save(_record("late", NOW + timedelta(hours=1), experiment="e", variant="a"))
    store.save(_record("early-paris", (NOW - timedelta(hours=1)).astimezone(paris), experiment="e", variant="b"))
    store.save(_record("middle", NOW, experiment="other", variant="a"))
    assert [r.call_id for r in store.list()] == ["early-paris", "middle", "late"]
    # 12:30+02:00 is 10:30 UTC: before NOW. A text comparison of local times would get this wrong.
    assert [r.call_id for r in store.list(since=NOW - timedelta(minutes=30))] == ["middle", "late"]
    assert [r.call_id for r in store.list(since=NOW.astimezone(paris))] == ["middle", "late"]
    assert [r.call_id for r in store.list(experiment="e")] == ["early-paris", "late"]
    assert [r.call_id for r in store.list(since=NOW, experiment="e")] == ["late"]
    assert store.list(experiment="none") == []


def test_replicas_writing_at_once_all_land(target: str) -> None:
    """Eight stores opened at the same moment on an empty database (replicas starting together) race on
    creating the schema, then each saves its calls; one reader sees every call."""
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def replica(n: int) -> None:
        try:
            barrier.wait()
            store = RecordStore(target)
            for i in range(5):
                store.save(_record(f"r{n}-{i}", NOW + timedelta(seconds=n * 5 + i)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(RecordStore(target).list()) == 40


def test_a_dropped_connection_is_opened_again(postgres_url: str, postgres_admin: str) -> None:
    import psycopg

    store = RecordStore(postgres_url)
    store.save(_record("before", NOW))
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_admin, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    assert killed == (1,)
    store.save(_record("after", NOW + timedelta(seconds=1)))
    assert [r.call_id for r in store.list()] == ["before", "after"]


def test_an_unreachable_database_fails_fast_and_never_shows_the_password() -> None:
    url = "postgresql://voxpipe:s3cret-pw@127.0.0.1:9/calls"
    with pytest.raises(RecordStoreError) as caught:
        RecordStore(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql://voxpipe:***@127.0.0.1:9/calls" in message


def test_the_location_masks_the_password(postgres_url: str, tmp_path: Path) -> None:
    location = RecordStore(postgres_url).location
    password = urlsplit(postgres_url).password  # CI's role has one; a throw-away server trusts
    assert location.endswith("@" + postgres_url.rsplit("@", 1)[1])
    assert password is None or (password not in location and ":***@" in location)
    assert RecordStore(tmp_path / "calls.db").location == str(tmp_path / "calls.db")
    assert RecordStore(tmp_path / "calls.db").path == tmp_path / "calls.db"
    assert RecordStore(postgres_url).path is None


def test_calls_and_report_read_either_store(target: str, run_cli: Callable[..., Any], tmp_path: Path) -> None:
    store = RecordStore(target)
    for i, variant in enumerate(["a", "a", "b", "b"]):
        store.save(_record(f"CA{i}", datetime.now(UTC) - timedelta(minutes=i), experiment="exp", variant=variant))
    listing = run_cli("calls", "--since", "1h", "--json", "--records", target)
    assert listing.returncode == 0, listing.stderr
    assert sorted(json.loads(line)["call_id"] for line in listing.stdout.splitlines()) == ["CA0", "CA1", "CA2", "CA3"]
    report = run_cli("report", "--experiment", "exp", "--json", env={"VOXPIPE_RECORDS": target}, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert {s["variant"]: s["calls"] for s in json.loads(report.stdout)} == {"a": 2, "b": 2}


def test_the_cli_says_which_store_is_unreachable_without_a_traceback(run_cli: Callable[..., Any]) -> None:
    result = run_cli("calls", env={"VOXPIPE_RECORDS": "postgresql://ops:hunter22@127.0.0.1:9/calls"})
    assert result.returncode == 1
    assert "error: record store postgresql://ops:***@127.0.0.1:9/calls" in result.stderr
    assert "hunter22" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


DEPLOYMENT = """name: booking
agent: {instructions: You take bookings.}
stt: {provider: testkit_stt}
llm: {provider: testkit_llm}
tts: {provider: testkit_tts}
"""


def test_a_deployment_names_its_record_store(env: Callable[..., dict[str, str]]) -> None:
    environ = env(DATABASE_URL="postgresql://voxpipe:pw@db:5432/calls")
    deployment = parse_deployment(DEPLOYMENT + "records:\n  store: postgres\n  url: ${DATABASE_URL}\n", environ=environ)
    assert deployment.records.target() == "postgresql://voxpipe:pw@db:5432/calls"
    assert parse_deployment(DEPLOYMENT).records.target() is None  # $VOXPIPE_RECORDS, then voxpipe-calls.db
    assert parse_deployment(DEPLOYMENT + "records: {path: /data/calls.db}\n").records.target() == "/data/calls.db"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ("{store: postgres, url: 'postgresql://u:pw@db/calls'}", "a secret must come from the environment"),
        ("{store: postgres}", "store: postgres needs url: a postgresql:// URL"),
        ("{store: mysql}", "'mysql' is not allowed (allowed: sqlite, postgres)"),
    ],
)
def test_a_wrong_records_section_names_line_and_key(records: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_deployment(DEPLOYMENT + f"records: {records}\n")
    problem = str(caught.value)
    assert message in problem and "records" in problem and ":6:" in problem, problem


def test_voxpipe_call_saves_where_the_deployment_says(
    postgres_url: str, write_yaml: Callable[..., Path], run_cli: Callable[..., Any], repo_root: Path
) -> None:
    config = write_yaml(DEPLOYMENT + "records:\n  store: postgres\n  url: ${DATABASE_URL}\n")
    speech = repo_root / "benchmarks" / "corpus" / "heart" / "open-sunday.wav"
    env = {"DATABASE_URL": postgres_url, "VOXPIPE_RECORDS": "/nonexistent/dir/calls.db"}
    result = run_cli("call", str(config), "--input", str(speech), "--json", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    [record] = RecordStore(postgres_url).list()
    assert record.deployment == "booking" and len(record.turns) == 1
