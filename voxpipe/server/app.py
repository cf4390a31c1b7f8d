"""The ASGI app: several deployments, each under ``/{name}/``, plus ``/healthz`` and ``/readyz``.

``create_app(deployments)`` is importable, so any ASGI server can run it (``voxpipe serve`` uses uvicorn)::

    from voxpipe.config.loader import load_deployment
    from voxpipe.server.app import create_app

    app = create_app([load_deployment("agent.yaml")])

Per deployment (see docs/serve.md): ``POST /twiml`` (Twilio voice webhook), ``WS /media`` (Media Streams),
``WS /relay`` (ConversationRelay), ``POST /connect-action`` (where Twilio goes when ``<Connect>`` ends),
``GET /`` + ``WS /ws`` (browser page), and for realtime deployments ``POST /session`` + ``POST /tools/{name}``.

A ``DeploymentHost`` holds what every call of one deployment shares (its session store, signature checks,
Twilio REST client); a ``HostedCall`` is one running pipeline whose conversation is written to the store
as it happens, so a call that reconnects with the same id resumes its context.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from pipecat.processors.aggregators.llm_response_universal import (
    AssistantTurnStoppedMessage,
    LLMAssistantAggregator,
    LLMUserAggregator,
    UserTurnMessageAddedMessage,
)
from pipecat.transports.base_transport import BaseTransport
from prometheus_client import CONTENT_TYPE_LATEST

from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext, CallPipeline, run_call
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.lifecycle import CallBookkeeping, run_measured_call
from voxpipe.pipeline.tools import EffectHandler
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.store import RecordStore
from voxpipe.server.signatures import TwilioSignatures
from voxpipe.sessions import Session, SessionRecorder, SessionStore, open_store
from voxpipe.transports import browser, conversation_relay, twilio_media

CLOSE_TIMEOUT_SECS = 10.0

#: Makes a ``twilio.rest.Client`` from (account_sid, auth_token); tests point it at a local fake.
TwilioClientFactory = Callable[[str, str], Any]


def _twilio_client(account_sid: str, auth_token: str) -> Any:
    from twilio.rest import Client

    return Client(account_sid, auth_token)


TurnListener = Callable[[str, str], Awaitable[None]]
"""Told each turn as it enters the conversation: ``(role, text)``, the assistant's as the caller heard it."""


def _aggregators(pipeline: CallPipeline) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
    processors = pipeline.pipeline.processors
    user = next(p for p in processors if isinstance(p, LLMUserAggregator))
    assistant = next(p for p in processors if isinstance(p, LLMAssistantAggregator))
    return user, assistant


class HostedCall:
    """One running call: its pipeline (on a runner of its own) and the recorder of its conversation.

    Phone and browser calls run through ``run_measured_call``, so each is routed to its experiment variant,
    measured, recorded and counted like any served call; the pipeline is attached once it is built.
    """

    def __init__(self, host: DeploymentHost, session: Session, on_turn: TurnListener | None):
        self.host = host
        self.session = session
        self.pipeline: CallPipeline | None = None
        self.recorder: SessionRecorder | None = None
        self._on_turn = on_turn
        self._built = asyncio.Event()
        self._run: asyncio.Future[Any] | None = None
        self._closed = False

    @property
    def call_id(self) -> str:
        return self.session.call_id

    def launch(self, work: Awaitable[Any]) -> None:
        """Run the call (``work`` builds and runs its pipeline) in the background."""
        self._run = asyncio.ensure_future(work)
        self.host.calls.add(self)

    def attach(self, pipeline: CallPipeline) -> None:
        """The call's pipeline is built: record its conversation as turns enter its context."""
        self.pipeline = pipeline
        self.recorder = SessionRecorder(self.host.store, self.session, lambda: pipeline.context.messages)
        # The aggregators' own events say when a turn entered the context: cheaper than an observer,
        # which pipecat would wake for every frame at every processor.
        user, assistant = _aggregators(pipeline)
        user.event_handler("on_user_turn_message_added")(self._user_turn)
        assistant.event_handler("on_assistant_turn_stopped")(self._assistant_turn)
        self._built.set()

    async def on_built(self, pipeline: CallPipeline) -> None:
        self.attach(pipeline)

    async def _user_turn(self, aggregator: object, message: UserTurnMessageAddedMessage) -> None:
        assert self.recorder is not None
        self.recorder.request_sync()
        if self._on_turn is not None:
            await self._on_turn("user", message.content)

    async def _assistant_turn(self, aggregator: object, message: AssistantTurnStoppedMessage) -> None:
        assert self.recorder is not None
        self.recorder.request_sync()
        if self._on_turn is not None and message.content:
            await self._on_turn("assistant", message.content)

    async def begin(self) -> None:
        """The caller is connected: queue the greeting (a resumed call gets none)."""
        assert self._run is not None
        built = asyncio.ensure_future(self._built.wait())
        await asyncio.wait([built, self._run], return_when=asyncio.FIRST_COMPLETED)
        built.cancel()
        if self.pipeline is not None:
            await self.pipeline.worker.queue_frames(self.pipeline.opening_frames())

    async def done(self) -> None:
        """Wait until the call has ended by itself."""
        assert self._run is not None
        await asyncio.shield(self._run)

    async def close(self) -> None:
        """End the call now (the peer is gone), and write the rest of its conversation."""
        if self._closed or self._run is None:
            return
        self._closed = True
        if not self._run.done():
            if self.pipeline is not None:
                await self.pipeline.worker.cancel(reason="the caller's connection closed")
            else:
                self._run.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._run), CLOSE_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"call {self.call_id}: pipeline did not stop within {CLOSE_TIMEOUT_SECS:g}s")
            self._run.cancel()
        except (Exception, asyncio.CancelledError) as exc:
            logger.warning(f"call {self.call_id}: ended with {exc!r}")
        if self.recorder is not None:
            await self.recorder.flush()
        await self.host.store.update_metadata(self.call_id, {"disconnected_at": _now()})
        self.host.calls.discard(self)


class DeploymentHost:
    """What all calls of one deployment share while it is served."""

    def __init__(
        self,
        deployment: Deployment,
        store: SessionStore,
        registry: Registry,
        twilio_client: TwilioClientFactory = _twilio_client,
        bookkeeping: CallBookkeeping | None = None,
    ):
        self.deployment = deployment
        self.store = store
        self.registry = registry
        self.router = ExperimentRouter(deployment)  # variants are validated now, not on a call
        self.bookkeeping = bookkeeping or CallBookkeeping()
        self.signatures = TwilioSignatures(deployment)
        twilio = deployment.transport.twilio
        token = twilio.auth_token.get_secret_value() if twilio.auth_token else ""
        self.twilio_rest = (
            twilio_media.TwilioRest(twilio_client(twilio.account_sid, token)) if twilio.account_sid and token else None
        )
        self.handoffs: dict[str, str] = {}  # call id -> where <Connect action> dials once the stream ends
        self.calls: set[HostedCall] = set()

    async def open_session(self, call_id: str, metadata: dict[str, Any]) -> Session | None:
        """The call's stored session (empty if new), or ``None`` if the id belongs to another deployment."""
        session = await self.store.get(call_id)
        owner = session.metadata.get("deployment") if session else None
        if owner not in (None, self.deployment.name):
            logger.warning(f"[{self.deployment.name}] call id {call_id} belongs to deployment {owner}: refused")
            return None
        if session is not None and session.messages:
            logger.info(f"[{self.deployment.name}] call {call_id} resumes with {len(session.messages)} messages")
        changes = {"deployment": self.deployment.name, "connected_at": _now(), **metadata}
        await self.store.update_metadata(call_id, changes)
        return Session(call_id, list(session.messages) if session else [], changes)

    def start_call(
        self,
        transport: BaseTransport,
        call_id: str,
        caller_id: str | None,
        audio: AudioFormat,
        session: Session,
        on_effect: EffectHandler,
        on_turn: TurnListener | None = None,
    ) -> HostedCall:
        """Start the call (its experiment variant, measured and recorded), with the session's messages as history."""
        call = CallContext(call_id, caller_id, audio, on_effect, history=list(session.messages))
        hosted = HostedCall(self, session, on_turn)
        hosted.launch(run_measured_call(self.router, transport, call, self.bookkeeping, hosted.on_built))
        return hosted

    def run(self, pipeline: CallPipeline, session: Session, on_turn: TurnListener | None = None) -> HostedCall:
        """Start a pipeline built elsewhere (ConversationRelay's text-only one), recording its conversation."""
        hosted = HostedCall(self, session, on_turn)
        hosted.attach(pipeline)
        hosted.launch(run_call(pipeline))
        return hosted


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _check(deployment: Deployment) -> None:
    if deployment.transport.twilio.connect == "conversation_relay" and not deployment.services("llm"):
        raise ValueError(
            f"deployment {deployment.name}: transport.twilio.connect is conversation_relay, which needs an llm "
            f"section (a {deployment.mode} deployment has none)"
        )


def create_app(
    deployments: Sequence[Deployment],
    *,
    registry: Registry | None = None,
    twilio_client: TwilioClientFactory = _twilio_client,
    records: RecordStore | None = None,
    warm_up: bool = True,
) -> FastAPI:
    """One FastAPI app serving every deployment under ``/{name}/``.

    ``records`` keeps a ``CallRecord`` of every phone and browser call (``voxpipe serve`` passes the default
    store, which ``voxpipe calls`` and ``voxpipe report`` read); ``GET /metrics`` counts them for Prometheus.
    ``warm_up`` loads the shared VAD and turn models at start; ``/readyz`` answers 503 until it is done.
    Deployments with the same ``sessions`` settings share one store.
    """
    names = [d.name for d in deployments]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more deployments with distinct names (got {names})")
    registry = registry or default_registry()
    metrics = CallMetrics()
    bookkeeping = CallBookkeeping(records, metrics)
    stores: dict[str, SessionStore] = {}
    hosts = []
    for deployment in deployments:
        _check(deployment)
        key = deployment.sessions.model_dump_json()
        store = stores.get(key) or stores.setdefault(key, open_store(deployment.sessions))
        hosts.append(DeploymentHost(deployment, store, registry, twilio_client, bookkeeping))
    state = {"ready": not warm_up}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            from voxpipe.pipeline.shared_models import warm_up as load_models

            await asyncio.to_thread(load_models)
            state["ready"] = True
        logger.info(f"voxpipe serving {', '.join('/' + n + '/' for n in names)}")
        yield
        for host in hosts:
            for call in list(host.calls):
                await call.close()
        for store in stores.values():
            await store.close()
        from voxpipe.providers.cloud import close_shared  # the process-wide vendor clients

        await close_shared()

    app = FastAPI(title="voxpipe", lifespan=lifespan)
    app.state.hosts = {host.deployment.name: host for host in hosts}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Shared models are loaded: calls can be taken without a cold start."""
        body = {
            "ready": state["ready"],
            "deployments": names,
            "active_calls": sum(len(host.calls) for host in hosts),
        }
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Calls, latency, cost, usage, errors and fallbacks, in Prometheus' text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    for host in hosts:
        app.include_router(_router(host), prefix=f"/{host.deployment.name}")
    return app


def _router(host: DeploymentHost) -> APIRouter:
    router = APIRouter()
    deployment = host.deployment

    @router.post("/twiml")
    async def twiml(request: Request) -> Response:
        """Twilio's voice webhook: connect the call to a Media Stream or to ConversationRelay."""
        form = await twilio_media.signed_form(host, request, "twiml")
        if form is None:
            return Response(status_code=403)
        if deployment.transport.public_url is None:
            logger.error(f"[{deployment.name}] cannot answer Twilio: transport.public_url (the https base) is not set")
            return Response("transport.public_url is not set", status_code=503)
        if deployment.transport.twilio.connect == "conversation_relay":
            return twilio_media.xml(conversation_relay.relay_twiml(deployment))
        return twilio_media.xml(twilio_media.stream_twiml(deployment, form))

    twilio_media.add_routes(router, host)
    conversation_relay.add_routes(router, host)
    browser.add_routes(router, host)
    return router
