"""Call records in PostgreSQL, so a fleet of ``voxpipe serve`` replicas writes to one place.

Same table shape as the SQLite store (one row per call, the record as JSON), with ``started_at`` a real
``timestamptz`` and the record ``jsonb``, so time filters compare instants and ad-hoc SQL can look inside
records. The driver is psycopg 3 (the ``postgres`` extra).

The store keeps one connection (autocommit: each save is its own statement; ``link_recording``, a transaction,
opens one of its own so that no other thread's statement joins it) and opens it again once if the server
dropped it, e.g. after a Postgres restart. The schema is created under an advisory lock, because two replicas
starting together would otherwise race on ``CREATE TABLE IF NOT EXISTS``. Connecting and each statement are
bounded (``CONNECT_TIMEOUT_SECS``, ``STATEMENT_TIMEOUT_MS``): a hung database fails a save with an error
instead of stalling the caller for ever.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from voxpipe.records.model import CallRecord
from voxpipe.records.store import LINK_KEEP, RecordStoreError, with_twilio_recording

CONNECT_TIMEOUT_SECS = 5
STATEMENT_TIMEOUT_MS = 5000
_SCHEMA_LOCK = 0x766F7870  # "voxp": any constant shared by every replica

# Tables in the order every transaction here locks them (a link, then its call's record): creating an index
# locks its table even when the index exists, so a replica starting while links are noted must not wait in the
# other order (a deadlock).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS twilio_recordings (
    call_sid    TEXT PRIMARY KEY,
    call_id     TEXT,
    recording   TEXT,
    noted_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS twilio_recordings_call ON twilio_recordings (call_id);
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    deployment  TEXT NOT NULL,
    experiment  TEXT,
    variant     TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    record      JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_experiment ON calls (experiment, variant);
"""

# The upsert locks the link's row until the transaction ends: of two halves noted at once, the second sees both.
_LINK = """
INSERT INTO twilio_recordings (call_sid, call_id, recording) VALUES (%s, %s, %s)
ON CONFLICT (call_sid) DO UPDATE SET
    call_id = COALESCE(EXCLUDED.call_id, twilio_recordings.call_id),
    recording = COALESCE(EXCLUDED.recording, twilio_recordings.recording),
    noted_at = now()
RETURNING call_id, recording
"""
_LINKED = "SELECT recording FROM twilio_recordings WHERE call_id = %s AND recording IS NOT NULL"

_UPSERT = """
INSERT INTO calls (call_id, deployment, experiment, variant, started_at, record)
VALUES (%s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (call_id) DO UPDATE SET
    deployment = EXCLUDED.deployment, experiment = EXCLUDED.experiment, variant = EXCLUDED.variant,
    started_at = EXCLUDED.started_at, record = EXCLUDED.record
"""


class PostgresRecords:
    """Records in a PostgreSQL database given by a ``postgresql://`` URL (``location`` is it, password masked)."""

    def __init__(self, url: str, location: str):
        try:
            import psycopg
        except ImportError:
            raise RecordStoreError(
                f"record store {location}: PostgreSQL needs psycopg; install voxpipe[postgres]"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self.location = location
        self._conn: Any = None
        conn = self._connection()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECS,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c TimeZone=UTC",
            )
        except self._psycopg.Error as exc:
            raise RecordStoreError(f"record store {self.location}: {exc}") from None

    def _execute(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement; if the connection had been dropped, reconnect and run it once more."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                cursor = conn.execute(query, args)
                return cursor.fetchall() if cursor.description else []
            except self._psycopg.Error as exc:
                dropped = isinstance(exc, self._psycopg.OperationalError) and conn.closed
                if attempt == 2 or not dropped:
                    raise RecordStoreError(f"record store {self.location}: {exc}") from None
        raise AssertionError("unreachable")

    def save(self, record: CallRecord) -> None:
        self._execute(
            _UPSERT,
            (
                record.call_id,
                record.deployment,
                record.experiment,
                record.variant,
                record.started_at,
                record.model_dump_json(),
            ),
        )
        # Then (the save committed): Twilio's recording linked to the call goes back on it. A link noted at the
        # same moment either committed first (and is seen here), or finds the saved record and puts it on itself.
        linked = self._execute(_LINKED, (record.call_id,))
        if linked:
            self._link(record.call_id, linked[0][0])

    def get(self, call_id: str) -> CallRecord | None:
        rows = self._execute("SELECT record::text FROM calls WHERE call_id = %s", (call_id,))
        return CallRecord.model_validate_json(rows[0][0]) if rows else None

    def list(self, since: datetime | None, experiment: str | None) -> list[CallRecord]:
        query, args = "SELECT record::text FROM calls WHERE TRUE", []
        if since is not None:
            query += " AND started_at >= %s"
            args.append(since)
        if experiment is not None:
            query += " AND experiment = %s"
            args.append(experiment)
        rows = self._execute(query + " ORDER BY started_at", tuple(args))
        return [CallRecord.model_validate_json(row[0]) for row in rows]

    def link_recording(self, call_sid: str, call_id: str | None, recording: str | None) -> str | None:
        try:
            with self._connect() as conn, conn.transaction():
                conn.execute("DELETE FROM twilio_recordings WHERE noted_at < now() - %s", (LINK_KEEP,))
                linked_id, url = conn.execute(_LINK, (call_sid, call_id, recording)).fetchone()
                return self._put(conn, linked_id, url) if linked_id is not None and url is not None else None
        except self._psycopg.Error as exc:
            raise RecordStoreError(f"record store {self.location}: {exc}") from None

    def _link(self, call_id: str, recording: str) -> None:
        try:
            with self._connect() as conn, conn.transaction():
                self._put(conn, call_id, recording)
        except self._psycopg.Error as exc:
            raise RecordStoreError(f"record store {self.location}: {exc}") from None

    @staticmethod
    def _put(conn: Any, call_id: str, recording: str) -> str | None:
        """Twilio's ``recording`` onto the record of ``call_id`` (locked until the transaction ends), if saved."""
        row = conn.execute("SELECT record::text FROM calls WHERE call_id = %s FOR UPDATE", (call_id,)).fetchone()
        if row is None:
            return None
        update = "UPDATE calls SET record = %s::jsonb WHERE call_id = %s"
        conn.execute(update, (with_twilio_recording(row[0], recording), call_id))
        return str(call_id)
