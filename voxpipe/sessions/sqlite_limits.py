"""The ``limits:`` rate windows in the sessions' SQLite file, so the workers of one host count together.

``voxpipe serve --workers N`` spreads requests over N processes sharing the default SQLite session file; with
windows in each process's memory, a client would get N times its ``calls_per_minute_per_client``. Here each
event is a row of ``limit_events`` (window name, key, time); one ``BEGIN IMMEDIATE`` transaction drops the
window's events older than it, counts the key's, and adds this one only if the count is under the limit, so
two workers racing never both take the last place. The processes share the host's clock. SQLite calls run on
one thread of their own, off the event loop. See ``voxpipe.security.limits``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from voxpipe.security.limits import LimitExceeded

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_events (name TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS limit_events_by_key ON limit_events (name, key, at);
CREATE INDEX IF NOT EXISTS limit_events_by_time ON limit_events (name, at);
"""


class SQLiteWindows:
    """``SharedWindows`` in a SQLite file (the deployment's ``sessions.path``); ``scope`` (the deployment's
    name) keeps the windows of deployments sharing the file apart."""

    def __init__(self, path: str | Path, scope: str, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._scope = scope
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxpipe-limits")
        self._db: sqlite3.Connection | None = None

    def _take(self, name: str, limit: int, window_secs: float, key: str) -> float | None:
        """``None`` if counted, else the seconds until the oldest event of the key leaves the window."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        db, now, window = self._db, self._clock(), f"{self._scope}:{name}"
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM limit_events WHERE name = ? AND at <= ?", (window, now - window_secs))
            count, oldest = db.execute(
                "SELECT COUNT(*), MIN(at) FROM limit_events WHERE name = ? AND key = ?", (window, key)
            ).fetchone()
            if count < limit:
                db.execute("INSERT INTO limit_events VALUES (?, ?, ?)", (window, key, now))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return None if count < limit else float(oldest) + window_secs - now

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        loop = asyncio.get_running_loop()
        retry = await loop.run_in_executor(self._executor, self._take, name, limit, window_secs, key)
        if retry is not None:
            raise LimitExceeded(name, retry)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            self._db = None
        self._executor.shutdown(wait=False)
