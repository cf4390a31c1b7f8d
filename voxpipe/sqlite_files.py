"""SQLite files shared by the processes of one host (records, sessions, limits): opened in WAL mode, safely when
every process opens a new file at the same moment (``voxpipe serve --workers N`` starting)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

WAL_ATTEMPTS = 100
WAL_RETRY_SECS = 0.02


def connect_wal(path: Path, **options: Any) -> sqlite3.Connection:
    """A connection to ``path`` (made if missing) in WAL mode; ``options`` go to ``sqlite3.connect``.

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once, without
    waiting out the connection's busy timeout, to a connection that asks while another one holds that lock. So a
    refusal is tried again, for up to two seconds; once switched, the file stays in WAL mode and the switch is a
    no-op.
    """
    db = sqlite3.connect(path, **options)
    try:
        for _ in range(WAL_ATTEMPTS - 1):
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return db
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(WAL_RETRY_SECS)
        db.execute("PRAGMA journal_mode=WAL")  # the last try: its refusal is the caller's
        return db
    except BaseException:
        db.close()
        raise
