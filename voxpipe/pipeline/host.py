"""The call host: the per-process owner of calls, which starts, measures, records and ends them.

Every way a call arrives (a Twilio media stream, ConversationRelay, the browser page, the serverless audio
bridge, ``voxpipe call``) runs it through ``run_measured_call``: pick the experiment variant, build the
pipeline with a turn meter, run it, and leave one ``CallRecord`` in the record store and in the Prometheus
numbers, however the call ended. Audio calls are measured from the audio (``latency.TurnMeter``); text calls
(ConversationRelay, a ``builder.TextTransport``) from the text exchanged (``text_latency.TextTurnMeter``).

A ``CallHost`` holds what every call of one deployment shares in this process (its session store, experiment
router and bookkeeping); a ``HostedCall`` is one running call whose conversation is written to the store as
it happens, so a call that reconnects with the same id resumes its context. Nothing here knows a web
framework or a wire protocol: the web app, the bridge worker and the transports use it, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from pipecat.processors.aggregators.llm_response_universal import (
    AssistantTurnStoppedMessage,
    LLMAssistantAggregator,
    LLMUserAggregator,
    UserTurnMessageAddedMessage,
)
from pipecat.transports.base_transport import BaseTransport

from voxpipe.config.models import Deployment, SmartTurn
from voxpipe.pipeline.builder import CallContext, CallPipeline, TextTransport, build_call, run_call
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.failure import FailureHandler, log_failure
from voxpipe.pipeline.keeping import CallKeeping
from voxpipe.pipeline.latency import TurnMeter
from voxpipe.pipeline.tools import EffectHandler
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.model import CallRecord, TurnRecord
from voxpipe.records.prometheus import CallMetrics
from voxpipe.records.spool import RecordKeeper, RecordSpool, spool_path
from voxpipe.records.store import RecordStore
from voxpipe.redaction.sessions import RedactingSessionStore
from voxpipe.security.browser_access import AccessRefused
from voxpipe.security.limits import DeploymentLimits, LimitExceeded, SharedWindows
from voxpipe.sessions import Session, SessionRecorder, SessionStore, StoreUnavailable

CLOSE_TIMEOUT_SECS = 10.0
#: Which process took a connection (a session's ``served_by``): calls move between workers and hosts.
SERVED_BY = f"{socket.gethostname()}:{os.getpid()}"

TurnListener = Callable[[str, str], Awaitable[None]]
"""Told each turn as it enters the conversation: ``(role, text)``, the assistant's as the caller heard it."""


@dataclass
class CallBookkeeping:
    """Where finished calls go: the record store and the process's metrics (either may be absent). A record
    the store cannot take when its call ends waits in the store's spool (``records.spool``) until it can."""

    records: RecordStore | None = None
    metrics: CallMetrics | None = None

    def __post_init__(self) -> None:
        self.keeper: RecordKeeper | None = None
        if self.records is not None:  # a record is saved joined to its call's earlier connections
            save = functools.partial(_save_joined, self.records)
            self.keeper = RecordKeeper(save, RecordSpool(spool_path(self.records)))

    async def keep(self, record: CallRecord) -> None:
        """Save ``record``, or spool it; never raises."""
        if self.keeper is not None:
            await self.keeper.keep(record)


@dataclass
class MeasuredPipeline:
    """A built call pipeline and what measures its turns (``turns()``: the turn records so far)."""

    pipeline: CallPipeline
    turns: Callable[[], list[TurnRecord]]
    missed_turns: Callable[[], int] = lambda: 0  # caller turns talked over before any reply (audio calls)


def build_audio_call(
    deployment: Deployment, transport: BaseTransport, call: CallContext, registry: Registry | None = None
) -> tuple[CallPipeline, TurnMeter]:
    """An audio call's pipeline, observed by the ``TurnMeter`` that measures its turns from the audio (and
    feeds the call's recording and trace, ``CallKeeping``)."""
    meter = TurnMeter(transport.output(), end_of_turn_secs(deployment))
    keeping = CallKeeping(deployment, meter)
    pipeline = build_call(
        deployment, transport, call, observers=[meter], clock=meter.clock, registry=registry, keeping=keeping
    )
    return pipeline, meter


def build_measured(
    deployment: Deployment, transport: BaseTransport, call: CallContext, registry: Registry | None = None
) -> MeasuredPipeline:
    """Build one call's pipeline with the turn meter its transport calls for (audio, or text)."""
    if isinstance(transport, TextTransport):
        keeping = CallKeeping(deployment, text_turns=transport.turn_meter)  # redacted and traced, not recorded
        pipeline = build_call(
            deployment, transport, call, registry=registry, keeping=keeping, observers=keeping.observers()
        )
        return MeasuredPipeline(pipeline, transport.turn_meter.records)
    pipeline, meter = build_audio_call(deployment, transport, call, registry)
    return MeasuredPipeline(
        pipeline, lambda: [t.record(i) for i, t in enumerate(meter.turns(), 1)], lambda: meter.missed_turns
    )


def end_of_turn_secs(deployment: Deployment) -> float:
    """Caller silence after which the deployment has surely ended the caller's turn (and owes a reply)."""
    turn = deployment.turn
    after_vad = turn.max_silence_secs if isinstance(turn, SmartTurn) else turn.timeout_secs
    return deployment.vad.resolved().stop_secs + after_vad


async def run_measured_call(
    router: ExperimentRouter,
    transport: BaseTransport,
    call: CallContext,
    bookkeeping: CallBookkeeping,
    on_built: Callable[[CallPipeline], Awaitable[None]] | None = None,
    registry: Registry | None = None,
) -> CallRecord:
    """Run one call to its end and return its record (saved and counted even if the call failed)."""
    deployment, variant = router.route(call.caller_id)
    measured = build_measured(deployment, transport, call, registry)
    call_pipeline = measured.pipeline
    started, started_at = time.monotonic(), datetime.now(UTC)
    if bookkeeping.metrics:
        bookkeeping.metrics.call_started(deployment.name)
    try:
        with call_pipeline.keeping.active():  # log lines redacted while the call runs
            if on_built is not None:
                await on_built(call_pipeline)
            await run_call(call_pipeline)
    finally:
        meter = call_pipeline.meter
        record = CallRecord(
            call_id=call.call_id,
            deployment=deployment.name,
            mode=deployment.mode,
            started_at=started_at,
            duration_secs=time.monotonic() - started,
            caller_id=call.caller_id,
            experiment=router.deployment.experiment.name if router.deployment.experiment else None,
            variant=variant,
            turns=measured.turns(),
            usage=meter.usage(),
            fallbacks=meter.fallbacks,
            errors=meter.errors,
            failure=meter.failure,
            missed_turns=measured.missed_turns(),
            events=meter.events,
            end_reason=meter.end_reason,
            turn_taking=meter.turn_taking(),
        )
        record = call_pipeline.keeping.finish(record)  # redacted, with its recording; the trace exported
        if bookkeeping.metrics:
            bookkeeping.metrics.call_ended(record)  # this connection's numbers (an earlier one counted its own)
        await bookkeeping.keep(record)
    return record


@contextlib.contextmanager
def _store_unavailable_on_failure() -> Iterator[None]:
    """Whatever a session store backend raises when it is down, as ``StoreUnavailable``."""
    try:
        yield
    except Exception as exc:
        raise StoreUnavailable(f"the session store failed: {exc!r}") from exc


def _save_joined(records: RecordStore, record: CallRecord) -> None:
    """Save ``record``, joined to the record of the same call's earlier connections (a reconnect, a caller back
    from a warm transfer) rather than replacing it."""
    earlier = records.get(record.call_id)
    records.save(
        record.continuing(earlier) if earlier is not None and earlier.started_at < record.started_at else record
    )


def _aggregators(pipeline: CallPipeline) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
    processors = pipeline.pipeline.processors
    user = next(p for p in processors if isinstance(p, LLMUserAggregator))
    assistant = next(p for p in processors if isinstance(p, LLMAssistantAggregator))
    return user, assistant


class HostedCall:
    """One running call: its pipeline (on a runner of its own) and the recorder of its conversation.

    The call runs through ``run_measured_call``, so it is routed to its experiment variant, measured,
    recorded and counted like any call; the pipeline is attached once it is built.
    """

    def __init__(self, host: CallHost, session: Session, on_turn: TurnListener | None):
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

    async def on_built(self, pipeline: CallPipeline) -> None:
        """The call's pipeline is built: record its conversation as turns enter its context."""
        self.pipeline = pipeline
        redactor = pipeline.keeping.redactor  # the stored conversation is masked; the live one is what the model sees
        store = RedactingSessionStore(self.host.store, redactor) if redactor else self.host.store
        recorder = self.recorder = SessionRecorder(store, self.session, lambda: pipeline.context.messages)
        on_turn = self._on_turn

        # The aggregators' own events say when a turn entered the context: cheaper than an observer,
        # which pipecat would wake for every frame at every processor.
        async def user_turn(aggregator: object, message: UserTurnMessageAddedMessage) -> None:
            recorder.request_sync()
            if on_turn is not None:
                await on_turn("user", message.content)

        async def assistant_turn(aggregator: object, message: AssistantTurnStoppedMessage) -> None:
            recorder.request_sync()
            if on_turn is not None and message.content:
                await on_turn("assistant", message.content)

        user, assistant = _aggregators(pipeline)
        user.event_handler("on_user_turn_message_added")(user_turn)
        assistant.event_handler("on_assistant_turn_stopped")(assistant_turn)
        self._built.set()

    def _running(self) -> asyncio.Future[Any]:
        if self._run is None:
            raise RuntimeError(f"call {self.call_id} was never launched")
        return self._run

    async def built(self) -> CallPipeline | None:
        """The call's pipeline once it is built (``None`` if the call ended before that)."""
        built = asyncio.ensure_future(self._built.wait())
        await asyncio.wait([built, self._running()], return_when=asyncio.FIRST_COMPLETED)
        built.cancel()
        return self.pipeline

    async def begin(self) -> None:
        """The caller is connected: queue the greeting (a resumed call gets none)."""
        pipeline = await self.built()
        if pipeline is not None:
            await pipeline.worker.queue_frames(pipeline.opening_frames())

    async def transfer_returned(self, status: str, ring_secs: float, say: str) -> None:
        """The caller is back from a warm transfer nobody took (``status``): the agent says so and carries on."""
        pipeline = await self.built()
        if pipeline is None:
            return
        pipeline.meter.note_event("transfer", mode="warm", answered=False, ring_secs=ring_secs, text=say, status=status)
        logger.info(f"call {self.call_id}: back from a warm transfer ({status} after {ring_secs:g}s)")
        await pipeline.say(say)

    async def done(self) -> None:
        """Wait until the call has ended by itself."""
        await asyncio.shield(self._running())

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
        try:
            if self.recorder is not None:
                await self.recorder.flush()  # (a failing store is retried, then logged: it never raises)
            await self.host.store.update_metadata(self.call_id, {"disconnected_at": _now()})
        except Exception as exc:  # the session store is down: the call is over all the same
            logger.warning(f"call {self.call_id}: its session's disconnection not stored ({exc!r})")
        finally:
            self.host.calls.discard(self)


class CallHost:
    """What all calls of one deployment share in this process while it is served."""

    def __init__(
        self,
        deployment: Deployment,
        store: SessionStore,
        registry: Registry | None = None,
        bookkeeping: CallBookkeeping | None = None,
    ):
        self.deployment = deployment
        self.store = store
        self.registry = registry or default_registry()
        self.router = ExperimentRouter(deployment)  # variants are validated now, not on a call
        self.bookkeeping = bookkeeping or CallBookkeeping()
        self.calls: set[HostedCall] = set()
        # the routes admit calls through it
        self.limits = DeploymentLimits.of(deployment.limits, shared=_shared_windows(deployment))

    def refused(self, problem: LimitExceeded | AccessRefused) -> None:
        """A limit, or the browser access check, refused a request: log it and count it in ``/metrics``."""
        logger.warning(f"[{self.deployment.name}] refused: {problem}")
        if self.bookkeeping.metrics is not None:
            self.bookkeeping.metrics.refused.labels(self.deployment.name, problem.limit).inc()

    async def open_session(self, call_id: str, metadata: dict[str, Any]) -> Session | None:
        """The call's stored session (empty if new), or ``None`` if the id is not this call's to use.

        Each deployment and each transport (``metadata["transport"]``) has its own ids: a Twilio CallSid, a
        relay session and a browser session id never name each other's conversations; a relay session stays
        with the CallSid (``metadata["callSid"]``) that opened it. An id whose call is
        live in this process is refused too (a second socket never joins or replaces a live call). The
        caller has already verified the id (``voxpipe.security.call_binding``): only then may it resume.
        ``StoreUnavailable`` if the session store cannot be reached.
        """
        with _store_unavailable_on_failure():
            session = await self.store.get(call_id)
        stored = session.metadata if session else {}
        refusal = None
        if stored.get("deployment") not in (None, self.deployment.name):
            refusal = f"belongs to deployment {stored['deployment']}"
        elif stored.get("transport") not in (None, metadata.get("transport")):
            refusal = f"is a {stored['transport']} id, not a {metadata.get('transport')} one"
        elif stored.get("callSid") not in (None, metadata.get("callSid")):
            refusal = f"was opened by call {stored['callSid']}, not {metadata.get('callSid')}"
        elif any(call.call_id == call_id for call in self.calls):
            refusal = "is already live"
        if refusal is not None:
            logger.warning(f"[{self.deployment.name}] call id {call_id} {refusal}: refused")
            return None
        if session is not None and session.messages:
            logger.info(f"[{self.deployment.name}] call {call_id} resumes with {len(session.messages)} messages")
        changes = {"deployment": self.deployment.name, "connected_at": _now(), "served_by": SERVED_BY, **metadata}
        with _store_unavailable_on_failure():
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
        on_failure: FailureHandler = log_failure,
    ) -> HostedCall:
        """Start the call (its experiment variant, measured and recorded), with the session's messages as history.

        ``transport`` carries audio, or text both ways (a ``TextTransport``: ConversationRelay); ``on_failure``
        is how the transport tells the caller that the call cannot go on (``pipeline.failure``).
        """
        call = CallContext(call_id, caller_id, audio, on_effect, on_failure, history=list(session.messages))
        hosted = HostedCall(self, session, on_turn)
        hosted.launch(run_measured_call(self.router, transport, call, self.bookkeeping, hosted.on_built, self.registry))
        return hosted

    async def close(self) -> None:
        """End every call still running (the process is stopping)."""
        for call in list(self.calls):
            await call.close()
        await self.limits.close()


def _shared_windows(deployment: Deployment) -> SharedWindows | None:
    """Processes share their rate windows where they share their sessions: a fleet in Redis, the workers of
    one host in the SQLite file (else each process counts alone)."""
    sessions = deployment.sessions
    if sessions.store == "redis" and sessions.url:
        from voxpipe.sessions.redis_limits import RedisWindows  # redis-py is optional: voxpipe[redis]

        return RedisWindows(sessions.url, deployment.name)
    if sessions.store == "sqlite":
        from voxpipe.sessions.sqlite_limits import SQLiteWindows

        return SQLiteWindows(sessions.path, deployment.name)
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
