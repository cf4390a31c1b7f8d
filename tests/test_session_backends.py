"""The Redis and DynamoDB ``SessionStore`` backends, against a real ``redis-server`` and moto in server mode.

Each contract test runs on both. Two store instances with their own connections stand for two ``voxpipe serve``
processes behind a load balancer: they share conversations, and concurrent writers never lose a turn.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import botocore.session
import pytest

from tests.apigw_shim import moto_server
from voxpipe.aws.conversations import ConversationTable, ConversationTooLarge, table_definition
from voxpipe.sessions.base import Conflict, HistoryTooLarge, SessionStore, append_turns
from voxpipe.sessions.dynamodb import DynamoDBSessionStore
from voxpipe.sessions.redis import RedisSessionStore

pytestmark = pytest.mark.timeout(60)

TABLE = "voxpipe-sessions-test"
REDIS = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away ``redis-server`` on a free port of 127.0.0.1 (no persistence)."""
    if REDIS is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server)")
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    with moto_server() as endpoint:
        client = botocore.session.get_session().create_client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",  # noqa: S106 — a made-up credential for a local fake; nothing real
        )
        client.create_table(**table_definition(TABLE))
        yield client


StoreFactory = Callable[..., SessionStore]


@pytest.fixture(params=["redis", "dynamodb"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """``make(ttl_secs=...)``: a new store (its own connection) on the backend under test."""
    made: list[SessionStore] = []

    def make(ttl_secs: float = 600) -> SessionStore:
        if request.param == "redis":
            store: SessionStore = RedisSessionStore(request.getfixturevalue("redis_url"), ttl_secs=ttl_secs)
        else:
            store = DynamoDBSessionStore(TABLE, ttl_secs, client=request.getfixturevalue("dynamodb"))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def call_id(name: str) -> str:
    return f"CA-{name}-{time.monotonic_ns()}"


async def test_conditional_append_and_reads(stores: StoreFactory) -> None:
    store, call = stores(), call_id("append")
    assert await store.get(call) is None
    assert await store.append(call, [{"role": "user", "content": "hi"}], expected=0) == 1
    with pytest.raises(Conflict) as conflict:
        await store.append(call, [{"role": "user", "content": "again"}], expected=0)
    assert conflict.value.actual == 1
    await store.append(call, [{"role": "assistant", "content": "hello there"}], expected=1)
    session = await store.get(call)
    assert session is not None and session.version == 2
    assert session.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]


async def test_two_servers_share_a_call_and_lose_no_turn(stores: StoreFactory) -> None:
    first, second, call = stores(), stores(), call_id("shared")

    async def writer(store: SessionStore, name: str) -> None:
        for n in range(8):
            await append_turns(store, call, [{"role": "user", "content": f"{name}{n}"}], 0)

    await asyncio.gather(writer(first, "a"), writer(second, "b"))
    seen_by_first, seen_by_second = await first.get(call), await second.get(call)
    assert seen_by_first == seen_by_second and seen_by_first is not None
    contents = [m["content"] for m in seen_by_first.messages]
    assert sorted(contents) == sorted([f"a{n}" for n in range(8)] + [f"b{n}" for n in range(8)])
    assert [c for c in contents if c.startswith("a")] == [f"a{n}" for n in range(8)]  # each writer's order kept


async def test_metadata_and_the_cut_of_the_last_assistant_turn(stores: StoreFactory) -> None:
    store, call = stores(), call_id("meta")
    assert not await store.truncate_last_assistant(call, "nothing")
    assert await store.get(call) is None  # a failed cut creates no session
    await store.update_metadata(call, {"transport": "twilio", "caller": "+15550100"})
    await asyncio.gather(*(store.update_metadata(call, {f"k{n}": n}) for n in range(5)))
    await store.append(
        call, [{"role": "assistant", "content": "a long answer"}, {"role": "user", "content": "x"}], expected=0
    )
    assert await store.truncate_last_assistant(call, "a long")
    session = await store.get(call)
    assert session is not None and session.messages[0] == {"role": "assistant", "content": "a long"}
    assert session.metadata == {"transport": "twilio", "caller": "+15550100"} | {f"k{n}": n for n in range(5)}


async def test_redis_expires_idle_sessions(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, ttl_secs=1)
    call = call_id("ttl")
    await store.append(call, [{"role": "user", "content": "hi"}], expected=0)
    assert await store.get(call) is not None
    await asyncio.sleep(1.3)
    assert await store.get(call) is None
    await store.close()


async def test_dynamodb_filters_expired_sessions_and_shares_the_relay_rows(dynamodb: Any) -> None:
    now = [2_000_000.0]
    store = DynamoDBSessionStore(TABLE, 60, client=dynamodb, clock=lambda: now[0])
    call = call_id("ttl")
    await store.append(call, [{"role": "user", "content": "hi"}], expected=0)
    now[0] += 61  # expired: DynamoDB has not deleted the item, but reads must not see it
    assert await store.get(call) is None
    assert await store.append(call, [{"role": "user", "content": "fresh"}], expected=0) == 1
    # The serverless ConversationRelay writes the same rows: a call can move between Lambda and `voxpipe serve`.
    relay = ConversationTable(TABLE, 60, client=dynamodb, clock=lambda: now[0])
    relay.mutate(call, lambda conversation: conversation.messages.append({"role": "assistant", "content": "hey"}))
    session = await store.get(call)
    assert session is not None and [m["content"] for m in session.messages] == ["fresh", "hey"]


def test_stores_need_their_address() -> None:
    with pytest.raises(ValueError, match=r"sessions\.url"):
        RedisSessionStore(None)
    with pytest.raises(ValueError, match=r"sessions\.table"):
        DynamoDBSessionStore("")


async def test_dynamodb_refuses_a_conversation_past_the_item_limit_whole(dynamodb: Any) -> None:
    """DynamoDB's 400 KB item limit: the write is refused with the stores' clear error, nothing is cut, and
    the Lambda relay's table says so by name rather than with DynamoDB's generic ValidationException."""
    store = DynamoDBSessionStore(TABLE, 60, client=dynamodb)
    said = [{"role": "user", "content": "x" * 100_000} for _ in range(3)]
    assert await store.append("CA-big", said, expected=0) == 3
    with pytest.raises(HistoryTooLarge, match="nothing was written"):
        await store.append("CA-big", [{"role": "assistant", "content": "y" * 100_000}], expected=3)
    stored = await store.get("CA-big")
    assert stored is not None and stored.messages == said  # whole, not shortened to fit
    table = ConversationTable(TABLE, 60, client=dynamodb)
    with pytest.raises(ConversationTooLarge, match="DynamoDB's item limit"):
        table.mutate("CA-big", lambda c: c.messages.append({"role": "user", "content": "z" * 100_000}))
