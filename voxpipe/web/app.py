"""The ASGI app: several deployments, each under ``/{name}/``, plus ``/healthz`` and ``/readyz``.

``create_app(deployments)`` is importable, so any ASGI server can run it (``voxpipe serve`` uses uvicorn)::

    from voxpipe.config.loader import load_deployment
    from voxpipe.web.app import create_app

    app = create_app([load_deployment("agent.yaml")])

Per deployment (see docs/serve.md): ``POST /twiml`` (Twilio voice webhook), ``WS /media`` (Media Streams),
``WS /relay`` (ConversationRelay), ``POST /connect-action`` (where Twilio goes when ``<Connect>`` ends),
``POST /recording-status`` (Twilio's recording of a relay call is ready), ``GET /`` + ``WS /ws`` (browser page),
and for realtime deployments ``POST /session`` + ``POST /tools/{name}``.
SIGTERM drains the process first (``voxpipe.web.drain``): no new call, live calls run to their end.

Where sessions are in Redis, a failing provider's cooldown is shared through it (``sessions.redis_health``).

Each deployment gets a ``CallHost`` (``voxpipe.pipeline.host``: its session store, experiment router and the
process's bookkeeping, which starts, measures and records every call) and a ``TwilioAccount`` (signature
checks, the REST client). The transports are given both; none of them imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from voxpipe.config.models import Deployment
from voxpipe.pipeline.host import CallBookkeeping, CallHost
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.records.prometheus import CallMetrics, multiprocess_dir
from voxpipe.records.store import RecordStore
from voxpipe.security.limits import LimitExceeded
from voxpipe.security.loop_load import LoopLoad
from voxpipe.sessions import SessionStore, open_store
from voxpipe.transports import browser, conversation_relay, twilio_media, twilio_recordings
from voxpipe.transports.admission import admit_request
from voxpipe.transports.twilio_account import (
    BodyTooLarge,
    TwilioAccount,
    TwilioClientFactory,
    relay_twiml,
    twilio_client,
)
from voxpipe.web.drain import Drain, RefuseWhileDraining, install_sigterm, turn_away_twiml

if TYPE_CHECKING:
    from voxpipe.sessions.redis_health import RedisHealthBoard

RecordsFor = Callable[[Deployment], RecordStore]
"""A deployment's record store."""


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
    records: RecordStore | RecordsFor | None = None,
    warm_up: bool = True,
    page_origins: Sequence[str] = (),
) -> FastAPI:
    """One FastAPI app serving every deployment under ``/{name}/``.

    ``records`` keeps a ``CallRecord`` of every phone and browser call: one store for all, or a function
    giving each deployment's (``voxpipe serve`` opens the store its ``records:`` section names, which
    ``voxpipe calls`` and ``voxpipe report`` read); ``GET /metrics`` counts them for Prometheus.
    ``warm_up`` loads the shared VAD and turn models the deployments use (their experiment variants too) at
    start; ``/readyz`` answers 503 until it is done. ``page_origins``: browser page origins every deployment
    allows besides its own list (``voxpipe serve`` gives its loopback origins when it listens on loopback).
    Deployments with the same ``sessions`` settings share one store.
    """
    names = [d.name for d in deployments]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more deployments with distinct names (got {names})")
    registry = registry or default_registry()
    metrics = CallMetrics()
    stores: dict[str, SessionStore] = {}
    hosts: list[tuple[CallHost, TwilioAccount]] = []
    for deployment in deployments:
        _check(deployment)
        key = deployment.sessions.model_dump_json()
        store = stores.get(key) or stores.setdefault(key, open_store(deployment.sessions))
        bookkeeping = CallBookkeeping(records(deployment) if callable(records) else records, metrics)
        twilio = TwilioAccount(deployment, twilio_client, serves_transfer_status=True)
        hosts.append((CallHost(deployment, store, registry, bookkeeping), twilio))
    state = {"ready": not warm_up}
    drain = Drain([host for host, _ in hosts])
    load = LoopLoad(siblings=multiprocess_dir())  # the workers' loads are compared where their metrics are
    busiest = min(d.limits.max_loop_load for d in deployments)  # /readyz: past it, some deployment turns calls away

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            from voxpipe.pipeline.shared_models import warm_up as load_models

            served = [d for host, _ in hosts for d in (host.deployment, *host.router.variants.values())]
            await asyncio.to_thread(load_models, served)  # only the models these deployments and variants use
            state["ready"] = True
        install_sigterm(drain)
        load.start()
        boards = _health_boards(deployments)
        background = [asyncio.ensure_future(board.run()) for board in boards]
        # Records of calls that ended while the record store was down, saved alongside the calls: a store that
        # is slow, locked or still down does not hold up the start.
        keepers = [host.bookkeeping.keeper for host, _ in hosts if host.bookkeeping.keeper]
        spools = {keeper.spool.path: keeper for keeper in keepers}
        background += [asyncio.ensure_future(keeper.save_spooled()) for keeper in spools.values()]
        logger.info(f"voxpipe serving {', '.join('/' + n + '/' for n in names)}")
        yield
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        load.stop()
        for board in boards:
            await board.close()
        for host, twilio in hosts:
            await host.close()
            await twilio.close()
        for store in stores.values():
            await store.close()
        from voxpipe.providers.cloud import close_shared  # the process-wide vendor clients

        await close_shared()
        metrics.process_ended()

    app = FastAPI(title="voxpipe", lifespan=lifespan)
    app.add_middleware(RefuseWhileDraining, drain=drain)
    app.state.drain = drain

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, problem: BodyTooLarge) -> Response:
        logger.warning(f"refused {request.url.path}: {problem}")
        return Response("request body too large", status_code=413)

    app.state.hosts = {host.deployment.name: host for host, _ in hosts}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Shared models are loaded, the process is not draining and its event loop is not overloaded (past a
        deployment's ``limits.max_loop_load``): calls can be taken without a cold start or a slow reply."""
        overloaded = load.above(busiest)
        ready = state["ready"] and not drain.draining and not overloaded
        body = {
            "ready": ready,
            "draining": drain.draining,
            "overloaded": overloaded,
            "loop_load": round(load.share, 3),
            "host_loop_load": round(load.host_share, 3),  # the least busy of this host's workers
            "deployments": names,
            "active_calls": sum(len(host.calls) for host, _ in hosts),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Calls, latency, cost, usage, errors and fallbacks, in Prometheus' text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    for host, twilio in hosts:
        app.include_router(_router(host, twilio, drain, load, page_origins), prefix=f"/{host.deployment.name}")
    return app


def _health_boards(deployments: Sequence[Deployment]) -> list[RedisHealthBoard]:
    """A failing provider's cooldown is shared through each Redis the deployments keep sessions in."""
    urls = {d.sessions.url for d in deployments if d.sessions.store == "redis" and d.sessions.url}
    if not urls:
        return []
    from voxpipe.sessions.redis_health import RedisHealthBoard

    return [RedisHealthBoard(url) for url in sorted(urls)]


def _router(
    host: CallHost, twilio: TwilioAccount, drain: Drain, load: LoopLoad, page_origins: Sequence[str]
) -> APIRouter:
    router = APIRouter()
    deployment = host.deployment

    @router.post("/twiml")
    async def twiml(request: Request) -> Response:
        """Twilio's voice webhook: connect the call to a Media Stream or to ConversationRelay."""
        form = await twilio.signed_form(request, "twiml")
        if form is None:
            return Response(status_code=403)
        if drain.draining:
            return twilio_media.xml(turn_away_twiml(host.deployment, host.deployment.drain.say))
        try:
            load.check(deployment.limits.max_loop_load)
        except LimitExceeded as refused:
            host.refused(refused)
            return twilio_media.xml(turn_away_twiml(deployment, deployment.limits.busy_say))
        caller = form.get("From") or (request.client.host if request.client else "")
        await admit_request(host, lambda: host.limits.admit_new_call(f"caller:{caller}"))  # 429: Twilio gives up
        if deployment.transport.public_url is None:
            logger.error(f"[{deployment.name}] cannot answer Twilio: transport.public_url (the https base) is not set")
            return Response("transport.public_url is not set", status_code=503)
        call_sid = form.get("CallSid", "")
        if deployment.transport.twilio.connect == "conversation_relay":
            binding = twilio.bindings["conversation_relay"].parameters(call_sid)
            return twilio_media.xml(relay_twiml(deployment, binding))
        return twilio_media.xml(twilio_media.stream_twiml(deployment, form, twilio.bindings["twilio"]))

    twilio_media.add_routes(router, host, twilio)
    conversation_relay.add_routes(router, host, twilio)
    twilio_recordings.add_routes(router, host, twilio)
    browser.add_routes(router, host, load, page_origins)
    return router
