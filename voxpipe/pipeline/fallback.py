"""Provider fallback: a role with several providers moves to the next one when the active one fails.

pipecat's ``ServiceSwitcherStrategyFailover`` switches only once the active service is *unusable*, which
pipecat reserves for permanent failures (a rejected key or request) or a service that gave up retrying. A
429, a 5xx, a refused or cut connection, or a request with no answer within ``response_timeout_secs`` (the
cloud services report these as ``RATE_LIMIT``, ``SERVER`` and ``CONNECTIVITY`` errors) leave it usable, so a
call would stay on a provider that is failing right now. ``FallbackSwitcher`` closes the gaps:

- it fails over on those errors too, retiring the failed service for the rest of the call (unless it is the
  last one left, which stays in use);
- it re-sends the request in flight to the next provider, so the turn is not lost: the LLM context (which
  holds the whole conversation, shared by every provider of the call), the text a TTS had not spoken yet,
  or the audio an STT had not transcribed yet;
- it drops what a retired service still produces (a slow reply arriving after the switch), and the words a
  TTS announced (``TTSTextFrame``) before failing to speak them: they are held until its first audio, so the
  call's transcript shows each reply once, as the backup spoke it;
- a realtime role has no request to re-send (the vendor holds the conversation and heard the caller's audio):
  the session switched to is handed the call's conversation (``conversation``, set by the builder) and the
  caller's words the failed session left unanswered (``ConversationHandoverFrame``), and answers them once;
- it records each switch as a ``FallbackEvent`` in ``events``;
- it remembers failures process-wide (``HEALTH``): a call starting within ``HEALTH.cooldown_secs`` of a
  provider's failure starts on the next one (recorded too), and once that time is past the primary is tried
  again, so a recovered primary serves later calls. Where the sessions live in Redis, ``HEALTH`` is shared
  with every process on it (``voxpipe.sessions.redis_health``): the fleet skips the primary and retries it
  together.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.processors.filters.function_filter import FunctionFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import ErrorCategory

from voxpipe.pipeline.frames import ConversationHandoverFrame
from voxpipe.records.model import FallbackEvent

COOLDOWN_SECS = 30.0
#: Errors that move a call to the next provider even though the failed service could carry on.
TRANSIENT = frozenset({ErrorCategory.CONNECTIVITY, ErrorCategory.SERVER, ErrorCategory.RATE_LIMIT, ErrorCategory.QUOTA})
#: At most this many frames wait to be re-sent (about 30 s of 20 ms audio for an STT).
MAX_PENDING = 1500


@dataclass(frozen=True)
class _Exchange:
    """What a role's service is asked (frames worth re-sending after a switch) and how it answers."""

    requests: tuple[type[Frame], ...]
    answers: tuple[type[Frame], ...]
    latest_only: bool = False  # a newer request replaces the older one (an LLM context holds all before it)


EXCHANGES = {
    "stt": _Exchange(
        (InputAudioRawFrame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame), (TranscriptionFrame,)
    ),
    "llm": _Exchange((LLMContextFrame,), (LLMTextFrame, FunctionCallsStartedFrame), latest_only=True),
    "tts": _Exchange(
        (TextFrame, TTSSpeakFrame, LLMFullResponseStartFrame, LLMFullResponseEndFrame), (TTSAudioRawFrame,)
    ),
}


class ProviderHealth:
    """When each ``(role, provider)`` last failed, shared by every call of the process.

    A provider that failed less than ``cooldown_secs`` ago is skipped by the calls that start meanwhile.
    ``listeners`` are told each failure seen here (role, provider, wall-clock time), to share it; ``learn``
    takes one seen elsewhere.
    """

    def __init__(self, cooldown_secs: float = COOLDOWN_SECS) -> None:
        self.cooldown_secs = cooldown_secs
        self._failed_at: dict[tuple[str, str], float] = {}
        self.listeners: list[Callable[[str, str, float], None]] = []

    def failed(self, role: str, provider: str) -> None:
        self._failed_at[(role, provider)] = time.monotonic()
        for listener in self.listeners:
            listener(role, provider, time.time())

    def learn(self, role: str, provider: str, failed_at_wall: float) -> None:
        """A failure at ``failed_at_wall`` (``time.time()``) seen by another process, unless a later one is known."""
        failed_at = time.monotonic() - (time.time() - failed_at_wall)
        if failed_at > self._failed_at.get((role, provider), float("-inf")):
            self._failed_at[(role, provider)] = failed_at

    def cooling_down(self, role: str, provider: str) -> float | None:
        """Seconds since the provider failed, if it is still cooling down."""
        failed_at = self._failed_at.get((role, provider))
        since = None if failed_at is None else time.monotonic() - failed_at
        return since if since is not None and since < self.cooldown_secs else None

    def clear(self) -> None:
        self._failed_at.clear()


HEALTH = ProviderHealth()


class _Failover(ServiceSwitcherStrategyFailover):
    """pipecat's failover, which also leaves a service failing with a transient error when another is usable."""

    async def handle_error(self, error: ErrorFrame) -> FrameProcessor | None:
        failed = error.processor or self._active_service
        others = any(s.is_usable for s in self._services if s is not failed)
        if failed.is_usable and error.category in TRANSIENT and others:
            await failed.set_usable(False)  # retired for this call; the next call builds a fresh one
        return await super().handle_error(error)

    def start_on(self, service: FrameProcessor) -> None:
        self._active_service = service


class FallbackSwitcher(ServiceSwitcher[_Failover]):
    """The services of one role, primary first, with failover, replay, events and cross-call memory."""

    def __init__(
        self,
        role: str,
        services: Sequence[FrameProcessor],
        providers: Sequence[str],
        *,
        events: list[FallbackEvent] | None = None,
        health: ProviderHealth = HEALTH,
    ) -> None:
        """``providers`` names each of ``services``; each switch is appended to ``events`` (e.g. the call meter's
        ``fallbacks``, which the call record takes), or to a list of the switcher's own."""
        super().__init__(services=list(services), strategy_type=_Failover)
        self.role = role
        self.events = events if events is not None else []
        self._providers = dict(zip(services, providers, strict=True))
        self._health = health
        self._exchange = EXCHANGES.get(role)
        self._pending: deque[tuple[Frame, FrameDirection]] = deque(maxlen=MAX_PENDING)
        self._unspoken: list[TTSTextFrame] = []  # words a TTS announced before any audio of the request
        self._started_at = time.monotonic()
        self.conversation: object | None = None  # the call's LLMContext, handed to a realtime backup
        # Begin on the first provider that is not cooling down after a recent failure (else on the primary).
        ready = next((s for s in services if health.cooling_down(role, self._providers[s]) is None), None)
        if ready is not None and ready is not self.strategy.active_service:
            primary = self.strategy.active_service
            since = health.cooling_down(role, self._providers[primary]) or 0.0
            self.strategy.start_on(ready)
            reason = f"{self._providers[primary]} failed {since:.0f} s ago (cooldown {health.cooldown_secs:g} s)"
            self._record(primary, ready, reason)

    @property
    def active_provider(self) -> str:
        """The provider the role is using now."""
        return self._providers[self.strategy.active_service]

    @staticmethod
    def _make_pipeline_definitions(services: list[FrameProcessor], strategy: _Failover) -> list[list[FrameProcessor]]:
        """pipecat's branches, plus a filter that drops what a service produces once it is no longer active."""

        def definition(service: FrameProcessor) -> list[FrameProcessor]:
            async def active(_: Frame) -> bool:
                return service is strategy.active_service

            return [*ServiceSwitcher._make_pipeline_definition(service, strategy), FunctionFilter(filter=active)]

        return [definition(service) for service in services]

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            self._started_at = time.monotonic()
        elif isinstance(frame, InterruptionFrame) and self.role != "stt":
            self._pending.clear()  # the caller spoke over the request: it is moot
            self._unspoken.clear()
        elif self._exchange is not None and isinstance(frame, self._exchange.requests):
            if self._exchange.latest_only:
                self._pending.clear()
            self._pending.append((frame, direction))
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        active = self.strategy.active_service
        if self.role == "tts" and direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, TTSTextFrame) and self._pending:
                self._unspoken.append(frame)  # not spoken yet: held until the audio comes (or a switch drops it)
                return
            if isinstance(frame, TTSAudioRawFrame):
                held, self._unspoken = self._unspoken, []
                for text in held:
                    await super().push_frame(text, direction)
        await super().push_frame(frame, direction)
        if self.strategy.active_service is not active:
            await self._switched(active, frame)
        elif self._exchange is not None and isinstance(frame, self._exchange.answers):
            self._pending.clear()

    async def _switched(self, failed: FrameProcessor, frame: Frame) -> None:
        """Record the switch and hand the request in flight to the service now active."""
        reason = f"{frame.category.value}: {frame.error}" if isinstance(frame, ErrorFrame) and frame.category else ""
        self._health.failed(self.role, self._providers[failed])
        self._record(failed, self.strategy.active_service, reason or "switched")
        pending, self._pending = list(self._pending), deque(maxlen=MAX_PENDING)
        self._unspoken.clear()
        if self.role == "realtime":
            heard = getattr(failed, "unanswered_turn", None) or ""
            handover = ConversationHandoverFrame(context=self.conversation, heard=heard, answer=bool(heard))
            await self.strategy.active_service.queue_frame(handover)
        for request, direction in _unanswered(pending):
            await self.strategy.active_service.queue_frame(request, direction)

    def _record(self, from_service: FrameProcessor, to_service: FrameProcessor, reason: str) -> None:
        self.events.append(
            FallbackEvent(
                role=self.role,
                from_provider=self._providers[from_service],
                to_provider=self._providers[to_service],
                reason=reason[:300],
                at_secs=round(time.monotonic() - self._started_at, 3),
            )
        )


def fallback_events(services: Mapping[str, FrameProcessor]) -> list[FallbackEvent]:
    """Every switch of a call's roles (``CallPipeline.services``), in the order they happened."""
    events = {id(e): e for s in services.values() if isinstance(s, FallbackSwitcher) for e in s.events}
    return sorted(events.values(), key=lambda event: event.at_secs)


def _unanswered(pending: list[tuple[Frame, FrameDirection]]) -> list[tuple[Frame, FrameDirection]]:
    """The requests to re-send, without the end of an utterance whose start was answered already (an STT whose
    endpointing finalized it before the VAD stopped): re-sent, it would be transcribed a second time."""
    started = False
    kept = []
    for frame, direction in pending:
        started = started or isinstance(frame, VADUserStartedSpeakingFrame)
        if started or not isinstance(frame, VADUserStoppedSpeakingFrame):
            kept.append((frame, direction))
    return kept
