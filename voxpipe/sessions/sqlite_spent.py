"""Spent call-binding tokens in the sessions' SQLite file, so the workers of one host refuse a token together.

``voxpipe serve --workers N`` spreads sockets over N processes that share the default SQLite session file: a
token spent in one worker's memory would still open a socket on another. One row per spent token (a digest,
and when it may be forgotten) in ``spent_tokens``; ``INSERT OR IGNORE`` on its primary key lets exactly one
writer win, whichever process it is in. Expired rows are deleted as new tokens are spent. SQLite calls run on
one thread of their own, off the event loop. See ``voxpipe.security.spent_tokens``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from voxpipe.security.spent_tokens import digest
from voxpipe.sqlite_files import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spent_tokens (digest TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS spent_tokens_until ON spent_tokens (until);
"""


class SQLiteSpentTokens:
    """``SpentTokens`` in a SQLite file (the deployment's ``sessions.path``)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxpipe-spent")
        self._db: sqlite3.Connection | None = None

    def _spend(self, key: str, keep_secs: float) -> bool:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_wal(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        now = self._clock()
        self._db.execute("DELETE FROM spent_tokens WHERE until <= ?", (now,))
        inserted = self._db.execute("INSERT OR IGNORE INTO spent_tokens VALUES (?, ?)", (key, now + keep_secs))
        return inserted.rowcount == 1

    async def spend(self, token: str, keep_secs: float) -> bool:
        key = digest(token)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._spend, key, keep_secs)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
            self._db = None
        self._executor.shutdown(wait=False)
