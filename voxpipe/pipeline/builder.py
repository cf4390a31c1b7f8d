"""Deployment + call context -> the pipecat pipeline of one call.

cascade:  transport in -> STT -> user aggregator (VAD + turn strategy) -> LLM -> TTS -> transport out
          -> assistant aggregator
realtime: transport in -> user aggregator -> realtime service -> transport out -> assistant aggregator
text:     transport in -> user aggregator -> LLM -> transport out -> assistant aggregator -> transport tail
          (a ``TextTransport``, ConversationRelay: the peer recognises and speaks; only the ``llm`` role runs)

This module and the registry are the only places that see every role; providers and transports know
nothing of each other. Each call gets its own worker (and, in ``run_call``, its own runner), so one call's
idle timeout or failure never ends another. A provider whose ``build()`` raises does not stop the build: it
becomes a ``BrokenService`` that fails when the call starts, so the call ends (or falls back) like any other
failing call, through ``voxpipe.pipeline.failure``.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipecat.clocks.base_clock import BaseClock
from pipecat.frames.frames import EndWorkerFrame, Frame, LLMMessagesAppendFrame, TTSSpeakFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.service_switcher import ServiceSwitcher
from pipecat.pipeline.worker import PipelineParams, PipelineWorker, ProcessorUnusablePolicy
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies, UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from voxpipe.config.models import Deployment, ServiceConfig, SmartTurn
from voxpipe.pipeline.aggregators import aggregator_pair
from voxpipe.pipeline.barge_in import ReplyResumer, start_strategies
from voxpipe.pipeline.call_observer import CallObserver
from voxpipe.pipeline.endpointing import Endpointing, SilenceEndpointing, SmartTurnEndpointing
from voxpipe.pipeline.failure import BrokenService, FailureHandler, FailureWatch, log_failure
from voxpipe.pipeline.fallback import FallbackSwitcher
from voxpipe.pipeline.fillers import SlowToolFillers
from voxpipe.pipeline.keeping import CallKeeping
from voxpipe.pipeline.metering import CallMeter, ServiceRef
from voxpipe.pipeline.reply_withdrawal import ReplyWithdrawal
from voxpipe.pipeline.shared_models import SharedSmartTurnAnalyzer
from voxpipe.pipeline.silence import SilenceWatch, first_timeout
from voxpipe.pipeline.text_latency import TextTurnMeter
from voxpipe.pipeline.tools import EffectHandler, register_tools, tools_schema
from voxpipe.pipeline.transfer import recorded_effects
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.providers.spec import AudioFormat, ServiceRequest

IDLE_TIMEOUT_SECS = 300.0


async def _no_effect(effect: str, arguments: dict[str, Any]) -> None:
    return None


@dataclass
class CallContext:
    """What the transport knows about one call before it starts."""

    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    caller_id: str | None = None
    audio: AudioFormat = field(default_factory=AudioFormat)
    on_effect: EffectHandler = _no_effect
    # Called once when the call cannot go on (the deployment's on_failure); the call is then cancelled.
    on_failure: FailureHandler = log_failure
    idle_timeout_secs: float = IDLE_TIMEOUT_SECS
    history: list[dict[str, Any]] = field(default_factory=list)  # messages of a resumed conversation


@dataclass
class CallPipeline:
    """The built pipeline of one call, with handles the transport and observers need."""

    deployment: Deployment
    call: CallContext
    pipeline: Pipeline
    worker: PipelineWorker
    context: LLMContext
    services: dict[str, FrameProcessor]
    meter: CallMeter
    keeping: CallKeeping  # recording, trace, redaction; its ``redactor`` masks the history the host stores
    silence: SilenceWatch | None = None

    def opening_frames(self) -> list[Frame]:
        """Frames to queue once the caller is connected: the greeting, if the agent has one."""
        greeting = self.deployment.agent.greeting
        if not greeting or self.call.history:  # a resumed call is not greeted again
            return []
        return self.say_frames(greeting, "Greet the caller by saying exactly")

    def say_frames(self, text: str, instruction: str = "Say exactly") -> list[Frame]:
        """Frames that make the bot say ``text`` verbatim; it enters the history as the bot's words.

        A cascade (and a text transport, whose output sends it as a reply) speaks it with the TTS; a realtime
        model speaks for itself, so it is asked to say it verbatim.
        """
        if self.deployment.mode == "cascade" or "llm" in self.services:
            return [TTSSpeakFrame(text)]
        message = {"role": "user", "content": f"{instruction}: {text}"}
        return [LLMMessagesAppendFrame(messages=[message], run_llm=True)]

    async def say(self, text: str, instruction: str = "Say exactly") -> None:
        """Make the bot say ``text`` verbatim now (a re-prompt, a goodbye, a line after a transfer).

        A realtime model is asked through its service: a message that reaches the service is handed to the
        session, and answered once the assistant aggregator sends the context back. Queued at the start of
        the pipeline, it would reach the service only as a context from the user aggregator, which a realtime
        session takes in without answering (the greeting, the first context of the call, is the exception).
        """
        frames = self.say_frames(text, instruction)
        realtime = self.services.get("realtime")
        if realtime is not None and isinstance(frames[0], LLMMessagesAppendFrame):
            await realtime.queue_frame(frames[0])
        else:
            await self.worker.queue_frames(frames)

    async def hang_up(self) -> None:
        """End the call gracefully: queued audio (the bot's last words) plays first."""
        await self.worker.queue_frame(EndWorkerFrame())


class TextTransport(BaseTransport):
    """A transport that carries text both ways: its peer does speech recognition and synthesis.

    Its input pushes the caller's words as ``LLMMessagesAppendFrame``s, its output sends the LLM's text, and
    its ``tail`` (last in the pipeline, after the assistant aggregator) sees what the context settled on.
    It tells ``turn_meter`` what was said and sent, which is how its calls are measured.
    """

    turn_meter: TextTurnMeter

    @abc.abstractmethod
    def tail(self) -> FrameProcessor:
        """The processor after the assistant aggregator."""


def build_service(
    role: str, config: ServiceConfig, deployment: Deployment, call: CallContext, registry: Registry
) -> tuple[Any, ServiceRef]:
    """Build one provider's pipecat service (or VAD analyzer) for this call, and say what it stands for."""
    registered = registry.get(role, config.provider)
    if registered is None:  # validated configs never get here; apply_overrides re-validates
        raise LookupError(f"unknown {role} provider {config.provider!r}")
    provider = registered.provider
    model = config.model or provider.default_model
    request = ServiceRequest(
        call_id=call.call_id,
        model=model,
        options=provider.options.model_validate(config.options),
        agent=deployment.agent,
        vad=deployment.vad.resolved(),
        audio=call.audio,
        barge_in=deployment.interruptions.enabled,
    )
    return provider.build(request), ServiceRef(role, provider, model)


def _build_role(
    role: str, deployment: Deployment, call: CallContext, registry: Registry, meter: CallMeter
) -> FrameProcessor:
    """The role's service; a chain of several providers becomes a fallback switcher (primary first)."""
    configs = deployment.services(role)
    services = []
    for config in configs:
        try:
            service, ref = build_service(role, config, deployment, call, registry)
        except Exception as exc:  # a plugin's bug or a bad option: this call's problem, reported when it starts
            registered = registry.get(role, config.provider)
            if registered is None:
                raise
            service = BrokenService(role, config.provider, exc)
            ref = ServiceRef(role, registered.provider, config.model)
        meter.services[service.name] = ref
        services.append(service)
    if len(services) == 1:
        return services[0]
    return FallbackSwitcher(role, services, [config.provider for config in configs], events=meter.fallbacks)


def build_llm(deployment: Deployment, call: CallContext, registry: Registry, meter: CallMeter) -> FrameProcessor:
    """The deployment's ``llm`` role with the agent's tools registered, for pipelines that carry text only."""
    llm = _build_role("llm", deployment, call, registry, meter)
    for service in _llm_services(llm):
        register_tools(service, deployment.agent, registry, call.on_effect)
    return llm


def _user_params(deployment: Deployment, call: CallContext, registry: Registry) -> LLMUserAggregatorParams:
    interruptions = deployment.interruptions
    if deployment.mode == "realtime":
        # The realtime provider's server VAD owns turn-taking (configured from the `vad` section).
        return LLMUserAggregatorParams(
            user_turn_strategies=ExternalUserTurnStrategies(enable_interruptions=interruptions.enabled)
        )
    vad, _ = build_service("vad", _vad_config(deployment), deployment, call, registry)
    strategies = UserTurnStrategies(start=start_strategies(interruptions), stop=[_stop_strategy(deployment)])
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
        user_turn_strategies=strategies,
        # A barge-in without words resumes the cut-off reply instead of asking the caller to repeat.
        **({"empty_user_turn": None} if interruptions.resume_after_secs else {}),
    )


def _stop_strategy(deployment: Deployment) -> Endpointing:
    turn = deployment.turn
    timing: dict[str, Any] = {
        "speculate": turn.speculate,
        "unfinished_extra_delay": turn.unfinished_extra_delay,
        "no_words_timeout": deployment.interruptions.resume_after_secs,
    }
    if isinstance(turn, SmartTurn):
        analyzer = SharedSmartTurnAnalyzer(params=_smart_turn_params(turn))
        return SmartTurnEndpointing(turn_analyzer=analyzer, **timing)
    return SilenceEndpointing(user_speech_timeout=turn.min_delay, **timing)


def _smart_turn_params(turn: SmartTurn) -> Any:
    from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

    return SmartTurnParams(stop_secs=turn.max_silence_secs)


def _vad_config(deployment: Deployment) -> ServiceConfig:
    return ServiceConfig(provider=deployment.vad.provider, options=deployment.vad.options)


def build_call(
    deployment: Deployment,
    transport: BaseTransport,
    call: CallContext | None = None,
    *,
    observers: Sequence[BaseObserver] = (),
    clock: BaseClock | None = None,
    registry: Registry | None = None,
    keeping: CallKeeping | None = None,
) -> CallPipeline:
    """Build the pipeline and worker of one call. Nothing runs until the worker is run.

    ``keeping`` is the call's recording, trace and redaction (made here when not given: redaction only); the
    builder adds its transcript redactor and the hook of ``sensitive`` tools, and gives it the usage meter.
    """
    call = call or CallContext()
    registry = registry or default_registry()
    meter = CallMeter({}, price_overrides=deployment.pricing)
    keeping = keeping or CallKeeping(deployment)  # a call measured otherwise (text) is still redacted
    keeping.meter = meter
    text = isinstance(transport, TextTransport)
    roles = ["llm"] if text else deployment.roles()
    services = {role: _build_role(role, deployment, call, registry, meter) for role in roles}
    llm_role = "llm" if text or deployment.mode == "cascade" else "realtime"
    tools = tools_schema(deployment.agent, registry)
    context = LLMContext(messages=list(call.history), tools=tools) if tools else LLMContext(list(call.history))
    if isinstance(services[llm_role], FallbackSwitcher):
        services[llm_role].conversation = context  # (a realtime backup is handed the conversation)
    fillers = SlowToolFillers(deployment.fillers, realtime=llm_role == "realtime", meter=meter, context=context)
    for llm in _llm_services(services[llm_role]):
        effects = recorded_effects(call.on_effect, meter)
        register_tools(llm, deployment.agent, registry, effects, fillers, keeping.on_sensitive)
    # A text peer decides when the caller's turn ends: no VAD or turn model is loaded.
    user_params = (
        LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
        if text
        else _user_params(deployment, call, registry)
    )
    if deployment.silence is not None:
        user_params.user_idle_timeout = first_timeout(deployment.silence)
    cascade = not text and deployment.mode == "cascade"
    user, assistant = aggregator_pair(
        context, user_params, realtime=not text and deployment.mode == "realtime", cascade=cascade
    )
    processors: list[FrameProcessor] = [transport.input()]
    redactors = keeping.processors()  # redact.before_llm
    turn_observers: list[BaseObserver] = []
    if text:
        processors += [*redactors, user, services["llm"]]
    elif cascade:
        processors += [services["stt"], *redactors, user, services["llm"], services["tts"]]
        resumer = ReplyResumer(meter.turn_taking_stats, resume=bool(deployment.interruptions.resume_after_secs))
        resumer.attach(user, assistant)
        turn_observers.append(resumer)
    else:
        processors += [user, services["realtime"]]
    processors += [transport.output(), assistant]
    if llm_role == "realtime":  # (a reply a dropped session cut short is asked again: the fragment is withdrawn)
        processors.append(ReplyWithdrawal(context))
    if isinstance(transport, TextTransport):
        processors.append(transport.tail())
    pipeline = Pipeline(processors)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=call.audio.sample_rate_in,
            audio_out_sample_rate=call.audio.sample_rate_out,
            enable_metrics=True,
            enable_usage_metrics=True,
            send_initial_empty_metrics=False,  # pipecat's zero TTFB records would skew every average
        ),
        observers=[*meter.observers, *turn_observers, *observers],
        clock=clock,
        enable_rtvi=False,  # lean by default: only a browser client needs RTVI
        enable_turn_tracking=False,
        idle_timeout_secs=call.idle_timeout_secs,
        cancel_runner_on_idle_timeout=False,
        # A call whose provider is beyond use (bad key, dead session, no fallback left) ends at once through
        # FailureWatch (below), which tells the caller first; pipecat's END policy would queue an EndFrame
        # that a stuck service can hold for seconds, ahead of the cancel.
        processor_unusable_policy=ProcessorUnusablePolicy.CONTINUE,
        conversation_id=call.call_id,
    )
    CallObserver.install(worker)  # observers told inline: no queue and task per call (call_observer)
    FailureWatch(deployment.on_failure, call, meter).attach(worker)
    built = CallPipeline(deployment, call, pipeline, worker, context, services, meter, keeping)
    if deployment.silence is not None:
        built.silence = SilenceWatch(deployment.silence, worker, meter, built.say, call.on_effect)
        built.silence.attach(user, assistant)
    return built


def _llm_services(service: FrameProcessor) -> list[Any]:
    """The LLM services of a role: the service itself, or every service of a failover switcher."""
    services = list(service.strategy.services) if isinstance(service, ServiceSwitcher) else [service]
    return [s for s in services if not isinstance(s, BrokenService)]


async def run_call(call_pipeline: CallPipeline) -> None:
    """Run one call to its end on a runner of its own."""
    runner = WorkerRunner(handle_sigint=False, name=f"call-{call_pipeline.call.call_id}")
    await runner.add_workers(call_pipeline.worker)
    await runner.run()
