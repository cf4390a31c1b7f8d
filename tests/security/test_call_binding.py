"""Issue 11, the replayer: a captured signed handshake opens no other call's socket or conversation.

Twilio signs a WebSocket handshake over the fixed stream URL, so the attacker here always has a valid
``X-Twilio-Signature``. What they lack is the token the signed ``/twiml`` webhook put into the TwiML for one
CallSid (``voxpipe.security.call_binding``). The app is served by uvicorn; the attacks go over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from loguru import logger
from twilio.request_validator import RequestValidator

from tests.simulators import webhook_parameters
from tests.simulators.server import RunningServer
from tests.test_conversation_relay import DEPLOYMENT as RELAY_DEPLOYMENT
from tests.test_session_backends import redis_url  # noqa: F401 — a pytest fixture, by name
from tests.test_twilio_media import TOKEN, deployment, simulator
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import SessionsConfig
from voxpipe.pipeline.host import CallBookkeeping, CallHost
from voxpipe.providers.registry import Registry
from voxpipe.security.call_binding import PARAMETER, CallBinding
from voxpipe.security.spent_tokens import MemorySpentTokens
from voxpipe.security.tokens import Signer
from voxpipe.sessions import SQLiteSessionStore
from voxpipe.sessions.redis_spent import RedisSpentTokens
from voxpipe.sessions.sqlite_spent import SQLiteSpentTokens
from voxpipe.web.app import create_app

PUBLIC = "https://voice.example.com"
CALL_A = "CA" + "a" * 32
CALL_B = "CA" + "b" * 32


@pytest.fixture
def server(tmp_path: Path, registry: object) -> RunningServer:
    """``/phone/`` (Media Streams) and ``/relay/`` (ConversationRelay), sharing one session store."""
    phone = deployment(tmp_path, ["what are your hours"])
    relay = parse_deployment(
        RELAY_DEPLOYMENT.replace("{db}", str(tmp_path / "s.db")), environ={"TWILIO_AUTH_TOKEN": TOKEN}
    )
    with RunningServer(create_app([phone, relay], warm_up=False)) as running:
        yield running


def _signature(path: str, params: dict[str, str] | None = None, *, websocket: bool = False) -> str:
    url = f"{PUBLIC}/{path}".replace("https://", "wss://" if websocket else "https://")
    return RequestValidator(TOKEN).compute_signature(url, params or {})


async def _webhook_token(server: RunningServer, name: str, call_sid: str) -> str:
    """What Twilio does first: post the signed voice webhook, and read the token out of the TwiML."""
    form = {"CallSid": call_sid, "From": "+15550001111", "To": "+15559990000"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.post(
            f"/{name}/twiml", data=form, headers={"X-Twilio-Signature": _signature(f"{name}/twiml", form)}
        )
    assert answer.status_code == 200
    [token] = re.findall(rf'<Parameter name="{PARAMETER}" value="([^"]+)"', answer.text)
    return token


async def _served(server: RunningServer, name: str, path: str, messages: list[dict[str, Any]]) -> bool:
    """Open a socket with a valid (replayed) handshake signature, send ``messages``: whether the server
    answers anything (``True``) or closes the socket without a word (``False``)."""
    headers = {"X-Twilio-Signature": _signature(f"{name}/{path}", websocket=True)}
    async with websockets.connect(f"{server.ws_url}/{name}/{path}", additional_headers=headers) as socket:
        for message in messages:
            await socket.send(json.dumps(message))
        try:
            await asyncio.wait_for(socket.recv(), 10)
        except websockets.ConnectionClosed:
            return False
        return True


def _start(call_sid: str, parameters: dict[str, str]) -> list[dict[str, Any]]:
    stream = "MZ" + call_sid[2:]
    start = {"callSid": call_sid, "streamSid": stream, "customParameters": {"from": "+15550001111", **parameters}}
    return [{"event": "connected"}, {"event": "start", "streamSid": stream, "start": start}]


def _setup(session_id: str, call_sid: str, parameters: dict[str, str]) -> list[dict[str, Any]]:
    setup = {"type": "setup", "sessionId": session_id, "callSid": call_sid, "customParameters": parameters}
    return [setup, {"type": "prompt", "voicePrompt": "what are your hours", "lang": "en-GB", "last": True}]


async def stored_session(tmp_path: Path, call_id: str) -> Any:
    """The session as stored (read through a store of the test's own, as the server runs on its own loop)."""
    store = SQLiteSessionStore(tmp_path / "s.db")
    try:
        return await store.get(call_id)
    finally:
        await store.close()


async def test_media_stream_opens_only_for_the_callsid_its_webhook_named(server: RunningServer, tmp_path: Path) -> None:
    token = await _webhook_token(server, "phone", CALL_A)
    # The captured handshake replayed with another call's CallSid, carrying call A's token: refused.
    assert not await _served(server, "phone", "media", _start(CALL_B, {PARAMETER: token}))
    assert await stored_session(tmp_path, CALL_B) is None
    # No token, a forged one, an expired one, a ConversationRelay one: refused.
    expired = Signer(b"test-signing-secret-" + b"s" * 32, clock=lambda: time.time() - 3600).mint(
        "call:twilio", CALL_A, 60
    )
    relay_token = webhook_parameters("conversation_relay", CALL_A)[PARAMETER]
    for parameters in [{}, {PARAMETER: token[:-2] + "xx"}, {PARAMETER: expired}, {PARAMETER: relay_token}]:
        assert not await _served(server, "phone", "media", _start(CALL_A, parameters))
    assert await stored_session(tmp_path, CALL_A) is None
    # The real call, with the token its webhook gave: served (the greeting's audio comes back).
    assert await _served(server, "phone", "media", _start(CALL_A, {PARAMETER: token}))
    stored = await stored_session(tmp_path, CALL_A)
    assert stored is not None and PARAMETER not in stored.metadata["custom_parameters"]  # not kept


async def test_relay_replay_cannot_resume_another_calls_conversation(server: RunningServer, tmp_path: Path) -> None:
    session = "VX" + "a" * 32
    token_a = await _webhook_token(server, "relay", CALL_A)
    assert await _served(server, "relay", "relay", _setup(session, CALL_A, {PARAMETER: token_a}))
    await asyncio.sleep(0.5)
    assert (await stored_session(tmp_path, session)).messages  # call A's conversation is stored
    # Call B's own valid token, naming call A's sessionId: refused, A's history is never sent.
    token_b = await _webhook_token(server, "relay", CALL_B)
    assert not await _served(server, "relay", "relay", _setup(session, CALL_B, {PARAMETER: token_b}))
    # Naming call A's CallSid without its token: refused.
    assert not await _served(server, "relay", "relay", _setup(session, CALL_A, {}))
    assert (await stored_session(tmp_path, session)).metadata["callSid"] == CALL_A


async def test_an_id_of_one_transport_never_names_another_transports_conversation(
    server: RunningServer, tmp_path: Path, registry: Registry
) -> None:
    token = await _webhook_token(server, "phone", CALL_A)
    assert await _served(server, "phone", "media", _start(CALL_A, {PARAMETER: token}))
    await asyncio.sleep(0.5)
    assert await stored_session(tmp_path, CALL_A) is not None
    # A relay session whose sessionId is the Media Streams call's CallSid (properly bound to its own call B).
    relay_token = await _webhook_token(server, "relay", CALL_B)
    assert not await _served(server, "relay", "relay", _setup(CALL_A, CALL_B, {PARAMETER: relay_token}))
    stored = await stored_session(tmp_path, CALL_A)
    assert stored.metadata["transport"] == "twilio"
    # A browser session id equal to that CallSid: the call host refuses it for any other transport.
    store = SQLiteSessionStore(tmp_path / "s.db")
    try:
        host = CallHost(deployment(tmp_path, []), store, registry, CallBookkeeping())
        assert await host.open_session(CALL_A, {"transport": "browser"}) is None
        assert await host.open_session(CALL_A, {"transport": "twilio"}) is not None  # its own transport may
    finally:
        await store.close()


def test_unsigned_deployments_mint_nothing_and_signed_ones_without_a_secret_refuse_every_call() -> None:
    unsigned = CallBinding.for_deployment("twilio", signed=False)
    assert unsigned.parameters(CALL_A) == {}
    unsigned.verify(CALL_A, {})  # the unsigned handshake was taken at its word already
    no_secret = CallBinding.for_deployment("twilio", signed=True, environ={})
    assert no_secret.parameters(CALL_A) == {}
    with pytest.raises(ValueError, match="VOXPIPE_SIGNING_SECRET"):
        no_secret.verify(CALL_A, {PARAMETER: "x.y"})


async def test_a_refused_media_stream_start_closes_the_socket_with_the_logged_reason(server: RunningServer) -> None:
    """Not left open waiting for another ``start``: the peer is told why (1008), and the log says it too."""
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="WARNING")
    forged = webhook_parameters("twilio", CALL_A)[PARAMETER][:-2] + "xx"
    closes = []
    try:
        for parameters in [{}, {PARAMETER: forged}]:
            headers = {"X-Twilio-Signature": _signature("phone/media", websocket=True)}
            async with websockets.connect(f"{server.ws_url}/phone/media", additional_headers=headers) as socket:
                for message in _start(CALL_A, parameters):
                    await socket.send(json.dumps(message))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(socket.recv(), 10)
            closes.append(closed.value.rcvd)
    finally:
        logger.remove(sink)
    for close, reason in zip(closes, ["no voxpipe_call_token parameter", "bad signature"], strict=True):
        assert close.code == 1008 and reason in close.reason
        assert any(reason in line and "the stream is closed" in line for line in logged)


async def test_a_binding_token_opens_one_socket_once_even_for_its_own_call(server: RunningServer) -> None:
    """The token and the handshake captured together, replayed for the same CallSid within the token's 120 s:
    refused, whether the first socket is live or has ended (the token was spent by the first ``start``)."""
    token = await _webhook_token(server, "phone", CALL_A)
    replay = {"from": "+15550001111", PARAMETER: token}
    first = simulator(server, call_sid=CALL_A, bound=False, parameters=replay)
    async with first:
        await first.wait_for(lambda: first.sent("media"), what="the greeting")
        while_live = simulator(server, call_sid=CALL_A, bound=False, parameters=replay)
        async with while_live:
            await while_live.wait_for(lambda: while_live.closed.is_set(), what="the replay refused")
    after = simulator(server, call_sid=CALL_A, bound=False, parameters=replay)
    async with after:
        await after.wait_for(lambda: after.closed.is_set(), what="the replay refused")
    assert not while_live.sent("media") and not after.sent("media")
    assert "used already" in after.close_reason and after.close_code == 1008
    # A fresh token from the webhook (as a caller back from a warm transfer brings) is served.
    fresh = simulator(server, call_sid=CALL_A)
    async with fresh:
        await fresh.wait_for(lambda: fresh.sent("media"), what="the greeting")


async def test_a_relay_binding_token_opens_one_session_once(server: RunningServer) -> None:
    token = await _webhook_token(server, "relay", CALL_A)
    assert await _served(server, "relay", "relay", _setup("VX" + "c" * 32, CALL_A, {PARAMETER: token}))
    assert not await _served(server, "relay", "relay", _setup("VX" + "c" * 32, CALL_A, {PARAMETER: token}))


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_a_token_spent_on_one_server_is_refused_by_another_sharing_its_sessions(
    store: str, tmp_path: Path, registry: object, request: pytest.FixtureRequest
) -> None:
    """Two servers of a fleet (sessions in one Redis), or two workers of one host (one SQLite file): the
    replay goes to the one the call did not use."""
    url = request.getfixturevalue("redis_url") if store == "redis" else None
    apps = []
    for _ in range(2):
        phone = deployment(tmp_path, ["what are your hours"])
        if url is not None:
            phone.sessions = SessionsConfig(store="redis", url=url)
        apps.append(create_app([phone], warm_up=False))
    with RunningServer(apps[0]) as one, RunningServer(apps[1]) as two:
        token = await _webhook_token(one, "phone", CALL_B)
        replay = {"from": "+15550001111", PARAMETER: token}
        async with simulator(one, call_sid=CALL_B, bound=False, parameters=replay) as call:
            await call.wait_for(lambda: call.sent("media"), what="the greeting")
        async with simulator(two, call_sid=CALL_B, bound=False, parameters=replay) as again:
            await again.wait_for(lambda: again.closed.is_set(), what="the replay refused")
        assert again.close_code == 1008 and "used already" in again.close_reason
        assert not again.sent("media")
    spent = RedisSpentTokens(url) if url is not None else SQLiteSpentTokens(tmp_path / "s.db")
    try:
        assert not await spent.spend(token, 1)  # remembered beside the sessions, until the token expires
        assert await spent.spend(token + "x", 1)
    finally:
        await spent.close()


async def test_spent_tokens_in_sqlite_are_forgotten_once_expired(tmp_path: Path) -> None:
    clock = [1000.0]
    spent = SQLiteSpentTokens(tmp_path / "s.db", clock=lambda: clock[0])
    try:
        assert await spent.spend("a", 120) and not await spent.spend("a", 120)
        clock[0] += 121
        assert await spent.spend("a", 120)  # forgotten once expired (a token that old opens nothing anyway)
    finally:
        await spent.close()


async def test_spent_tokens_in_memory_are_forgotten_once_expired() -> None:
    clock = [0.0]
    spent = MemorySpentTokens(clock=lambda: clock[0])
    assert await spent.spend("a", 120) and not await spent.spend("a", 120)
    clock[0] = 60
    assert await spent.spend("b", 120)
    clock[0] = 121
    assert await spent.spend("c", 120) and len(spent) == 2  # "a" expired and was dropped
    assert not await spent.spend("b", 120)
