"""Where call records live: one row per call, the record as JSON, indexed for listing and experiments.

``RecordStore(target)`` picks the backend from ``target``:

- a file path (the default ``voxpipe-calls.db`` in the working directory): SQLite, embedded, nothing to run.
  Several processes on one machine can share the file (WAL), which is enough for ``voxpipe serve`` on one host.
- a ``postgresql://`` (or ``postgres://``) URL: PostgreSQL (``voxpipe.records.postgres``), so that every
  replica of a fleet writes to one place and ``voxpipe calls`` / ``report`` read the whole fleet's calls.

With no target, ``$VOXPIPE_RECORDS`` (a path or a URL) decides, then the default file. A deployment can name
its store in YAML (``records: {store: postgres, url: ${DATABASE_URL}}``); ``RecordsConfig.target`` turns that
into the same target string. A URL's password is never printed: ``location`` masks it.

Beside the records, each backend keeps Twilio's recordings of calls (``link_recording``): a ConversationRelay
call is recorded by Twilio, whose callback may come before or after the call's record is saved, and a record
may be saved again later (a caller back from a transfer, a transfer's outcome). Every save keeps the
recording linked to its call, so no writer, in any order, loses it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from voxpipe.records.model import CallRecord, Recording
from voxpipe.sqlite_files import connect_wal

DEFAULT_PATH = "voxpipe-calls.db"
POSTGRES_SCHEMES = ("postgresql", "postgres")
#: How long half of a Twilio recording's link (the record's id, or the recording's URL) waits for the other:
#: Twilio posts its callback minutes after the call ends; a half older than this never gets its other half.
LINK_KEEP = timedelta(days=1)


class RecordStoreError(Exception):
    """The record store cannot be opened or reached; the message names it (password masked) and why."""


class RecordBackend(Protocol):
    """What a backend implements; ``RecordStore`` adds the choice of backend and nothing else."""

    def save(self, record: CallRecord) -> None: ...

    def get(self, call_id: str) -> CallRecord | None: ...

    def list(self, since: datetime | None, experiment: str | None) -> list[CallRecord]: ...

    def link_recording(self, call_sid: str, call_id: str | None, recording: str | None) -> str | None: ...


def with_twilio_recording(record_json: str, location: str) -> str:
    """A stored record (JSON) with Twilio's recording of the call among its recordings: one file of the whole
    call (offset 0, every turn of the record), whatever connections the record joins."""
    record = CallRecord.model_validate_json(record_json)
    whole = Recording(location=location, turns=[turn.index for turn in record.turns])
    others = [recording for recording in record.recordings if recording.location != location]
    return record.model_copy(update={"recordings": [*others, whole]}).model_dump_json()


def default_target() -> str:
    return os.environ.get("VOXPIPE_RECORDS") or DEFAULT_PATH


def is_postgres_url(target: str) -> bool:
    return urlsplit(target).scheme in POSTGRES_SCHEMES


def masked(target: str) -> str:
    """``target`` safe to print: a URL's password replaced by ``***``."""
    parts = urlsplit(target)
    if parts.password is None:
        return target
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class RecordStore:
    """Stores and lists ``CallRecord``s in SQLite (a path) or PostgreSQL (a URL); see the module docstring."""

    def __init__(self, target: str | Path | None = None):
        target = str(target) if target else default_target()
        self.location = masked(target)
        if is_postgres_url(target):
            from voxpipe.records.postgres import PostgresRecords

            self._backend: RecordBackend = PostgresRecords(target, self.location)
        else:
            self._backend = SqliteRecords(Path(target))

    @property
    def path(self) -> Path | None:
        """The SQLite file, or ``None`` for PostgreSQL (``location`` names either)."""
        return self._backend.path if isinstance(self._backend, SqliteRecords) else None

    def save(self, record: CallRecord) -> None:
        """Insert ``record``, or replace the record of the same call id (with Twilio's recording of the call,
        if ``link_recording`` linked one to it)."""
        self._backend.save(record)

    def get(self, call_id: str) -> CallRecord | None:
        """The record of ``call_id``, if there is one."""
        return self._backend.get(call_id)

    def list(self, since: datetime | None = None, experiment: str | None = None) -> list[CallRecord]:
        """Records started at or after ``since`` (and of ``experiment``), oldest first."""
        return self._backend.list(since, experiment)

    def link_recording(self, call_sid: str, *, call_id: str | None = None, recording: str | None = None) -> str | None:
        """Note one half of Twilio's recording of call ``call_sid``: the id of the call's record (``call_id``),
        or the recording's URL (``recording``). The halves come apart and in either order; the second puts the
        recording on the record, in the same transaction as its own note, and every later save of the record
        keeps it. Returns the id of the record that now points at the recording, or ``None`` while one half is
        missing (or the record is: it gets the recording when it is saved)."""
        return self._backend.link_recording(call_sid, call_id, recording)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    deployment  TEXT NOT NULL,
    experiment  TEXT,
    variant     TEXT,
    started_at  TEXT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_experiment ON calls (experiment, variant);
CREATE TABLE IF NOT EXISTS twilio_recordings (
    call_sid    TEXT PRIMARY KEY,
    call_id     TEXT,
    recording   TEXT,
    noted_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS twilio_recordings_call ON twilio_recordings (call_id);
"""

_SQLITE_LINK = """
INSERT INTO twilio_recordings VALUES (?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    call_id = COALESCE(excluded.call_id, call_id), recording = COALESCE(excluded.recording, recording),
    noted_at = excluded.noted_at
"""

_LINKED = "SELECT recording FROM twilio_recordings WHERE call_id = ? AND recording IS NOT NULL"


def _utc_text(moment: datetime) -> str:
    """ISO text in UTC, so that SQLite's text comparison orders instants (naive times are taken as UTC)."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


class SqliteRecords:
    """Records in one SQLite file. Safe to use from several processes (WAL); ``started_at`` is UTC ISO text."""

    def __init__(self, path: Path):
        self.path = path
        with self._connect() as db:
            db.executescript(_SQLITE_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One transaction; SQLite's errors (a locked, full, unreadable or corrupt file) come out as
        ``RecordStoreError``, as PostgreSQL's do, so callers handle one kind of failure."""
        try:
            db = connect_wal(self.path, timeout=10)
            try:
                with db:
                    yield db
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"record store {self.path}: {exc}") from None

    def save(self, record: CallRecord) -> None:
        stored = record.model_dump_json()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # a link noted meanwhile waits for this write, and then sees it
            linked = db.execute(_LINKED, (record.call_id,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.call_id,
                    record.deployment,
                    record.experiment,
                    record.variant,
                    _utc_text(record.started_at),
                    with_twilio_recording(stored, linked[0]) if linked else stored,
                ),
            )

    def get(self, call_id: str) -> CallRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return CallRecord.model_validate_json(row[0]) if row else None

    def list(self, since: datetime | None, experiment: str | None) -> list[CallRecord]:
        query, args = "SELECT record FROM calls WHERE 1=1", []
        if since is not None:
            query += " AND started_at >= ?"
            args.append(_utc_text(since))
        if experiment is not None:
            query += " AND experiment = ?"
            args.append(experiment)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY started_at", args).fetchall()
        return [CallRecord.model_validate_json(row[0]) for row in rows]

    def link_recording(self, call_sid: str, call_id: str | None, recording: str | None) -> str | None:
        now = datetime.now(UTC)
        with self._connect() as db:  # one transaction, holding the write lock from its first statement
            db.execute("DELETE FROM twilio_recordings WHERE noted_at < ?", (_utc_text(now - LINK_KEEP),))
            db.execute(_SQLITE_LINK, (call_sid, call_id, recording, _utc_text(now)))
            call_id, recording = db.execute(
                "SELECT call_id, recording FROM twilio_recordings WHERE call_sid = ?", (call_sid,)
            ).fetchone()
            row = db.execute("SELECT record FROM calls WHERE call_id = ?", (call_id,)).fetchone() if call_id else None
            if row is None or recording is None:
                return None
            update = "UPDATE calls SET record = ? WHERE call_id = ?"
            db.execute(update, (with_twilio_recording(row[0], recording), call_id))
        return str(call_id)
