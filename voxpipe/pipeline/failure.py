"""When a call cannot go on: recognise the error that ends it, tell the transport, and end the call at once.

A provider error ends a call when no backup is left to take the work: the role has one provider, or its
``FallbackSwitcher`` could not switch (a switch absorbs the error, so what reaches the worker was not
recovered). Such an error is *fatal* if the provider is beyond use (a permanent category such as a rejected
key, or marked unusable) or failing right now (``TRANSIENT``: 429, 5xx, a cut or refused connection, no
answer within ``response_timeout_secs``): the turn in flight will never be answered, and waiting for the
idle timeout would leave the caller in dead air. Any other processor that reports itself unusable ends the
call too (what pipecat's ``ProcessorUnusablePolicy.END`` would do, but telling the caller first).

``FailureWatch`` listens to the worker's ``on_pipeline_error``. On the first fatal error it

1. marks the error fatal in the call's record (the meter keeps role, provider, kind and message);
2. builds the ``CallFailure`` from the deployment's ``on_failure`` (what the caller is told, then hang up or
   transfer) and hands it, once, to the transport through ``CallContext.on_failure``: each transport carries
   it out its own way (Twilio ``<Say>`` + ``<Dial>``/``<Hangup>``, ConversationRelay a last text then
   ``end`` with handoff data, the browser shows and speaks it, ``voxpipe call`` prints it);
3. cancels the call's worker, so the call ends within milliseconds, not at the idle timeout. What was
   completed stays measured: turns, usage and fallback events are kept by observers that saw them happen.

``BrokenService`` stands in for a provider whose ``build()`` raised: it reports the build error (category
``APPLICATION``, permanent) when the call starts, so a fallback chain moves on to the next provider and a
role with no backup ends the call through the same path, with one clear error instead of a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, StartFrame
from pipecat.pipeline.service_switcher import ServiceSwitcher
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory

from voxpipe.config.models import OnFailureConfig
from voxpipe.pipeline.fallback import TRANSIENT
from voxpipe.pipeline.metering import CallMeter
from voxpipe.records.model import CallError, CallFailure

FailureHandler = Callable[[CallFailure], Awaitable[None]]


class FailureListener(Protocol):
    """What the watch needs of the call's ``CallContext``: its transport's handler, read when the call fails."""

    on_failure: FailureHandler


#: The transport gets this long to carry out ``on_failure`` before the call is cancelled regardless.
HANDLER_TIMEOUT_SECS = 1.0


async def log_failure(failure: CallFailure) -> None:
    """The default ``on_failure``: a transport that cannot speak to the caller just logs the outcome."""
    logger.warning(f"call failed ({failure.error.summary()}); caller is told {failure.say!r}, then {failure.then}")


class BrokenService(FrameProcessor):
    """A provider whose ``build()`` raised: it passes frames through and reports the error once the call starts."""

    error_kind = "build"  # the record's ``CallError.kind`` (see ``CallMeter.note_error``)

    def __init__(self, role: str, provider: str, error: Exception):
        super().__init__(name=f"{role}:{provider}:unbuilt")
        self.message = f"could not build the {role} provider {provider!r}: {type(error).__name__}: {error}"

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_error(self.message, category=ErrorCategory.APPLICATION, force_treat_as_permanent=True)


def is_fatal(error: ErrorFrame, meter: CallMeter) -> bool:
    """Whether an error that reached the worker leaves a role of the call with no provider able to go on."""
    processor = error.processor
    if error.fatal or (processor is not None and not processor.is_usable):
        return True
    if processor is None or meter.role_of(processor) is None:
        return False  # not a provider's error (a tool, a malformed message): the call goes on
    if isinstance(processor, ServiceSwitcher):
        return True  # the switcher reports only a failure it had nowhere left to switch away from
    category = error.category or ErrorCategory.UNKNOWN
    return category.is_permanent or category in TRANSIENT


def failure_of(config: OnFailureConfig, error: CallError, at_secs: float) -> CallFailure:
    """How the deployment's ``on_failure`` ends a call that ``error`` stopped ``at_secs`` into it."""
    return CallFailure(
        say=config.say,
        then="transfer" if config.transfer_to else "hangup",
        transfer_to=config.transfer_to,
        error=error,
        at_secs=at_secs,
    )


def store_failure(config: OnFailureConfig, problem: Exception) -> CallFailure:
    """A call that cannot start because its session store is out of reach: told ``on_failure``'s message,
    transferred or hung up, rather than left in silence."""
    return failure_of(config, CallError(kind="session_store", message=str(problem), fatal=True), 0.0)


class FailureWatch:
    """Ends a call on its first fatal error, through the deployment's ``on_failure`` (see the module docstring)."""

    def __init__(self, on_failure: OnFailureConfig, call: FailureListener, meter: CallMeter):
        self.config = on_failure
        self.call = call
        self.meter = meter

    def attach(self, worker: PipelineWorker) -> None:
        worker.add_event_handler("on_pipeline_error", self._on_error)

    async def _on_error(self, worker: PipelineWorker, error: ErrorFrame) -> None:
        recorded = self.meter.note_error(error)
        if self.meter.failure is not None or not is_fatal(error, self.meter):
            return
        recorded.fatal = True
        failure = failure_of(self.config, recorded, round(time.monotonic() - self.meter.started_at, 3))
        self.meter.failure = failure
        logger.warning(f"call {worker.name}: {recorded.summary()}; ending it ({failure.then})")
        try:
            await asyncio.wait_for(self.call.on_failure(failure), HANDLER_TIMEOUT_SECS)
        except Exception as exc:  # a transport that fails to speak must not keep the call alive
            logger.error(f"on_failure handler failed: {exc!r}")
        await worker.cancel(reason=f"{recorded.summary()}")
