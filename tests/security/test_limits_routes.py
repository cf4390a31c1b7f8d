"""Issue 11, the vendor bill and capacity: the routes enforce the deployment's ``limits:`` as documented.

Over a limit, an HTTP route answers 429 with ``Retry-After``; a WebSocket is closed with 1013 and the limit's
name as the reason. Every refusal is counted in ``/metrics`` as ``voxpipe_refused_total{limit=...}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.security.test_bounds import UNSIGNED
from tests.simulators import page_subprotocols, page_token
from tests.simulators.server import RunningServer, free_port
from tests.test_server import FakeOpenAI, realtime
from tests.test_session_backends import redis_url  # noqa: F401 — a pytest fixture, by name
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import LimitsConfig
from voxpipe.security.limits import DeploymentLimits, LimitExceeded
from voxpipe.sessions.redis_limits import RedisWindows
from voxpipe.sessions.sqlite_limits import SQLiteWindows
from voxpipe.web.app import create_app

PAGE = "https://voice.example.com"  # the deployment's public_url: an allowed page origin
ORIGIN = {"origin": PAGE}


def _refused(metrics: str, limit: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith("voxpipe_refused_total{") and limit in line)
    return float(line.rsplit(" ", 1)[1])


def test_concurrent_calls_beyond_the_limit_are_closed_with_the_reason(registry: object) -> None:
    app = create_app([parse_deployment(UNSIGNED + "limits: {concurrent_calls: 1}\n")], warm_up=False)
    with TestClient(app) as client:
        page = page_subprotocols(page_token(client, "open", PAGE))
        with client.websocket_connect("/open/media") as first:
            for path, headers, protocols in [
                ("/open/media", {}, []),
                ("/open/relay", {}, []),
                ("/open/ws", ORIGIN, page),
            ]:
                with (
                    client.websocket_connect(path, headers=headers, subprotocols=protocols) as second,
                    pytest.raises(WebSocketDisconnect) as closed,
                ):
                    second.receive_text()
                assert closed.value.code == 1013 and "concurrent_calls" in closed.value.reason
            first.send_text(json.dumps({"event": "connected"}))  # the first call is untouched
        # The first call ended: its slot is free again.
        with client.websocket_connect("/open/media") as again:
            again.send_text(json.dumps({"event": "stop"}))
        assert _refused(client.get("/metrics").text, 'limit="concurrent_calls"') == 3


def test_new_calls_per_client_beyond_the_limit_get_429(registry: object) -> None:
    app = create_app([parse_deployment(UNSIGNED + "limits: {calls_per_minute_per_client: 2}\n")], warm_up=False)
    with TestClient(app) as client:
        answers = [client.post("/open/twiml", data={"CallSid": f"CA{n}", "From": "+15550001111"}) for n in range(3)]
        other_caller = client.post("/open/twiml", data={"CallSid": "CA9", "From": "+15550002222"})
        page = page_subprotocols(page_token(client, "open", PAGE))
        for _ in range(2):
            with client.websocket_connect("/open/ws", headers=ORIGIN, subprotocols=page) as socket:
                socket.send_text(json.dumps({"event": "stop"}))
        with (
            client.websocket_connect("/open/ws", headers=ORIGIN, subprotocols=page) as third,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            third.receive_text()
        page_token(client, "open", PAGE)  # tokens are counted apart from calls: a second one still comes
        tokens = [client.post("/open/token", headers=ORIGIN).status_code for _ in range(2)]
        metrics = client.get("/metrics").text
    assert [a.status_code for a in answers] == [200, 200, 429] and other_caller.status_code == 200
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert closed.value.code == 1013 and "calls_per_minute_per_client" in closed.value.reason
    assert tokens == [429, 429]  # but no third token a minute from one address
    assert _refused(metrics, "calls_per_minute_per_client") == 4


async def test_minted_client_secrets_beyond_the_limit_get_429(registry: object) -> None:
    openai = FakeOpenAI()
    with RunningServer(openai.app) as fake:
        deployment = realtime(f"{fake.ws_url}/v1/realtime")
        deployment.limits = LimitsConfig(minted_secrets_per_minute=2)
        with RunningServer(create_app([deployment], warm_up=False, page_origins=[PAGE])) as server:
            with httpx.Client(base_url=server.url) as sync_client:
                token = page_token(sync_client, "rt", PAGE)
            auth = {"Origin": PAGE, "Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=server.url, headers=auth) as client:
                answers = [await client.post("/rt/session") for _ in range(3)]
                metrics = (await client.get("/metrics")).text
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert len(openai.requests) == 2  # the refused one never reached the vendor
    assert _refused(metrics, "minted_secrets_per_minute") == 1


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_processes_sharing_their_sessions_count_each_clients_calls_together(
    store: str, registry: object, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two servers of one deployment with sessions in one Redis (a fleet) or one SQLite file (the workers of
    a host): the per-client rate is the YAML's figure for all of them, not per process. Another deployment
    on the same store counts its own."""
    if store == "redis":
        sessions = f"sessions: {{store: redis, url: '{request.getfixturevalue('redis_url')}'}}"
    else:
        sessions = f"sessions: {{store: sqlite, path: '{tmp_path / 's.db'}'}}"
    fleet = UNSIGNED.replace("sessions: {store: memory}", sessions) + "limits: {calls_per_minute_per_client: 3}\n"
    one, two = (create_app([parse_deployment(fleet)], warm_up=False) for _ in range(2))
    other = create_app([parse_deployment(fleet.replace("name: open", "name: other"))], warm_up=False)
    with TestClient(one) as first, TestClient(two) as second, TestClient(other) as third:
        form = {"CallSid": "CA1", "From": "+15550003333"}
        answers = [client.post("/open/twiml", data=form).status_code for client in (first, second, first, second)]
        other_caller = second.post("/open/twiml", data={"CallSid": "CA2", "From": "+15550004444"})
        other_deployment = third.post("/other/twiml", data=form)
        metrics = second.get("/metrics").text
    assert answers == [200, 200, 200, 429] and other_caller.status_code == 200
    assert other_deployment.status_code == 200
    assert _refused(metrics, "calls_per_minute_per_client") == 1


async def test_shared_windows_refuse_with_the_wait_and_fall_back_to_the_process_when_redis_fails(
    redis_url: str,  # noqa: F811 — the fixture, by name
) -> None:
    windows = RedisWindows(redis_url, "support")
    try:
        for _ in range(2):
            await windows.take("minted_secrets_per_minute", 2, 60, "")
        with pytest.raises(LimitExceeded) as refused:
            await windows.take("minted_secrets_per_minute", 2, 60, "")
        assert 55 < refused.value.retry_after_secs <= 60
    finally:
        await windows.close()
    down = RedisWindows(f"redis://127.0.0.1:{free_port()}/0", "support")  # nothing listens there
    limits = DeploymentLimits(5, 5, 1, shared=down)
    await limits.admit_secret()  # counted in this process, with a warning
    with pytest.raises(LimitExceeded):
        await limits.admit_secret()
    await down.close()


async def test_sqlite_windows_age_out_and_say_when_to_retry(tmp_path: Path) -> None:
    clock = [1000.0]
    windows = SQLiteWindows(tmp_path / "s.db", "support", clock=lambda: clock[0])
    other = SQLiteWindows(tmp_path / "s.db", "other", clock=lambda: clock[0])  # a deployment on the same file
    try:
        for _ in range(2):
            await windows.take("calls_per_minute_per_client", 2, 60, "198.51.100.7")
            clock[0] += 10
        with pytest.raises(LimitExceeded) as refused:
            await windows.take("calls_per_minute_per_client", 2, 60, "198.51.100.7")
        assert refused.value.retry_after_secs == pytest.approx(40)
        await other.take("calls_per_minute_per_client", 2, 60, "198.51.100.7")
        clock[0] += 41  # the first event left the window
        await windows.take("calls_per_minute_per_client", 2, 60, "198.51.100.7")
    finally:
        await windows.close()
        await other.close()
