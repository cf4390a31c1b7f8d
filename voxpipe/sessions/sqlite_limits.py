"""The ``limits:`` windows and call slots in the sessions' SQLite file, so the workers of one host count together.

``voxpipe serve --workers N`` spreads requests over N processes sharing the default SQLite session file; with
windows in each process's memory, a client would get N times its ``calls_per_minute_per_client``. Here each
event is a row of ``limit_events`` (window name, key, time); one ``BEGIN IMMEDIATE`` transaction drops the
window's events older than it, counts the key's, and adds this one only if the count is under the limit, so
two workers racing never both take the last place. The processes share the host's clock. SQLite calls run on
one thread of their own, off the event loop.

Call slots (``concurrent_calls``) are rows of ``limit_slots`` (name, lease, expiry): taking one drops the
expired leases, counts the live ones and adds this one under the limit, in one such transaction; renewing
pushes its expiry on; releasing deletes it. A worker that dies holding slots stops renewing them, so they
expire. See ``voxpipe.security.limits``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from voxpipe.security.limits import LimitExceeded
from voxpipe.sqlite_files import connect_wal

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_events (name TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS limit_events_by_key ON limit_events (name, key, at);
CREATE INDEX IF NOT EXISTS limit_events_by_time ON limit_events (name, at);
CREATE TABLE IF NOT EXISTS limit_slots (name TEXT NOT NULL, lease TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS limit_slots_by_expiry ON limit_slots (name, expires);
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

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_wal(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        return self._db

    def _transaction(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """``step`` in one ``BEGIN IMMEDIATE`` transaction: no other worker writes in between."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = step(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _take(self, name: str, limit: int, window_secs: float, key: str) -> float | None:
        """``None`` if counted, else the seconds until the oldest event of the key leaves the window."""
        now, window = self._clock(), f"{self._scope}:{name}"

        def step(db: sqlite3.Connection) -> float | None:
            db.execute("DELETE FROM limit_events WHERE name = ? AND at <= ?", (window, now - window_secs))
            count, oldest = db.execute(
                "SELECT COUNT(*), MIN(at) FROM limit_events WHERE name = ? AND key = ?", (window, key)
            ).fetchone()
            if count >= limit:
                return float(oldest) + window_secs - now
            db.execute("INSERT INTO limit_events VALUES (?, ?, ?)", (window, key, now))
            return None

        return self._transaction(step)

    def _take_slot(self, name: str, limit: int, lease: str, ttl_secs: float) -> bool:
        now, slots = self._clock(), f"{self._scope}:{name}"

        def step(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM limit_slots WHERE name = ? AND expires <= ?", (slots, now))
            (held,) = db.execute("SELECT COUNT(*) FROM limit_slots WHERE name = ?", (slots,)).fetchone()
            if held >= limit:
                return False
            db.execute("INSERT INTO limit_slots VALUES (?, ?, ?)", (slots, lease, now + ttl_secs))
            return True

        return self._transaction(step)

    def _renew_slot(self, name: str, lease: str, ttl_secs: float) -> None:
        row = (f"{self._scope}:{name}", lease, self._clock() + ttl_secs)
        self._connection().execute("INSERT OR REPLACE INTO limit_slots VALUES (?, ?, ?)", row)

    def _release_slot(self, lease: str) -> None:
        self._connection().execute("DELETE FROM limit_slots WHERE lease = ?", (lease,))

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        retry = await self._run(self._take, name, limit, window_secs, key)
        if retry is not None:
            raise LimitExceeded(name, retry)

    async def take_slot(self, name: str, limit: int, lease: str, ttl_secs: float) -> None:
        if not await self._run(self._take_slot, name, limit, lease, ttl_secs):
            raise LimitExceeded(name, 1.0)  # no time can be promised: a slot frees when a call ends

    async def renew_slot(self, name: str, lease: str, ttl_secs: float) -> None:
        await self._run(self._renew_slot, name, lease, ttl_secs)

    async def release_slot(self, name: str, lease: str) -> None:
        await self._run(self._release_slot, lease)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=False)
