"""The browser page: ``GET /{name}/`` serves it, ``WS /{name}/ws`` carries the call.

The page (``static/``: plain HTML and JavaScript, no build step) captures the microphone with an AudioWorklet
and speaks the Media Streams event protocol over the WebSocket, with 16 kHz PCM16 instead of mu-law:
``start`` (with a ``sessionId`` kept in the tab's sessionStorage, so a reload resumes the conversation),
``media``, ``mark`` (echoed by its playback worklet once a chunk has played) and ``stop``; the server sends
``media``, ``mark``, ``clear``, plus ``transcript`` and ``latency`` events for the page to show. So the
browser shares Twilio's state machine and mark-based playout tracking (``telephony.media_streams``, through
``media_stream_call.MediaStreamCall``); the serverless bridge speaks the same dialect to a browser.

Only pages from allowed origins may open the socket: ``transport.public_url``, ``browser.allowed_origins``,
and the server's own origin.

For realtime deployments on OpenAI, ``POST /{name}/session`` mints a short-lived Realtime client secret (never
the API key) with the deployment's session settings, so the page can talk to Realtime over WebRTC; the
agent's tools then run on the server through ``POST /{name}/tools/{tool}``, authorised by a token minted
with the secret.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, RedirectResponse
from loguru import logger

from voxpipe.config.models import Deployment, ServiceConfig, ToolConfig
from voxpipe.pipeline.host import CallHost
from voxpipe.tools.access import ToolNotCallable, client_tool, run_client_tool
from voxpipe.transports.admission import admit_request, admit_socket
from voxpipe.transports.media_stream_call import BrowserDialect
from voxpipe.transports.twilio_media import serve_media_stream

STATIC = resources.files("voxpipe.transports").joinpath("static")
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "audio-worklet.js": "text/javascript"}
CLIENT_SECRET_SECS = 600
DEFAULT_REALTIME_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


def allowed_origin(deployment: Deployment, origin: str | None, host: str | None) -> bool:
    """Whether a page from ``origin`` may use the deployment (same origin, public_url, or allowed_origins)."""
    if not origin:
        return False
    allowed = {o.rstrip("/") for o in deployment.transport.browser.allowed_origins}
    if deployment.transport.public_url:
        parts = urlsplit(deployment.transport.public_url)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    own = urlsplit(origin)
    return origin.rstrip("/") in allowed or (bool(host) and own.netloc == host)


def realtime_service(deployment: Deployment) -> ServiceConfig | None:
    """The deployment's OpenAI realtime provider, if it has one (WebRTC needs OpenAI's endpoint)."""
    services = deployment.services("realtime") if deployment.mode == "realtime" else []
    return next((s for s in services if s.provider.startswith("openai")), None)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def realtime_session(deployment: Deployment, service: ServiceConfig) -> dict[str, Any]:
    """The Realtime session the client secret is minted with, from the provider's options and the deployment.

    The same settings the server-side ``openai_realtime`` provider sends in ``session.update``: instructions,
    voice, turn detection from the ``vad`` section (or semantic VAD), input transcription, noise reduction, tools.
    """
    options, vad = service.options, deployment.vad.resolved()
    if options.get("turn_detection") == "semantic_vad":
        turns: dict[str, Any] = {"type": "semantic_vad", "eagerness": options.get("eagerness", "auto")}
    else:
        turns = {
            "type": "server_vad",
            "threshold": vad.confidence,
            "prefix_padding_ms": round(vad.start_secs * 1000),
            "silence_duration_ms": round(vad.stop_secs * 1000),
        }
    audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": turns}
    transcription = options.get("transcription_model", DEFAULT_TRANSCRIPTION_MODEL)
    if transcription:
        audio_input["transcription"] = {"model": transcription}
    if options.get("noise_reduction"):
        audio_input["noise_reduction"] = {"type": options["noise_reduction"]}
    session: dict[str, Any] = {
        "type": "realtime",
        "model": service.model or DEFAULT_REALTIME_MODEL,
        "instructions": deployment.agent.instructions,
        "audio": {
            "input": audio_input,
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": options.get("voice", DEFAULT_VOICE)},
        },
    }
    tools = [_tool_schema(tool) for tool in deployment.agent.tools]
    if tools:
        session["tools"] = tools
    return session


def rest_base_url(options: dict[str, Any]) -> str | None:
    """The provider's ``base_url`` is its WebSocket endpoint (``wss://host/v1/realtime``): the REST base is
    ``https://host/v1``. ``None`` lets the SDK use ``OPENAI_BASE_URL`` or OpenAI's own."""
    base = options.get("base_url")
    if not base:
        return None
    base = re.sub(r"^ws(s?)://", r"http\1://", str(base).rstrip("/"))
    return base.removesuffix("/realtime")


def _tool_schema(tool: ToolConfig) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.function_name,
        "description": tool.description or "",
        "parameters": tool.parameters or {"type": "object", "properties": {}},
    }


class ToolTokens:
    """Tokens minted with a client secret: they let that page (and only for a while) run the agent's tools."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def mint(self, secs: float) -> str:
        now = time.time()
        self._expiry = {t: e for t, e in self._expiry.items() if e > now}
        token = secrets.token_urlsafe(24)
        self._expiry[token] = now + secs
        return token

    def valid(self, token: str) -> bool:
        return self._expiry.get(token, 0.0) > time.time()


async def mint_client_secret(deployment: Deployment, service: ServiceConfig) -> dict[str, Any]:
    """``POST /v1/realtime/client_secrets`` with the deployment's API key; returns the ephemeral key."""
    from openai import AsyncOpenAI

    options = service.options
    client = AsyncOpenAI(
        api_key=_secret(options.get("api_key")) or os.environ.get("OPENAI_API_KEY"),
        base_url=rest_base_url(options) or os.environ.get("OPENAI_BASE_URL"),
        max_retries=1,
    )
    async with client:
        secret = await client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": CLIENT_SECRET_SECS},
            session=realtime_session(deployment, service),
        )
    return {"value": secret.value, "expires_at": secret.expires_at}


def add_routes(router: APIRouter, host: CallHost) -> None:
    deployment = host.deployment
    tokens = ToolTokens()

    def check_origin(origin: str | None, server: str | None) -> None:
        if not allowed_origin(deployment, origin, server):
            logger.warning(f"[{deployment.name}] refused a browser request from origin {origin!r}")
            raise HTTPException(status_code=403, detail="origin not allowed")

    @router.get("", include_in_schema=False)
    async def page_redirect() -> RedirectResponse:
        return RedirectResponse(f"/{deployment.name}/")

    @router.get("/")
    async def page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("index.html")), media_type="text/html")

    @router.get("/static/{filename}")
    async def static(filename: str) -> FileResponse:
        if filename not in STATIC_FILES:
            raise HTTPException(status_code=404)
        return FileResponse(str(STATIC.joinpath(filename)), media_type=STATIC_FILES[filename])

    @router.get("/config")
    async def config() -> dict[str, Any]:
        """What the page needs to know: the deployment's name and mode, and whether to use WebRTC."""
        return {
            "name": deployment.name,
            "mode": deployment.mode,
            "webrtc": realtime_service(deployment) is not None,
            "sample_rate": BrowserDialect.audio.sample_rate_in,
        }

    @router.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        if not allowed_origin(deployment, socket.headers.get("origin"), socket.headers.get("host")):
            logger.warning(f"[{deployment.name}] refused browser WebSocket from {socket.headers.get('origin')!r}")
            await socket.close(code=1008)
            return
        await socket.accept()
        slot = await admit_socket(host, socket, socket.client.host if socket.client else "")
        if slot is not None:
            with slot:
                await serve_media_stream(host, None, socket, BrowserDialect())

    @router.post("/session")
    async def session(request: Request) -> dict[str, Any]:
        """A Realtime client secret for WebRTC, with a token for the tools endpoint."""
        check_origin(request.headers.get("origin"), request.headers.get("host"))
        service = realtime_service(deployment)
        if service is None:
            raise HTTPException(status_code=404, detail="this deployment has no OpenAI realtime provider")
        admit_request(host, host.limits.admit_secret)  # each secret can spend money at OpenAI
        try:
            secret = await mint_client_secret(deployment, service)
        except Exception as exc:
            logger.warning(f"[{deployment.name}] minting a Realtime client secret failed: {exc}")
            raise HTTPException(status_code=502, detail="could not create a Realtime session") from None
        return {
            "client_secret": secret,
            "model": service.model or DEFAULT_REALTIME_MODEL,
            "tools_token": tokens.mint(CLIENT_SECRET_SECS),
        }

    @router.post("/tools/{tool_name}")
    async def tool(tool_name: str, request: Request) -> dict[str, Any]:
        """Run one of the agent's tools for a WebRTC page (``Authorization: Bearer <tools_token>``)."""
        check_origin(request.headers.get("origin"), request.headers.get("host"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not tokens.valid(token):
            raise HTTPException(status_code=401, detail="missing or expired tools token")
        try:
            client_tool(deployment.agent, tool_name)  # only client-callable tools, before the body is read
        except ToolNotCallable as refused:
            raise HTTPException(status_code=refused.status, detail=str(refused)) from None
        try:
            arguments = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="the body must be a JSON object of arguments") from None
        if not isinstance(arguments, dict):
            raise HTTPException(status_code=400, detail="the body must be a JSON object of arguments")
        result, effect = await run_client_tool(deployment.agent, host.registry, tool_name, arguments)
        return {"result": result, "effect": effect}
