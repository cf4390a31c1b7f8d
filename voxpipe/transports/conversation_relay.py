"""Twilio ConversationRelay: Twilio runs speech recognition and synthesis, voxpipe streams the LLM's text.

``POST /{name}/twiml`` (with ``transport.twilio.connect: conversation_relay``) answers
``<Connect><ConversationRelay url=wss://.../{name}/relay .../></Connect>``; then on ``WS /{name}/relay``:
``setup`` opens the session (keyed by ``sessionId``), ``prompt`` runs the LLM and streams
``{"type":"text","token":...,"last":false}`` as tokens arrive (``last: true`` closes the response),
``interrupt`` cancels the response and cuts the stored assistant turn to ``utteranceUntilInterrupt``,
``dtmf`` reaches the agent as a user message, and a tool's ``end_call``/``transfer`` ends the session with
``{"type":"end","handoffData":...}`` (``<Connect action>`` then dials a transfer target).

Only the deployment's ``llm`` role is used: the pipeline is user aggregator -> LLM -> relay output ->
assistant aggregator -> heard-text tail, and it carries text only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
from twilio.twiml.voice_response import Connect, VoiceResponse

from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext, CallPipeline, build_service
from voxpipe.pipeline.fallback import FallbackSwitcher
from voxpipe.pipeline.metering import CallMeter, ServiceRef
from voxpipe.pipeline.tools import register_tools, tools_schema
from voxpipe.server.signatures import public_url
from voxpipe.transports.twilio_media import (
    END_REPLY_TIMEOUT_SECS,
    DtmfCollector,
    JsonSocket,
    Malformed,
    accept_signed,
)

if TYPE_CHECKING:
    from voxpipe.server.app import DeploymentHost, HostedCall
    from voxpipe.sessions import SessionRecorder


def relay_twiml(deployment: Deployment) -> str:
    """``<Connect action=...><ConversationRelay url=wss://.../relay .../></Connect>`` from the YAML."""
    relay = deployment.transport.conversation_relay
    response = VoiceResponse()
    connect = Connect(action=public_url(deployment, "connect-action"))
    connect.conversation_relay(
        url=public_url(deployment, "relay", websocket=True),
        welcome_greeting=deployment.agent.greeting,
        language=relay.language,
        interruptible=relay.interruptible,
        dtmf_detection=relay.dtmf_detection,
        tts_provider=relay.tts_provider,
        voice=relay.voice,
        transcription_provider=relay.transcription_provider,
    )
    response.append(connect)
    return str(response)


@dataclass
class HeardFrame(DataFrame):
    """Queued after an interruption: once it has passed the assistant aggregator, cut its last turn to ``text``."""

    text: str = ""
    interruptible: bool = field(default=False, init=False)  # a second barge-in must not drop the first's


class RelayOutput(FrameProcessor):
    """Streams the LLM's tokens to Twilio as they arrive, and tells the session when a response ended."""

    def __init__(self, session: RelaySession):
        super().__init__()
        self._session = session
        self._responding = False  # between a response's start and its end or interruption
        self._spoke = False  # the response sent text (a tool call's response has none)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame):
            self._responding, self._spoke = True, False
        elif isinstance(frame, InterruptionFrame):
            self._responding = False  # what the cancelled response still pushes is never sent
        elif isinstance(frame, LLMTextFrame) and frame.text and self._responding:
            self._spoke = True
            await self._session.send({"type": "text", "token": frame.text, "last": False})
        elif isinstance(frame, LLMFullResponseEndFrame) and self._responding:
            self._responding = False
            if self._spoke:
                await self._session.send({"type": "text", "token": "", "last": True})
                self._session.response_ended.set()
        await self.push_frame(frame, direction)


class HeardTail(FrameProcessor):
    """Last in the pipeline: applies ``HeardFrame`` corrections once the assistant aggregator has settled."""

    def __init__(self) -> None:
        super().__init__()
        self.recorder: SessionRecorder | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, HeardFrame):
            if self.recorder is not None:
                await self.recorder.truncate_last_assistant(frame.text)
            return
        await self.push_frame(frame, direction)


def build_relay_call(
    deployment: Deployment, call: CallContext, session: RelaySession, host: DeploymentHost
) -> tuple[CallPipeline, HeardTail]:
    """The text-only pipeline of one ConversationRelay session (the ``llm`` chain, tools and context)."""
    refs: dict[str, ServiceRef] = {}
    services = []
    configs = deployment.services("llm")
    for config in configs:
        service, ref = build_service("llm", config, deployment, call, host.registry)
        register_tools(service, deployment.agent, host.registry, call.on_effect)
        refs[service.name] = ref
        services.append(service)
    llm = services[0] if len(services) == 1 else FallbackSwitcher("llm", services, [c.provider for c in configs])
    tools = tools_schema(deployment.agent, host.registry)
    context = LLMContext(list(call.history), tools=tools) if tools else LLMContext(list(call.history))
    # Twilio decides when the caller's turn ends; no local turn model is loaded.
    user_params = LLMUserAggregatorParams(user_turn_strategies=ExternalUserTurnStrategies())
    aggregators = LLMContextAggregatorPair(context, user_params=user_params)
    tail = HeardTail()
    pipeline = Pipeline([aggregators.user(), llm, RelayOutput(session), aggregators.assistant(), tail])
    meter = CallMeter(refs, price_overrides=deployment.pricing)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
        observers=meter.observers,
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=call.idle_timeout_secs,
        cancel_runner_on_idle_timeout=False,
        conversation_id=call.call_id,
    )
    return CallPipeline(deployment, call, pipeline, worker, context, {"llm": llm}, meter), tail


class RelaySession:
    """One ConversationRelay WebSocket: ``setup`` -> ``prompt`` / ``interrupt`` / ``dtmf`` ... -> close."""

    def __init__(self, host: DeploymentHost, socket: WebSocket):
        self.host = host
        self.channel = JsonSocket(socket, "type", self)
        self.session_id: str | None = None
        self.hosted: HostedCall | None = None
        self.response_ended = asyncio.Event()
        self._prompt: list[str] = []
        self._dtmf: DtmfCollector | None = None
        self._ending: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one message to Twilio (``False`` once the socket is gone)."""
        return await self.channel.send(message)

    async def run(self) -> None:
        try:
            async for message in self.channel.messages():
                try:
                    await self._handle(message["type"], message)
                except Malformed as problem:
                    logger.warning(f"{self}: {message['type']} message ignored: {problem}")
        finally:
            if self._dtmf is not None:
                self._dtmf.close()
            if self._ending is not None:
                self._ending.cancel()
            if self.hosted is not None:
                await self.hosted.close()

    async def _handle(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "setup":
            if self.hosted is not None:
                raise Malformed("a second setup on the same session")
            await self._setup(message)
            return
        if self.hosted is None or self._dtmf is None:
            raise Malformed(f"'{kind}' before 'setup'")
        worker = self.hosted.pipeline.worker
        if kind == "prompt":
            self._prompt.append(str(message.get("voicePrompt") or ""))
            if message.get("last", True):
                text, self._prompt = " ".join(p for p in self._prompt if p).strip(), []
                if text:
                    self.response_ended.clear()
                    user = {"role": "user", "content": text}
                    await worker.queue_frame(LLMMessagesAppendFrame(messages=[user], run_llm=True))
        elif kind == "interrupt":
            heard = str(message.get("utteranceUntilInterrupt") or "")
            await worker.queue_frames([InterruptionFrame(), HeardFrame(text=heard)])
        elif kind == "dtmf":
            await self._dtmf.press(str(message.get("digit", "")))
        elif kind == "error":
            logger.warning(f"{self}: Twilio reported an error: {message.get('description')}")
        else:
            raise Malformed(f"unknown message type '{kind}'")

    async def _setup(self, message: dict[str, Any]) -> None:
        session_id = message.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise Malformed("setup without a sessionId")
        metadata = {
            "transport": "conversation_relay",
            **{key: message.get(key) for key in ("callSid", "from", "to", "direction", "customParameters")},
        }
        session = await self.host.open_session(session_id, metadata)
        if session is None:
            raise Malformed(f"session id {session_id} belongs to another deployment")
        self.session_id = session_id
        greeting = self.host.deployment.agent.greeting
        if greeting and not session.messages:  # Twilio speaks welcomeGreeting: keep it in the conversation
            session.messages.append({"role": "assistant", "content": greeting})
            await self.host.store.append(session_id, session.messages, expected=0)
        caller = message.get("from")
        call = CallContext(
            session_id,
            caller if isinstance(caller, str) else None,
            on_effect=self._on_effect,
            history=list(session.messages),
        )
        pipeline, tail = build_relay_call(self.host.deployment, call, self, self.host)
        self.hosted = self.host.run(pipeline, session)
        tail.recorder = self.hosted.recorder
        self._dtmf = DtmfCollector(pipeline.worker.queue_frame)

    async def _on_effect(self, effect: str, arguments: dict[str, Any]) -> None:
        """``end_call``/``transfer``: after the reply that follows the tool, end the session with handoff data."""
        result = arguments.get("result") or {}
        handoff = {"reason": effect, **({"to": result.get("to")} if effect == "transfer" else {})}
        if arguments.get("reason"):
            handoff["detail"] = arguments["reason"]
        self.response_ended.clear()
        self._ending = asyncio.ensure_future(self._end_after_reply(handoff))

    async def _end_after_reply(self, handoff: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.response_ended.wait(), END_REPLY_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: no reply within {END_REPLY_TIMEOUT_SECS:g}s after {handoff['reason']}")
        await self.send({"type": "end", "handoffData": json.dumps(handoff)})

    def __str__(self) -> str:
        return f"conversation_relay session {self.session_id or '(no setup)'} [{self.host.deployment.name}]"


def add_routes(router: APIRouter, host: DeploymentHost) -> None:
    @router.websocket("/relay")
    async def relay(socket: WebSocket) -> None:
        if await accept_signed(host, socket, "relay"):
            await RelaySession(host, socket).run()
