"""The app factory, health and readiness, routing by prefix, origin checks, the Realtime client-secret endpoint,
the server-side tools endpoint, and ``serve``'s validation of its files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tool_functions
import websockets
from fastapi import FastAPI, Request

from tests.simulators import page_subprotocols, page_token
from tests.simulators.server import RunningServer
from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment
from voxpipe.web.app import create_app
from voxpipe.web.serve import serve

CASCADE = """
name: {name}
agent: {{instructions: Test agent., greeting: Hello.}}
vad: {{provider: testkit_vad}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm}}
tts: {{provider: testkit_tts}}
insecure: true
transport:
  twilio: {{validate_signatures: false}}
  browser: {{allowed_origins: ["https://app.example.com"]}}
sessions: {{store: memory}}
"""


def cascade(name: str) -> Deployment:
    return parse_deployment(CASCADE.format(name=name))


class FakeOpenAI:
    """``POST /v1/realtime/client_secrets`` as OpenAI answers it; keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.app = FastAPI()

        @self.app.post("/v1/realtime/client_secrets")
        async def client_secrets(request: Request) -> dict:
            body = await request.json()
            self.requests.append((request.headers.get("authorization", ""), body))
            return {"value": "ek_test_123", "expires_at": 1_900_000_000, "session": body["session"]}


def realtime(base_url: str) -> Deployment:
    """A realtime deployment on an OpenAI provider (built without the registry: only its settings are used)."""
    return Deployment.model_validate(
        {
            "name": "rt",
            "mode": "realtime",
            "agent": {
                "instructions": "Be brief.",
                "tools": [
                    {
                        "kind": "python",
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                        "options": {"function": f"{tool_functions.__name__}:get_weather"},
                        "client_callable": True,  # the page may run it (tests/security: only such tools)
                    },
                    {"kind": "end_call"},  # not client-callable: the page gets 403
                ],
            },
            "vad": {"stop_secs": 0.5},
            "realtime": {
                "provider": "openai_realtime",
                "model": "gpt-realtime",
                "options": {"api_key": "sk-server-secret", "base_url": base_url, "voice": "marin"},
            },
            "sessions": {"store": "memory"},
        }
    )


@pytest.fixture
def served(registry: object) -> Iterator[RunningServer]:
    with RunningServer(create_app([cascade("alpha"), cascade("beta")])) as server:
        yield server


async def test_health_readiness_and_prefixes(served: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        load = body.pop("loop_load")
        assert 0 <= load < 0.75 and body.pop("host_loop_load") == load  # a process alone judges its own loop
        assert body == {
            "ready": True,
            "draining": False,
            "overloaded": False,
            "deployments": ["alpha", "beta"],
            "active_calls": 0,
        }
        for name in ("alpha", "beta"):
            assert (await client.get(f"/{name}/config")).json()["name"] == name
            page = await client.get(f"/{name}/")
            assert page.status_code == 200 and 'src="static/app.js"' in page.text
            assert (await client.get(f"/{name}/static/audio-worklet.js")).status_code == 200
        assert (await client.get("/alpha/static/..%2Fbrowser.py")).status_code == 404
        assert (await client.get("/gamma/config")).status_code == 404
        # Signature validation explicitly off: unsigned requests pass, but TwiML needs the public URL.
        twiml = await client.post("/alpha/twiml", data={"CallSid": "CA1"})
        assert twiml.status_code == 503 and "public_url" in twiml.text


async def test_browser_socket_needs_a_session_token_for_its_origin(served: RunningServer) -> None:
    url = f"{served.ws_url}/alpha/ws"
    with httpx.Client(base_url=served.url) as client:
        token = page_token(client, "alpha", "https://app.example.com")  # allowed_origins
        own_origin = client.post("/alpha/token", headers={"origin": served.url})
    assert own_origin.status_code == 403  # no Host==Origin rule: the server's own address is not listed
    for origin, offered in [("https://evil.example.com", token), ("https://app.example.com", None)]:
        protocols = page_subprotocols(offered) if offered else None
        async with websockets.connect(url, origin=origin, subprotocols=protocols) as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd.code == 1008
    async with websockets.connect(
        url, origin="https://app.example.com", subprotocols=page_subprotocols(token)
    ) as socket:
        assert socket.subprotocol == "voxpipe"
        await socket.send(json.dumps({"event": "start", "start": {}}))
        assert json.loads(await socket.recv())["event"] in ("media", "transcript")  # the greeting
        await socket.send(json.dumps({"event": "stop"}))
        await socket.wait_closed()


def test_app_factory_rejects_bad_sets_of_deployments(registry: object) -> None:
    with pytest.raises(ValueError, match="distinct names"):
        create_app([cascade("alpha"), cascade("alpha")])
    relay = cascade("gamma").model_copy(deep=True)
    relay.transport.twilio.connect = "conversation_relay"
    relay.llm = None
    with pytest.raises(ValueError, match="needs an llm section"):
        create_app([relay])


async def test_realtime_session_mints_a_client_secret_never_the_key(registry: object) -> None:
    openai = FakeOpenAI()
    page = "https://app.example.com"
    with (
        RunningServer(openai.app) as fake,
        RunningServer(create_app([realtime(f"{fake.ws_url}/v1/realtime")], page_origins=[page])) as server,
    ):
        with httpx.Client(base_url=server.url) as sync_client:
            page_auth = {"Authorization": f"Bearer {page_token(sync_client, 'rt', page)}"}
        async with httpx.AsyncClient(base_url=server.url, headers={"Origin": page}) as client:
            assert (await client.get("/rt/config")).json()["webrtc"] is True
            minted = await client.post("/rt/session", headers=page_auth)
            refused = await client.post("/rt/session", headers={"Origin": "https://evil.example.com", **page_auth})
            token = minted.json()["tools_token"]
            no_token = await client.post("/rt/tools/get_weather", json={"city": "Paris"})
            page_token_for_tools = await client.post("/rt/tools/get_weather", json={"city": "Paris"}, headers=page_auth)
            weather = await client.post(
                "/rt/tools/get_weather", json={"city": "Paris"}, headers={"Authorization": f"Bearer {token}"}
            )
            unknown = await client.post("/rt/tools/nope", json={}, headers={"Authorization": f"Bearer {token}"})
            hidden = await client.post("/rt/tools/end_call", json={}, headers={"Authorization": f"Bearer {token}"})
            injected = await client.post(
                "/rt/tools/get_weather",
                json={"city": "Paris", "path": "/etc"},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert minted.status_code == 200 and refused.status_code == 403
    assert minted.json()["client_secret"] == {"value": "ek_test_123", "expires_at": 1_900_000_000}
    assert "sk-server-secret" not in minted.text
    authorization, body = openai.requests[0]
    assert authorization == "Bearer sk-server-secret"
    assert body["expires_after"] == {"anchor": "created_at", "seconds": 600}
    session = body["session"]
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert session["tools"][0]["name"] == "get_weather"
    assert no_token.status_code == 401 and page_token_for_tools.status_code == 401  # a tools token, not a page one
    assert unknown.status_code == 404 and hidden.status_code == 403
    assert weather.json() == {"result": {"city": "Paris", "temperature_c": 21}, "effect": None}
    assert "error" in injected.json()["result"]  # an undeclared argument never reaches the function


def test_serve_reports_every_bad_file_before_starting(write_yaml: object, tmp_path: Path) -> None:
    good = write_yaml(CASCADE.format(name="ok"), "ok.yaml")
    bad = write_yaml("name: Bad Name\n", "bad.yaml")
    with pytest.raises(ConfigError) as failed:
        serve([good, bad, tmp_path / "missing.yaml"])
    sources = {problem.source for problem in failed.value.problems}
    assert sources == {str(bad), str(tmp_path / "missing.yaml")}
