"""The ASGI app: several deployments, each under ``/{name}/``, plus ``/healthz`` and ``/readyz``.

``create_app(deployments)`` is importable, so any ASGI server can run it (``voxpipe serve`` uses uvicorn)::

    from voxpipe.config.loader import load_deployment
    from voxpipe.web.app import create_app

    app = create_app([load_deployment("agent.yaml")])

Per deployment (see docs/serve.md): ``POST /twiml`` (Twilio voice webhook), ``WS /media`` (Media Streams),
``WS /relay`` (ConversationRelay), ``POST /connect-action`` (where Twilio goes when ``<Connect>`` ends),
``GET /`` + ``WS /ws`` (browser page), and for realtime deployments ``POST /session`` + ``POST /tools/{name}``.

Each deployment gets a ``CallHost`` (``voxpipe.pipeline.host``: its session store, experiment router and the
process's bookkeeping, which starts, measures and records every call) and a ``TwilioAccount`` (signature
checks, the REST client). The transports are given both; none of them imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from voxpipe.config.models import Deployment
from voxpipe.pipeline.host import CallBookkeeping, CallHost
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.store import RecordStore
from voxpipe.sessions import SessionStore, open_store
from voxpipe.transports import browser, conversation_relay, twilio_media
from voxpipe.transports.twilio_account import TwilioAccount, TwilioClientFactory, relay_twiml, twilio_client


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
    twilio_client: TwilioClientFactory = twilio_client,
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
    hosts: list[tuple[CallHost, TwilioAccount]] = []
    for deployment in deployments:
        _check(deployment)
        key = deployment.sessions.model_dump_json()
        store = stores.get(key) or stores.setdefault(key, open_store(deployment.sessions))
        twilio = TwilioAccount(deployment, twilio_client, serves_transfer_status=True)
        hosts.append((CallHost(deployment, store, registry, bookkeeping), twilio))
    state = {"ready": not warm_up}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            from voxpipe.pipeline.shared_models import warm_up as load_models

            await asyncio.to_thread(load_models)
            state["ready"] = True
        logger.info(f"voxpipe serving {', '.join('/' + n + '/' for n in names)}")
        yield
        for host, _ in hosts:
            await host.close()
        for store in stores.values():
            await store.close()
        from voxpipe.providers.cloud import close_shared  # the process-wide vendor clients

        await close_shared()

    app = FastAPI(title="voxpipe", lifespan=lifespan)
    app.state.hosts = {host.deployment.name: host for host, _ in hosts}

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
            "active_calls": sum(len(host.calls) for host, _ in hosts),
        }
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Calls, latency, cost, usage, errors and fallbacks, in Prometheus' text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    for host, twilio in hosts:
        app.include_router(_router(host, twilio), prefix=f"/{host.deployment.name}")
    return app


def _router(host: CallHost, twilio: TwilioAccount) -> APIRouter:
    router = APIRouter()
    deployment = host.deployment

    @router.post("/twiml")
    async def twiml(request: Request) -> Response:
        """Twilio's voice webhook: connect the call to a Media Stream or to ConversationRelay."""
        form = await twilio.signed_form(request, "twiml")
        if form is None:
            return Response(status_code=403)
        if deployment.transport.public_url is None:
            logger.error(f"[{deployment.name}] cannot answer Twilio: transport.public_url (the https base) is not set")
            return Response("transport.public_url is not set", status_code=503)
        if deployment.transport.twilio.connect == "conversation_relay":
            return twilio_media.xml(relay_twiml(deployment))
        return twilio_media.xml(twilio_media.stream_twiml(deployment, form))

    twilio_media.add_routes(router, host, twilio)
    conversation_relay.add_routes(router, host, twilio)
    browser.add_routes(router, host)
    return router
