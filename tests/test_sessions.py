"""SessionStore backends (memory, SQLite), their factory, and the recorder that keeps a call's context stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxpipe.config.models import SessionsConfig
from voxpipe.sessions import (
    Conflict,
    MemorySessionStore,
    Session,
    SessionRecorder,
    SessionStore,
    SQLiteSessionStore,
    append_turns,
    open_store,
)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    made = MemorySessionStore() if request.param == "memory" else SQLiteSessionStore(tmp_path / "s.db")
    yield made
    await made.close()


async def test_append_get_metadata_and_truncate(store: SessionStore) -> None:
    assert isinstance(store, SessionStore)
    assert await store.get("CA1") is None
    assert await store.append("CA1", [user("hi"), assistant("hello there, how can I help")], expected=0) == 2
    await store.update_metadata("CA1", {"from": "+1555"})
    await store.update_metadata("CA1", {"transport": "twilio"})
    assert await store.truncate_last_assistant("CA1", "hello there")
    session = await store.get("CA1")
    assert session == Session("CA1", [user("hi"), assistant("hello there")], {"from": "+1555", "transport": "twilio"})
    assert session.version == 2
    assert not await store.truncate_last_assistant("nobody", "x")


async def test_conditional_append_refuses_a_stale_writer(store: SessionStore) -> None:
    await store.append("CA1", [user("one")], expected=0)
    with pytest.raises(Conflict) as conflict:
        await store.append("CA1", [user("two")], expected=0)
    assert conflict.value.actual == 1
    assert (await store.get("CA1")).messages == [user("one")]


async def test_concurrent_writers_never_lose_a_turn(store: SessionStore) -> None:
    """Twenty writers that all believe nothing is stored: every turn lands, in some order, none twice."""
    await asyncio.gather(*(append_turns(store, "CA1", [user(f"turn {i}")], 0) for i in range(20)))
    stored = [m["content"] for m in (await store.get("CA1")).messages]
    assert sorted(stored) == sorted(f"turn {i}" for i in range(20))


async def test_expired_sessions_are_gone(tmp_path: Path) -> None:
    for store in (MemorySessionStore(ttl_secs=0.2), SQLiteSessionStore(tmp_path / "ttl.db", ttl_secs=0.2)):
        await store.append("CA1", [user("old")], expected=0)
        time.sleep(0.3)
        assert await store.get("CA1") is None
        assert await store.append("CA1", [user("new")], expected=0) == 1  # a new conversation starts over
        assert (await store.get("CA1")).messages == [user("new")]
        await store.close()


async def test_sqlite_survives_a_restart_and_shares_the_file(tmp_path: Path) -> None:
    first, second = SQLiteSessionStore(tmp_path / "s.db"), SQLiteSessionStore(tmp_path / "s.db")
    await first.append("CA1", [user("hi")], expected=0)
    await append_turns(second, "CA1", [assistant("hello")], 0)  # another process, stale view: retried
    await first.close()
    await second.close()
    reopened = SQLiteSessionStore(tmp_path / "s.db")
    assert (await reopened.get("CA1")).messages == [user("hi"), assistant("hello")]
    await reopened.close()


async def test_recorder_writes_settled_messages_and_cuts_the_last_assistant_turn(store: SessionStore) -> None:
    await store.append("CA1", [user("earlier")], expected=0)
    session = await store.get("CA1")
    live = [*session.messages]
    recorder = SessionRecorder(store, session, lambda: live)
    live += [user("weather?"), tool_call("c1"), tool_result("c1", "IN_PROGRESS")]
    await recorder.sync()
    assert len((await store.get("CA1")).messages) == 2  # neither the tool call nor its pending result yet
    live[-1]["content"] = '{"temp": 20}'
    live.append(assistant("It is twenty degrees and sunny all day."))
    recorder.request_sync()
    await recorder.flush()
    await recorder.truncate_last_assistant("It is twenty degrees")
    stored = (await store.get("CA1")).messages
    assert stored[-3:] == [tool_call("c1"), tool_result("c1", '{"temp": 20}'), assistant("It is twenty degrees")]
    assert live[-1] == assistant("It is twenty degrees")
    live.append(user("thanks"))
    await recorder.truncate_last_assistant("nothing")  # the last message is the caller's: nothing to cut
    await recorder.flush()
    assert (await store.get("CA1")).messages[-1] == user("thanks")


def tool_call(*ids: str, content: str | None = None) -> dict:
    calls = [{"id": i, "type": "function", "function": {"name": "weather", "arguments": "{}"}} for i in ids]
    return {"role": "assistant", "content": content, "tool_calls": calls}


def tool_result(call_id: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


async def test_a_hang_up_while_a_tool_runs_stores_no_unanswered_tool_call(store: SessionStore) -> None:
    """Finding 6: the tool call was stored before its result, so a resumed conversation was invalid."""
    live: list[dict] = []
    recorder = SessionRecorder(store, Session("CA1"), lambda: live)
    live += [user("weather?"), tool_call("c1"), tool_result("c1", "IN_PROGRESS")]
    recorder.request_sync()
    await recorder.flush()  # the caller hung up: the tool never answered
    assert (await store.get("CA1")).messages == [user("weather?")]

    # Two calls in one message, one answered: still unanswered. What came after is kept at the end.
    live[:] = [user("weather?"), tool_call("a", "b", content="Let me check."), tool_result("a", "20"), user("hello?")]
    recorder = SessionRecorder(store, Session("CA2"), lambda: live)
    await recorder.sync()
    assert (await store.get("CA2")).messages == [user("weather?")]
    await recorder.flush()
    assert (await store.get("CA2")).messages == [user("weather?"), assistant("Let me check."), user("hello?")]


def test_factory(tmp_path: Path) -> None:
    assert isinstance(open_store(SessionsConfig(store="memory")), MemorySessionStore)
    sqlite = open_store(SessionsConfig(store="sqlite", path=str(tmp_path / "x.db"), ttl_secs=60))
    assert isinstance(sqlite, SQLiteSessionStore) and sqlite.ttl_secs == 60
    with pytest.raises(ValueError, match=r"sessions\.url is required"):
        open_store(SessionsConfig(store="redis"))
    with pytest.raises(ValueError, match=r"sessions\.table is required"):
        open_store(SessionsConfig(store="dynamodb"))
