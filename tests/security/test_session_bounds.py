"""What one caller (or many) can make the session stores keep is bounded, and history is never cut to fit.

Memory store: at most ``max_sessions`` (least recently written evicted first) and expired sessions swept on
every write. SQLite: expired sessions purged while the server runs, not only when the file opens. Both: a
conversation over ``max_history_bytes`` is refused whole (``HistoryTooLarge``), and the recorder of a live
call logs it once and keeps going with its full context.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_session_backends

from voxpipe.config.models import SessionsConfig
from voxpipe.sessions import (
    HistoryTooLarge,
    MemorySessionStore,
    Session,
    SessionRecorder,
    SessionStore,
    SQLiteSessionStore,
    open_store,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def said(text: str, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": text}


async def test_memory_store_keeps_at_most_max_sessions_evicting_the_least_recently_written() -> None:
    store = MemorySessionStore(max_sessions=100)
    for n in range(1000):
        await store.append(f"CA{n}", [said("hi")], expected=0)
    await store.append("CA900", [said("still here")], expected=1)  # written again: now the most recent
    await store.append("CA-new", [said("hi")], expected=0)

    assert len(store) == 100
    assert await store.get("CA0") is None and await store.get("CA900") is not None
    assert await store.get("CA901") is None  # the least recently written at that moment went first


async def test_memory_store_bounds_the_bytes_of_all_conversations_together() -> None:
    store = MemorySessionStore(max_total_bytes=10_000, max_history_bytes=2_000)
    for n in range(100):
        await store.append(f"CA{n}", [said("x" * 900)], expected=0)

    kept = [n for n in range(100) if await store.get(f"CA{n}") is not None]
    assert kept == list(range(90, 100))  # ten of ~930 bytes fit in 10 000; the most recent stay
    assert store.stored_bytes == sum(len(json.dumps(said("x" * 900))) for _ in kept)


async def test_memory_store_sweeps_expired_sessions_without_anyone_reading_them() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_secs=60, clock=clock)
    for n in range(50):
        await store.append(f"CA{n}", [said("hi")], expected=0)
    clock.now += 61
    await store.append("CA-late", [said("hi")], expected=0)

    assert len(store) == 1


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]


async def test_sqlite_purges_expired_sessions_while_running_not_only_at_open(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteSessionStore(tmp_path / "s.db", ttl_secs=250, purge_every_secs=300, clock=clock)
    for n in range(20):
        await store.append(f"CA{n}", [said("hi"), said("hello", "assistant")], expected=0)
    clock.now += 260  # expired, but the last purge (at open) was 260 s ago: rows still on disk
    await store.append("CA-a", [said("hi")], expected=0)
    assert _rows(tmp_path / "s.db") == 41
    clock.now += 50  # 310 s since the purge at open
    await store.append("CA-b", [said("hi")], expected=0)

    assert _rows(tmp_path / "s.db") == 2  # only CA-a and CA-b, purged by the running store
    await store.close()


redis_url = test_session_backends.redis_url  # a throw-away redis-server (skips if none is installed)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def capped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    config = SessionsConfig(store=request.param, path=str(tmp_path / "s.db"), url=url, max_history_bytes=400)
    store = open_store(config)
    yield store
    await store.close()


async def test_history_over_the_cap_is_refused_whole_with_a_clear_error(capped: SessionStore) -> None:
    turns = [said("I need to change my booking", "user"), said("Sure, what is the booking number?", "assistant")]
    version = await capped.append("CA1", turns, expected=0)
    big = said("x" * 500)

    with pytest.raises(HistoryTooLarge) as refused:
        await capped.append("CA1", [said("it is 42"), big], expected=version)

    assert "over the 400-byte cap (sessions.max_history_bytes); nothing was written" in str(refused.value)
    assert await capped.get("CA1") == Session("CA1", turns, {})  # nothing cut, nothing half-written


async def test_a_reply_cut_to_what_was_heard_frees_its_bytes(capped: SessionStore) -> None:
    await capped.append("CA3", [said("w" * 300, "assistant")], expected=0)
    with pytest.raises(HistoryTooLarge):
        await capped.append("CA3", [said("v" * 100)], expected=1)
    assert await capped.truncate_last_assistant("CA3", "w" * 10)  # the caller barged in early

    assert await capped.append("CA3", [said("v" * 100)], expected=1) == 2


async def test_a_live_call_over_the_cap_logs_once_and_keeps_its_whole_context(
    capped: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    live: list[Any] = [said("hello")]
    recorder = SessionRecorder(capped, Session("CA2"), lambda: live)
    await recorder.sync()
    live += [said("y" * 300, "assistant"), said("z" * 300)]

    with caplog.at_level(logging.ERROR, logger="voxpipe.sessions"):
        await recorder.sync()
        await recorder.flush()

    assert [r.getMessage().count("over the 400-byte cap") for r in caplog.records] == [1]
    assert isinstance(recorder.refused, HistoryTooLarge)
    assert (await capped.get("CA2")).messages == [said("hello")]
    assert [m["content"][:1] for m in live] == ["h", "y", "z"]  # the call's own context is untouched
