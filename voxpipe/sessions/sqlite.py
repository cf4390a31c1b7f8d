"""The default ``SessionStore``: one SQLite file, safe for several server processes sharing it.

Each message is one row keyed by ``(call_id, seq)``; an append runs in a ``BEGIN IMMEDIATE`` transaction
that checks the stored count first, so two writers (threads or processes) can never both take a ``seq``.
SQLite calls run on one worker thread per store, off the event loop.

Bounded: sessions idle longer than ``ttl_secs`` are purged when the file opens and then every
``purge_every_secs`` while the store is written (a long-running server does not grow forever), and one
conversation may hold at most ``max_history_bytes`` (``HistoryTooLarge`` beyond, nothing written).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from voxpipe.sessions.base import MAX_HISTORY_BYTES, Conflict, HistoryTooLarge, Message, Session
from voxpipe.sqlite_files import connect_wal

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    call_id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
"""


class SQLiteSessionStore:
    """Sessions in a SQLite file; sessions idle longer than ``ttl_secs`` are ignored and purged."""

    def __init__(
        self,
        path: str | Path,
        ttl_secs: float = 86400,
        *,
        max_history_bytes: int = MAX_HISTORY_BYTES,
        purge_every_secs: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(path)
        self.ttl_secs = ttl_secs
        self.max_history_bytes = max_history_bytes
        self.purge_every_secs = purge_every_secs
        self._clock = clock
        self._purged_at = float("-inf")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxpipe-sqlite")
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = connect_wal(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.executescript(_SCHEMA)
            self._db = db
        if self._clock() - self._purged_at >= self.purge_every_secs:
            self._purge(self._db)
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: work(self._connection()))

    def _purge(self, db: sqlite3.Connection) -> None:
        self._purged_at = self._clock()
        cutoff = self._purged_at - self.ttl_secs
        with _transaction(db):
            db.execute(
                "DELETE FROM messages WHERE call_id IN (SELECT call_id FROM sessions WHERE updated_at < ?)", (cutoff,)
            )
            db.execute("DELETE FROM sessions WHERE updated_at < ?", (cutoff,))

    def _metadata(self, db: sqlite3.Connection, call_id: str) -> dict[str, Any] | None:
        row = db.execute(
            "SELECT metadata FROM sessions WHERE call_id = ? AND updated_at >= ?",
            (call_id, self._clock() - self.ttl_secs),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def _touch(self, db: sqlite3.Connection, call_id: str, metadata: dict[str, Any] | None = None) -> None:
        db.execute(
            "INSERT INTO sessions (call_id, metadata, updated_at) VALUES (?, ?, ?) ON CONFLICT(call_id) DO UPDATE "
            "SET updated_at = excluded.updated_at, metadata = coalesce(?, metadata)",
            (call_id, json.dumps(metadata or {}), self._clock(), None if metadata is None else json.dumps(metadata)),
        )

    async def get(self, call_id: str) -> Session | None:
        def read(db: sqlite3.Connection) -> Session | None:
            metadata = self._metadata(db, call_id)
            if metadata is None:
                return None
            rows = db.execute("SELECT message FROM messages WHERE call_id = ? ORDER BY seq", (call_id,)).fetchall()
            return Session(call_id, [json.loads(row[0]) for row in rows], metadata)

        return await self._run(read)

    async def append(self, call_id: str, messages: Sequence[Message], *, expected: int) -> int:
        encoded = [json.dumps(m, ensure_ascii=False) for m in messages]
        adding = sum(len(text.encode("utf-8")) for text in encoded)

        def write(db: sqlite3.Connection) -> int:
            with _transaction(db):
                if self._metadata(db, call_id) is None:  # absent or expired: start over
                    db.execute("DELETE FROM messages WHERE call_id = ?", (call_id,))
                (actual, stored) = db.execute(
                    "SELECT count(*), coalesce(sum(length(CAST(message AS BLOB))), 0) FROM messages WHERE call_id = ?",
                    (call_id,),
                ).fetchone()
                if actual != expected:
                    raise Conflict(call_id, expected, actual)
                if stored + adding > self.max_history_bytes:
                    raise HistoryTooLarge(call_id, stored + adding, self.max_history_bytes)
                db.executemany(
                    "INSERT INTO messages (call_id, seq, message) VALUES (?, ?, ?)",
                    [(call_id, expected + i, text) for i, text in enumerate(encoded)],
                )
                self._touch(db, call_id)
                return expected + len(encoded)

        return await self._run(write)

    async def update_metadata(self, call_id: str, changes: Mapping[str, Any]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                self._touch(db, call_id, (self._metadata(db, call_id) or {}) | dict(changes))

        await self._run(write)

    async def truncate_last_assistant(self, call_id: str, content: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                rows = db.execute(
                    "SELECT seq, message FROM messages WHERE call_id = ? ORDER BY seq DESC", (call_id,)
                ).fetchall()
                for seq, text in rows:
                    message = json.loads(text)
                    if message.get("role") == "assistant":
                        message["content"] = content
                        db.execute(
                            "UPDATE messages SET message = ? WHERE call_id = ? AND seq = ?",
                            (json.dumps(message, ensure_ascii=False), call_id, seq),
                        )
                        self._touch(db, call_id)
                        return True
                return False

        return await self._run(write)

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            await self._run(shut)
            self._db = None
        self._executor.shutdown(wait=False)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): takes the write lock up front."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")
