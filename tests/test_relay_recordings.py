"""Twilio's recordings of ConversationRelay calls, linked to the calls' records (issue 18).

Twilio speaks a relay call, so its recording is Twilio's: ``recording.enabled`` puts ``<Start><Recording
recordingStatusCallback=...>`` in the relay TwiML, and Twilio's signed callback brings the recording's URL.
The record store matches it with the call's record whichever comes first (both backends, under contention);
the served app links it end to end with the relay simulator playing Twilio, and refuses forged callbacks.
The Lambda side (TwiML function and DynamoDB) is tests/test_serverless_recordings.py.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.test_conversation_relay import DEPLOYMENT, TOKEN
from tests.test_records_store import postgres_admin, postgres_url, target  # noqa: F401 — the store fixtures
from voxpipe.config.loader import apply_overrides, parse_deployment
from voxpipe.records.model import CallRecord, Recording, TurnRecord
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app

pytestmark = pytest.mark.timeout(120)

PUBLIC = "https://voice.example.com/relay/recording-status"
WRONG_TOKEN = "not-the-token"  # noqa: S105 — a made-up credential: what a forger signs with


def recording_url(call_sid: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/AC{'0' * 32}/Recordings/RE{call_sid[2:]}"


def callback_form(call_sid: str, status: str = "completed") -> dict[str, str]:
    """What Twilio posts to ``recordingStatusCallback`` for a ``<Start><Recording>`` of the call."""
    form = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "RecordingSid": "RE" + call_sid[2:],
        "RecordingUrl": recording_url(call_sid),
        "RecordingStatus": status,
        "RecordingDuration": "7",
        "RecordingChannels": "2",
        "RecordingStartTime": "Mon, 07 Dec 2026 04:50:00 +0000",
        "RecordingSource": "StartCallRecordingTwiML",
        "RecordingTrack": "both",
    }
    if status == "absent":
        form |= {"RecordingUrl": "", "ErrorCode": "16101"}
    return form


def record(call_id: str, turns: int = 1) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        deployment="relay",
        mode="cascade",
        started_at=datetime.now(UTC),
        duration_secs=3.0,
        turns=[TurnRecord(index=i, heard="hello", reply="Hi.") for i in range(1, turns + 1)],
    )


def locations(record: CallRecord | None) -> list[str]:
    """Where the record's recordings are."""
    return [recording.location for recording in record.recordings] if record is not None else []


# ------------------------------------------------------------------------------------------------ the store


def test_the_second_half_links_the_recording_in_either_order(target: str) -> None:  # noqa: F811
    store = RecordStore(target)
    # The call's record first (the session ended), then Twilio's callback: one recording of the whole call.
    store.save(record("VX1"))
    assert store.link_recording("CA1", call_id="VX1") is None
    assert store.link_recording("CA1", recording=recording_url("CA1")) == "VX1"
    assert store.get("VX1").recordings == [Recording(location=recording_url("CA1"), turns=[1])]
    # Twilio's callback first, then the record.
    assert store.link_recording("CA2", recording=recording_url("CA2")) is None
    store.save(record("VX2"))
    assert store.link_recording("CA2", call_id="VX2") == "VX2"
    assert locations(store.get("VX2")) == [recording_url("CA2")]
    # The record saved again without it (a caller back from a transfer: the joined record has two turns now;
    # a transfer's outcome read before the link) keeps it, still the whole call's.
    store.save(record("VX2", turns=2))
    assert store.get("VX2").recordings == [Recording(location=recording_url("CA2"), turns=[1, 2])]
    # Both halves noted before the record is saved at all (a session slow to stop): the save takes it.
    store.link_recording("CA3", recording=recording_url("CA3"))
    assert store.link_recording("CA3", call_id="VX3") is None
    store.save(record("VX3"))
    assert locations(store.get("VX3")) == [recording_url("CA3")]
    # A recording of a call nobody saved a record of changes no record.
    assert store.link_recording("CA9", recording=recording_url("CA9")) is None
    assert [locations(r) for r in store.list()] == [[recording_url(sid)] for sid in ("CA1", "CA2", "CA3")]


def test_halves_noted_at_once_lose_no_link(target: str) -> None:  # noqa: F811
    """Twenty calls, each call's two halves noted and its record saved again (without the recording) by three
    threads at once, each with a store of its own (workers, replicas, one of them starting)."""
    store = RecordStore(target)
    calls = [(f"CA{i:02d}", f"VX{i:02d}") for i in range(20)]
    for _, call_id in calls:
        store.save(record(call_id))
    start = threading.Barrier(3 * len(calls))
    failures: list[BaseException] = []

    def race(work: Any) -> None:
        try:
            start.wait()
            work(RecordStore(target))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    work = []
    for sid, cid in calls:
        work.append(lambda s, sid=sid, cid=cid: s.link_recording(sid, call_id=cid))
        work.append(lambda s, sid=sid: s.link_recording(sid, recording=recording_url(sid)))
        work.append(lambda s, cid=cid: s.save(record(cid)))
    threads = [threading.Thread(target=race, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert {r.call_id: locations(r) for r in store.list()} == {cid: [recording_url(sid)] for sid, cid in calls}


def test_a_half_left_alone_for_a_day_is_forgotten(tmp_path: Path) -> None:
    import sqlite3

    store = RecordStore(tmp_path / "calls.db")
    store.link_recording("CA1", recording=recording_url("CA1"))
    with sqlite3.connect(tmp_path / "calls.db") as db:
        db.execute("UPDATE twilio_recordings SET noted_at = '2026-01-01T00:00:00+00:00'")
    store.link_recording("CA2", recording=recording_url("CA2"))
    with sqlite3.connect(tmp_path / "calls.db") as db:
        assert [row[0] for row in db.execute("SELECT call_sid FROM twilio_recordings")] == ["CA2"]


# ------------------------------------------------------------------------------------------------ the server


@pytest.fixture
def served(tmp_path: Path, registry: object) -> tuple[RunningServer, RecordStore]:
    text = DEPLOYMENT.replace("{db}", str(tmp_path / "s.db"))
    deployment = apply_overrides(
        parse_deployment(text, environ={"TWILIO_AUTH_TOKEN": TOKEN}), {"recording": {"enabled": True}}
    )
    records = RecordStore(tmp_path / "calls.db")
    with RunningServer(create_app([deployment], records=records, warm_up=False)) as running:
        yield running, records


async def post_callback(server: RunningServer, form: dict[str, str], token: str | None = TOKEN) -> int:
    headers = {"X-Twilio-Signature": RequestValidator(token).compute_signature(PUBLIC, form)} if token else {}
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/relay/recording-status", data=form, headers=headers)
    return response.status_code


async def relay_call(server: RunningServer, call_sid: str) -> str:
    """One short relay call of ``call_sid``; the id of its record."""
    simulator = RelaySimulator(f"{server.ws_url}/relay/relay", "wss://voice.example.com/relay/relay", call_sid=call_sid)
    async with simulator as call:
        await call.prompt("what are your hours")
        assert (await call.reply())[0] == "We are open nine to five."
    return simulator.session_id


async def saved(records: RecordStore, call_id: str, recording: str | None = None) -> CallRecord:
    """The call's record once saved (with ``recording``, when one is expected)."""
    for _ in range(100):
        found = await asyncio.to_thread(records.get, call_id)
        if found is not None and (recording is None or locations(found) == [recording]):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record of {call_id} with recording {recording}")


async def test_a_callback_after_the_record_links_the_recording(served: Any, run_cli: Any) -> None:
    server, records = served
    call_sid = "CA" + "a" * 32
    call_id = await relay_call(server, call_sid)
    assert locations(await saved(records, call_id)) == []  # Twilio is still processing the file
    assert await post_callback(server, callback_form(call_sid)) == 204
    linked = await saved(records, call_id, recording_url(call_sid))
    assert linked.turns[0].reply == "We are open nine to five."  # the same record, nothing else changed
    listing = run_cli("calls", "--records", str(records.path), env={"COLUMNS": "400"})
    assert listing.returncode == 0 and recording_url(call_sid) in listing.stdout  # shown like any recording
    checked = run_cli("calls", "--verify", "--records", str(records.path))
    assert checked.returncode == 0 and "no recorded calls to verify" in checked.stdout  # Twilio's: not fetched
    assert "unreadable" not in checked.stderr, checked.stderr


async def test_a_callback_before_the_record_links_it_once_the_record_is_saved(served: Any) -> None:
    server, records = served
    call_sid = "CA" + "b" * 32
    assert await post_callback(server, callback_form(call_sid)) == 204
    call_id = await relay_call(server, call_sid)
    await saved(records, call_id, recording_url(call_sid))


async def test_a_callback_the_store_cannot_take_is_answered_503_and_its_retry_links(served: Any) -> None:
    """The record store fails (its file unreadable: a failed disk, a bad restore): Twilio's callback is answered
    503, so that Twilio may retry it, and the failure is logged; once the store is back, the retry links."""
    from loguru import logger

    server, records = served
    call_sid = "CA" + "e" * 32
    call_id = await relay_call(server, call_sid)
    await saved(records, call_id)
    files = [path for path in records.path.parent.glob(records.path.name + "*") if path.is_file()]
    for path in files:
        path.rename(path.with_name(path.name + ".aside"))
    records.path.write_bytes(b"not a database" * 100)
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="ERROR")
    try:
        assert await post_callback(server, callback_form(call_sid)) == 503
    finally:
        logger.remove(sink)
        records.path.unlink()
        for path in files:
            path.with_name(path.name + ".aside").rename(path)
    assert any(f"Twilio's recording of {call_sid} not linked" in line for line in logged), logged
    assert await post_callback(server, callback_form(call_sid)) == 204  # Twilio's retry
    await saved(records, call_id, recording_url(call_sid))


async def test_forged_unknown_and_absent_callbacks_change_nothing(served: Any) -> None:
    from loguru import logger

    server, records = served
    call_sid = "CA" + "c" * 32
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="INFO")
    try:
        assert await post_callback(server, callback_form(call_sid), token=None) == 403  # unsigned
        assert await post_callback(server, callback_form(call_sid), token=WRONG_TOKEN) == 403  # forged
        forged = callback_form(call_sid)
        signed = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(PUBLIC, forged)}
        forged["RecordingUrl"] = "https://attacker.example/evil.wav"  # signed, then altered
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.post("/relay/recording-status", data=forged, headers=signed)).status_code == 403
        assert await post_callback(server, callback_form(call_sid, "absent")) == 204  # too short: no file
        unknown = "CA" + "d" * 32
        assert await post_callback(server, callback_form(unknown)) == 204  # no such call (yet): noted, harmless
        call_id = await relay_call(server, call_sid)
        await asyncio.sleep(0.5)  # anything still to be linked would be by now
        assert locations(await saved(records, call_id)) == []
        assert [locations(r) for r in await asyncio.to_thread(records.list)] == [[]]
    finally:
        logger.remove(sink)
    assert any("rejected recording-status webhook" in line for line in logged)
    assert any("absent (error 16101)" in line for line in logged)
    assert any(f"{unknown} (7s) waits for the call's record" in line for line in logged)
