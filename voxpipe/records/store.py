"""Call records in SQLite: one row per call, the record as JSON, indexed for listing and experiments.

The default file is ``voxpipe-calls.db`` in the working directory; ``VOXPIPE_RECORDS`` overrides it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from voxpipe.records.model import CallRecord

DEFAULT_PATH = "voxpipe-calls.db"

_SCHEMA = """
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
"""


def default_path() -> Path:
    return Path(os.environ.get("VOXPIPE_RECORDS", DEFAULT_PATH))


class RecordStore:
    """Stores and lists ``CallRecord``s. Safe to use from several processes (SQLite WAL)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    def save(self, record: CallRecord) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.call_id,
                    record.deployment,
                    record.experiment,
                    record.variant,
                    record.started_at.isoformat(),
                    record.model_dump_json(),
                ),
            )

    def list(self, since: datetime | None = None, experiment: str | None = None) -> list[CallRecord]:
        """Records started at or after ``since`` (and of ``experiment``), oldest first."""
        query, args = "SELECT record FROM calls WHERE 1=1", []
        if since is not None:
            query += " AND started_at >= ?"
            args.append(since.isoformat())
        if experiment is not None:
            query += " AND experiment = ?"
            args.append(experiment)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY started_at", args).fetchall()
        return [CallRecord.model_validate_json(row[0]) for row in rows]
