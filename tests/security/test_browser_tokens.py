"""Issue 11, the page attacker: the browser routes serve only a signed session token for the request's own origin.

The server runs under uvicorn; every attempt goes over a real socket or HTTP request, with any headers a
non-browser client can set. A page first gets a token (``POST /token``, for allowed origins only); the token
names the session id the server chose. ``WS /ws`` (cascade calls), ``POST /session`` (OpenAI client secrets)
and ``POST /tools/{tool}`` refuse a request without a valid, unexpired token for its own origin: 401/403, or
the socket closed with 1008 and the reason; each refusal counted in ``voxpipe_refused_total``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.security.test_call_binding import stored_session
from tests.simulators import page_subprotocols
from tests.simulators.server import RunningServer
from tests.test_server import FakeOpenAI, realtime
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.security.browser_access import PAGE_PURPOSE, TOOLS_PURPOSE, BrowserAccess
from voxpipe.security.tokens import Signer
from voxpipe.web.app import create_app
from voxpipe.web.serve import local_signing_secret, loopback_origins

PAGE = "https://app.example.com"
OTHER_PAGE = "https://other.example.com"
EVIL = "https://evil.example.com"
SECRET = b"test-signing-secret-" + b"s" * 32  # tests/conftest.py's VOXPIPE_SIGNING_SECRET

CASCADE = f"""
name: web
agent: {{instructions: Test agent., greeting: Hello from the web agent.}}
vad: {{provider: testkit_vad}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm}}
tts: {{provider: testkit_tts}}
transport: {{browser: {{allowed_origins: ["{PAGE}", "{OTHER_PAGE}"], session_token_secs: 120}}}}
sessions: {{store: sqlite, path: "{{db}}"}}
"""


@pytest.fixture
def server(tmp_path: Path, registry: object) -> Iterator[tuple[RunningServer, FakeOpenAI]]:
    """``/web/`` (a cascade over the page's socket) and ``/rt/`` (realtime on OpenAI: secrets and tools)."""
    openai = FakeOpenAI()
    with RunningServer(openai.app) as fake:
        web = parse_deployment(CASCADE.replace("{db}", str(tmp_path / "s.db")))
        rt = realtime(f"{fake.ws_url}/v1/realtime")
        rt.transport.browser.allowed_origins = [PAGE, OTHER_PAGE]
        with RunningServer(create_app([web, rt], warm_up=False)) as running:
            yield running, openai


def _token(server: RunningServer, name: str, origin: str = PAGE) -> tuple[str, str]:
    """A page's session token and the session id it names, as the page gets them."""
    with httpx.Client(base_url=server.url) as client:
        answer = client.post(f"/{name}/token", headers={"origin": origin})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    lifetime = 120 if name == "web" else 600  # session_token_secs, or its default
    assert body["expires_at"] - time.time() == pytest.approx(lifetime, abs=5)
    return body["token"], body["session_id"]


def _signed(subject: str, *, purpose: str = PAGE_PURPOSE, ttl: float = 60, age: float = 0) -> str:
    """A token signed with the server's own secret (what only a leak of it or a past token could give)."""
    return Signer(SECRET, clock=lambda: time.time() - age).mint(purpose, subject, ttl)


async def _call(server: RunningServer, token: str | None, origin: str | None, start: dict[str, Any]) -> Any:
    """Open ``WS /web/ws`` as a page (or a script) would and send ``start``: the first message the server
    sends back (the call runs), or the close frame (``websockets.frames.Close``) if it closes the socket."""
    protocols = page_subprotocols(token) if token is not None else None
    async with websockets.connect(f"{server.ws_url}/web/ws", origin=origin, subprotocols=protocols) as socket:
        try:
            await socket.send(json.dumps({"event": "start", "start": start}))
            answer = json.loads(await asyncio.wait_for(socket.recv(), 10))
        except websockets.ConnectionClosed as closed:
            return closed.rcvd
        await socket.send(json.dumps({"event": "stop"}))
        await socket.wait_closed()
        return answer


def _refused(server: RunningServer, limit: str) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("voxpipe_refused_total{") and limit in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def test_the_page_flow_gets_a_token_then_a_call_on_the_session_the_server_chose(
    server: tuple[RunningServer, FakeOpenAI], tmp_path: Path
) -> None:
    running, _ = server
    token, session_id = _token(running, "web")
    assert (await _call(running, token, PAGE, {}))["event"] in ("media", "transcript")
    await asyncio.sleep(0.5)
    stored = await stored_session(tmp_path, session_id)
    assert stored.metadata["transport"] == "browser"  # the session the token named, and no other
    # Naming its own session id in start (as an older page did) is accepted: it is the token's.
    assert (await _call(running, token, PAGE, {"sessionId": session_id}))["event"] in ("media", "transcript")


async def test_each_forged_missing_or_misused_token_is_refused_on_the_socket(
    server: tuple[RunningServer, FakeOpenAI], tmp_path: Path
) -> None:
    running, _ = server
    token, session_id = _token(running, "web")
    other_origin_token, _ = _token(running, "web", OTHER_PAGE)
    payload, signature = token.split(".")
    attempts = {
        "no token, spoofed Origin": (None, PAGE, "no session token"),
        "no Origin at all": (token, None, "origin not allowed"),
        "a valid token from another origin": (token, EVIL, "origin not allowed"),
        "token issued to another allowed origin": (other_origin_token, PAGE, "issued to another origin"),
        "expired token": (_signed(f"{session_id} {PAGE}", age=3600), PAGE, "token expired"),
        "tampered token": (payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature, PAGE, "bad"),
        "tools token used for a call": (_signed(f"{session_id} {PAGE}", purpose=TOOLS_PURPOSE), PAGE, "not a"),
        "garbage": ("x" * 5000, PAGE, "malformed"),
    }
    for name, (offered, origin, reason) in attempts.items():
        closed = await _call(running, offered, origin, {})
        assert isinstance(closed, websockets.frames.Close), name
        assert closed.code == 1008 and reason in closed.reason, (name, closed.reason)
    assert await stored_session(tmp_path, session_id) is None  # nothing was opened
    assert _refused(running, 'limit="session_token"') == 6 and _refused(running, 'limit="origin"') == 2


async def test_a_token_replayed_for_another_session_id_never_reaches_that_conversation(
    server: tuple[RunningServer, FakeOpenAI], tmp_path: Path
) -> None:
    running, _ = server
    victim_token, victim = _token(running, "web")
    await _call(running, victim_token, PAGE, {})
    await asyncio.sleep(0.5)
    before = (await stored_session(tmp_path, victim)).messages
    attacker_token, attacker = _token(running, "web")
    closed = await _call(running, attacker_token, PAGE, {"sessionId": victim})
    assert closed.code == 1008 and "sessionId is not the session token's" in closed.reason
    assert (await stored_session(tmp_path, victim)).messages == before and await stored_session(
        tmp_path, attacker
    ) is None


async def test_a_token_opens_one_live_call_at_a_time(server: tuple[RunningServer, FakeOpenAI]) -> None:
    running, _ = server
    token, _ = _token(running, "web")
    protocols = page_subprotocols(token)
    async with websockets.connect(f"{running.ws_url}/web/ws", origin=PAGE, subprotocols=protocols) as first:
        await first.send(json.dumps({"event": "start", "start": {}}))
        await asyncio.wait_for(first.recv(), 10)
        closed = await _call(running, token, PAGE, {})
        assert closed.code == 1008 and "not this stream's to use" in closed.reason
        await first.send(json.dumps({"event": "stop"}))


async def test_session_and_tools_refuse_requests_without_a_valid_token_for_their_origin(
    server: tuple[RunningServer, FakeOpenAI],
) -> None:
    running, openai = server
    token, session_id = _token(running, "rt")
    expired = _signed(f"{session_id} {PAGE}", age=3600)
    async with httpx.AsyncClient(base_url=running.url) as client:

        async def session(origin: str, bearer: str | None) -> httpx.Response:
            headers = {"Origin": origin} | ({"Authorization": f"Bearer {bearer}"} if bearer else {})
            return await client.post("/rt/session", headers=headers)

        spoofed = await session(PAGE, None)  # a script setting Origin: no token
        evil = await session(EVIL, token)
        other = await session(OTHER_PAGE, token)
        stale = await session(PAGE, expired)
        minted = await session(PAGE, token)
        tools_token = minted.json()["tools_token"]

        async def tool(origin: str, bearer: str) -> httpx.Response:
            headers = {"Origin": origin, "Authorization": f"Bearer {bearer}"}
            return await client.post("/rt/tools/get_weather", json={"city": "Paris"}, headers=headers)

        tools = [await tool(PAGE, bearer) for bearer in ("x", token, expired, tools_token[:-3] + "abc")]
        tools_elsewhere = await tool(OTHER_PAGE, tools_token)
        allowed = await tool(PAGE, tools_token)
        refused_token = await client.post("/rt/token", headers={"Origin": EVIL})
    assert [spoofed.status_code, evil.status_code, other.status_code, stale.status_code] == [401, 403, 401, 401]
    assert minted.status_code == 200 and len(openai.requests) == 1  # only the valid one reached OpenAI
    assert [answer.status_code for answer in tools] == [401, 401, 401, 401]
    assert tools_elsewhere.status_code == 401 and allowed.json()["result"] == {"city": "Paris", "temperature_c": 21}
    assert refused_token.status_code == 403
    assert "token expired" in stale.json()["detail"]


async def test_without_the_signing_secret_every_browser_request_is_refused(
    registry: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VOXPIPE_SIGNING_SECRET")
    web = parse_deployment(CASCADE.replace("{db}", str(tmp_path / "s.db")))
    with RunningServer(create_app([web], warm_up=False)) as running:
        async with httpx.AsyncClient(base_url=running.url) as client:
            answer = await client.post("/web/token", headers={"Origin": PAGE})
    assert answer.status_code == 401 and "no signing secret" in answer.json()["detail"]


def test_allowed_origins_are_checked_with_clear_errors(write_yaml: Any) -> None:
    base = CASCADE.replace("{db}", "s.db")
    for bad in ["https://app.example.com/path", "*", "https://*.example.com", "app.example.com", "ftp://x.org"]:
        path = write_yaml(base.replace(f'"{OTHER_PAGE}"', f'"{bad}"'), "bad.yaml")
        with pytest.raises(ConfigError) as problem:
            from voxpipe.config.loader import load_deployment

            load_deployment(path)
        message = str(problem.value)
        assert "bad.yaml:7" in message and "allowed_origins" in message and "http(s)://host[:port]" in message
    good = parse_deployment(base.replace(OTHER_PAGE, "HTTPS://Other.Example.com:8443/"))
    assert good.transport.browser.allowed_origins == [PAGE, "https://other.example.com:8443"]


def test_only_a_loopback_server_allows_its_own_loopback_pages() -> None:
    assert loopback_origins("127.0.0.1", 8000) == [
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
    ]
    assert loopback_origins("0.0.0.0", 8000) == []  # noqa: S104 — the address under test, nothing is bound
    access = BrowserAccess(loopback_origins("localhost", 8000), Signer(SECRET), 60)
    issued = access.issue("http://localhost:8000")
    assert access.check(issued.token, "http://localhost:8000").session_id == issued.session.session_id
    with pytest.raises(Exception, match="origin not allowed"):
        access.issue("http://localhost:9000")  # another local server's page


def test_a_loopback_server_without_a_secret_makes_a_throw_away_one_and_no_other_server_does() -> None:
    environ: dict[str, str] = {}
    assert not local_signing_secret("0.0.0.0", environ) and not environ  # noqa: S104 — only the name is tested
    assert local_signing_secret("127.0.0.1", environ) and len(environ["VOXPIPE_SIGNING_SECRET"]) >= 48
    given = {"VOXPIPE_SIGNING_SECRET": "k" * 40}
    assert not local_signing_secret("localhost", given) and given["VOXPIPE_SIGNING_SECRET"] == "k" * 40
