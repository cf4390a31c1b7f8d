"""The browser page: ``GET /{name}/`` serves it, ``WS /{name}/ws`` carries the call.

The page (``static/``: plain HTML and JavaScript, no build step) captures the microphone with an AudioWorklet
and speaks the Media Streams event protocol over the WebSocket, with 16 kHz PCM16 instead of mu-law:
``start`` (with a ``sessionId`` kept in the tab's sessionStorage, so a reload resumes the conversation),
``media``, ``mark`` (echoed by its playback worklet once a chunk has played) and ``stop``; the server sends
``media``, ``mark``, ``clear``, plus ``transcript`` and ``latency`` events for the page to show. So the
browser shares Twilio's state machine and mark-based playout tracking (``telephony.media_streams``, through
``media_stream_call.MediaStreamCall``); the serverless bridge speaks the same dialect to a browser.

Every call needs a session token first (``voxpipe.security.browser_access``): ``POST /{name}/token`` gives one
to a page of an allowed origin (``transport.browser.allowed_origins``, ``transport.public_url``'s, and the
loopback origins ``voxpipe serve`` adds when it listens on loopback), choosing the browser session id itself.
The page opens ``WS /ws`` offering the subprotocols ``voxpipe`` and ``token.<token>``; ``/session`` and the
tools endpoint take it as ``Authorization: Bearer``. A request without a valid token for its own origin is
refused (401/403, or the socket closed with 1008 and the reason) and counted in ``/metrics``.

For realtime deployments on OpenAI, ``POST /{name}/session`` mints a short-lived Realtime client secret (never
the API key) with the deployment's session settings, so the page can talk to Realtime over WebRTC; the
agent's tools then run on the server through ``POST /{name}/tools/{tool}``, authorised by the tools token
``/session`` signs beside the secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, RedirectResponse
from loguru import logger

from voxpipe.config.models import Deployment, ServiceConfig, ToolConfig
from voxpipe.pipeline.host import CallHost
from voxpipe.security.browser_access import (
    PAGE_PURPOSE,
    SUBPROTOCOL,
    TOOLS_PURPOSE,
    AccessRefused,
    BrowserAccess,
    PageSession,
    bearer,
    subprotocol_token,
)
from voxpipe.security.loop_load import LoopLoad
from voxpipe.tools.access import ToolNotCallable, client_tool, run_client_tool
from voxpipe.transports.admission import admit_request, admit_socket
from voxpipe.transports.json_socket import POLICY_VIOLATION
from voxpipe.transports.media_stream_call import BrowserDialect
from voxpipe.transports.twilio_media import serve_media_stream

STATIC = resources.files("voxpipe.transports").joinpath("static")
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "audio-worklet.js": "text/javascript"}
CLIENT_SECRET_SECS = 600
TOOLS_TOKEN_SECS = 3600  # a WebRTC call outlives its page token: its tools stay usable for an hour
DEFAULT_REALTIME_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


def browser_access(deployment: Deployment, extra_origins: Sequence[str] = ()) -> BrowserAccess:
    """The deployment's page origins (``allowed_origins``, ``public_url``'s, ``extra_origins``) and token lifetime."""
    browser = deployment.transport.browser
    origins = [*browser.allowed_origins, *extra_origins]
    if deployment.transport.public_url:
        origins.append(deployment.transport.public_url)
    return BrowserAccess.from_environ(origins, browser.session_token_secs)


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


def add_routes(router: APIRouter, host: CallHost, load: LoopLoad, extra_origins: Sequence[str] = ()) -> None:
    """The page, its token, its call socket and (realtime on OpenAI) its session and tools routes.
    ``load``: the process's event loop, which turns new calls away past ``limits.max_loop_load``.
    ``extra_origins``: page origins allowed besides the deployment's own (``voxpipe serve``'s loopback ones)."""
    deployment = host.deployment
    access = browser_access(deployment, extra_origins)

    def refuse(refused: AccessRefused, origin: str | None) -> HTTPException:
        logger.warning(f"[{deployment.name}] browser request from origin {origin!r} refused: {refused}")
        host.refused(refused)
        return HTTPException(status_code=refused.status, detail=str(refused))

    def page_session(request: Request, purpose: str) -> PageSession:
        origin = request.headers.get("origin")
        try:
            return access.check(bearer(request.headers), origin, purpose)
        except AccessRefused as refused:
            raise refuse(refused, origin) from None

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

    @router.post("/token")
    async def token(request: Request) -> dict[str, Any]:
        """A session token for a page of an allowed origin, naming a session id chosen here."""
        origin = request.headers.get("origin")
        try:
            issued = access.issue(origin)
        except AccessRefused as refused:
            raise refuse(refused, origin) from None
        peer = request.client.host if request.client else ""
        await admit_request(host, lambda: host.limits.admit_new_call(f"token:{peer}"))  # per client, as calls are
        return {"token": issued.token, "session_id": issued.session.session_id, "expires_at": issued.expires_at}

    @router.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        offered = socket.scope.get("subprotocols") or []
        await socket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        origin = socket.headers.get("origin")
        try:
            session = access.check(subprotocol_token(offered), origin)
        except AccessRefused as refused:
            logger.warning(f"[{deployment.name}] browser WebSocket from origin {origin!r} refused: {refused}")
            host.refused(refused)
            await socket.close(code=POLICY_VIOLATION, reason=str(refused))
            return
        slot = await admit_socket(host, socket, socket.client.host if socket.client else "", load)
        if slot is not None:
            async with slot:
                await serve_media_stream(host, None, socket, BrowserDialect(session.session_id))

    @router.post("/session")
    async def session(request: Request) -> dict[str, Any]:
        """A Realtime client secret for WebRTC, with a token for the tools endpoint."""
        page = page_session(request, PAGE_PURPOSE)
        service = realtime_service(deployment)
        if service is None:
            raise HTTPException(status_code=404, detail="this deployment has no OpenAI realtime provider")
        await admit_request(host, host.limits.admit_secret)  # each secret can spend money at OpenAI
        try:
            secret = await mint_client_secret(deployment, service)
        except Exception as exc:
            logger.warning(f"[{deployment.name}] minting a Realtime client secret failed: {exc}")
            raise HTTPException(status_code=502, detail="could not create a Realtime session") from None
        return {
            "client_secret": secret,
            "model": service.model or DEFAULT_REALTIME_MODEL,
            "tools_token": access.tools_token(page, TOOLS_TOKEN_SECS),
        }

    @router.post("/tools/{tool_name}")
    async def tool(tool_name: str, request: Request) -> dict[str, Any]:
        """Run one of the agent's tools for a WebRTC page (``Authorization: Bearer <tools_token>``)."""
        page_session(request, TOOLS_PURPOSE)
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
