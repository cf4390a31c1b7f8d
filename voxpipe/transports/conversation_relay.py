"""Twilio ConversationRelay on the server: Twilio recognises and speaks, voxpipe streams the LLM's text.

``POST /{name}/twiml`` (with ``transport.twilio.connect: conversation_relay``) answers
``<Connect><ConversationRelay url=wss://.../{name}/relay .../></Connect>``; then on ``WS /{name}/relay``:
``setup`` opens the session (keyed by ``sessionId``), ``prompt`` runs the LLM and streams
``{"type":"text","token":...,"last":false}`` as tokens arrive (``last: true`` closes the response),
``interrupt`` cancels the response and cuts the stored assistant turn to ``utteranceUntilInterrupt``,
keypad digits reach the agent as one entry (before the next prompt; an entry still pending when the session
ends is stored without calling the LLM), when the call cannot go on the deployment's ``on_failure`` text is
the last ``text`` before ``end`` (``handoffData`` reason ``failure``), and a tool's ``end_call``/``transfer``
ends the session with ``{"type":"end","handoffData":...}`` (``<Connect action>`` then dials a transfer target).

The messages and their rules are ``voxpipe.telephony.conversation_relay``'s (shared with the Lambda relay).
The call runs on the call host like any other, in the builder's text mode: a ``RelayTransport`` carries
text both ways, so each session leaves a ``CallRecord`` with text latency (prompt to first token, and to
``last``), its usage, cost and fallbacks. Twilio speaks, so a recorded call's recording is Twilio's: once the
record is saved, the session notes it for Twilio's recording callback (``twilio_recordings``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voxpipe.pipeline.builder import CallPipeline, TextTransport
from voxpipe.pipeline.failure import store_failure
from voxpipe.pipeline.host import CallHost, HostedCall
from voxpipe.pipeline.text_latency import TextTurnMeter
from voxpipe.providers.spec import AudioFormat
from voxpipe.records.model import CallFailure
from voxpipe.security.call_binding import without_token
from voxpipe.security.tokens import TokenError
from voxpipe.sessions.base import StoreUnavailable, append_turns
from voxpipe.telephony import conversation_relay as protocol
from voxpipe.telephony import keypad, keypad_entry
from voxpipe.transports import twilio_recordings
from voxpipe.transports.admission import admit_socket
from voxpipe.transports.json_socket import POLICY_VIOLATION, JsonSocket
from voxpipe.transports.media_stream_call import END_REPLY_TIMEOUT_SECS
from voxpipe.transports.twilio_account import (
    RESUME_SESSION,
    RETURN_RING_SECS,
    RETURN_SAY,
    RETURN_STATUS,
    TwilioAccount,
)


@dataclass
class HeardFrame(DataFrame):
    """Queued after an interruption: once it has passed the assistant aggregator, cut its last turn to ``text``."""

    text: str = ""
    interruptible: bool = field(default=False, init=False)  # a second barge-in must not drop the first's


class RelayOutput(FrameProcessor):
    """Streams the LLM's tokens to Twilio as they arrive, and tells the session when a response ended.

    Text to say verbatim (a ``TTSSpeakFrame``: a re-prompt, a filler, a goodbye) is sent as a response of its own,
    which the assistant aggregator records as the bot's words. Twilio speaks what it is sent, so the start and
    end of each response are reported upstream as the bot's speech (the caller's silence timer runs between).
    """

    def __init__(self, session: RelaySession):
        super().__init__()
        self._session = session
        self._responding = False  # between a response's start and its end or interruption
        self._spoke = False  # the response sent text (a tool call's response has none)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame):
            for part in (LLMFullResponseStartFrame(), LLMTextFrame(frame.text), LLMFullResponseEndFrame()):
                await self._relay(part, direction)
        else:
            await self._relay(frame, direction)

    async def _relay(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMFullResponseStartFrame):
            self._responding, self._spoke = True, False
        elif isinstance(frame, InterruptionFrame):
            self._responding = False  # what the cancelled response still pushes is never sent
        elif isinstance(frame, LLMTextFrame) and frame.text and self._responding:
            if not self._spoke:
                await self.push_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)
            self._spoke = True
            await self._session.send_text(frame.text, last=False)
        elif isinstance(frame, LLMFullResponseEndFrame) and self._responding:
            self._responding = False
            if self._spoke:
                await self._session.send_text("", last=True)
                self._session.response_ended.set()
                await self.push_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        await self.push_frame(frame, direction)


class HeardTail(FrameProcessor):
    """Last in the pipeline: applies ``HeardFrame`` corrections once the assistant aggregator has settled."""

    def __init__(self, session: RelaySession):
        super().__init__()
        self._session = session

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, HeardFrame):
            hosted = self._session.hosted
            if hosted is not None and hosted.recorder is not None:
                await hosted.recorder.truncate_last_assistant(frame.text)
            return
        await self.push_frame(frame, direction)


class RelayTransport(TextTransport):
    """The text transport of one session: prompts in (queued on the worker), tokens out, heard-text tail."""

    def __init__(self, session: RelaySession):
        super().__init__()
        self.turn_meter = TextTurnMeter()
        self._input = IdentityFilter(name="relay-input")  # prompts are queued at the pipeline's source
        self._output = RelayOutput(session)
        self._tail = HeardTail(session)

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output

    def tail(self) -> FrameProcessor:
        return self._tail


class RelaySession:
    """One ConversationRelay WebSocket: ``setup`` -> ``prompt`` / ``interrupt`` / ``dtmf`` ... -> close."""

    def __init__(self, host: CallHost, socket: WebSocket, twilio: TwilioAccount):
        self.host = host
        self.twilio = twilio  # binds the session to its webhook's CallSid
        self.channel = JsonSocket(socket, "type", self)
        self.session_id: str | None = None
        self.call_sid = ""  # Twilio's, from ``setup``
        self.hosted: HostedCall | None = None
        self.transport = RelayTransport(self)
        self.response_ended = asyncio.Event()
        self._pipeline: CallPipeline | None = None
        self._keypad = keypad_entry.KeypadEntry(self._user_turn)
        self._ending: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one message to Twilio (``False`` once the socket is gone)."""
        return await self.channel.send(message)

    async def send_text(self, token: str, *, last: bool) -> None:
        self.transport.turn_meter.sent(token, last=last)
        await self.send(protocol.text_token(token, last))

    async def run(self) -> None:
        try:
            async for raw in self.channel.messages():
                await self._handle(protocol.parse_message(raw))
        finally:
            pending = self._keypad.take()
            if self._ending is not None:
                self._ending.cancel()
            if self.hosted is not None:
                await self.hosted.close()  # the call's record is saved
                await twilio_recordings.record_saved(self.host, self.call_sid, self.hosted.call_id)
                if pending is not None:  # typed, never answered: kept in the conversation, no LLM call
                    await append_turns(self.host.store, self.hosted.call_id, [pending], expected=0)

    async def _handle(self, message: protocol.Inbound) -> None:
        if isinstance(message, protocol.Setup):
            if self.hosted is not None:
                logger.warning(f"{self}: a second setup on the same session ignored")
            else:
                await self._setup(message)
            return
        if isinstance(message, protocol.Unknown):
            logger.warning(f"{self}: message ignored ({message.reason}): {message.raw[:80]!r}")
            return
        if isinstance(message, protocol.RelayError):
            logger.warning(f"{self}: Twilio reported an error: {message.description}")
            return
        if self._pipeline is None:
            logger.warning(f"{self}: {type(message).__name__.lower()} before setup ignored")
            return
        if isinstance(message, protocol.Prompt):
            turn = protocol.caller_turn(message)
            if turn:  # keys typed before the caller spoke come first, in order, and are answered with it
                await self._user_turn({"role": "user", "content": turn}, typed=self._keypad.take())
        elif isinstance(message, protocol.Interrupt):
            await self._pipeline.worker.queue_frames([InterruptionFrame(), HeardFrame(text=message.heard)])
        elif isinstance(message, protocol.Dtmf):
            try:
                await self._keypad.press(message.digit)
            except keypad.NotADigit as problem:
                logger.warning(f"{self}: dtmf message ignored: {problem}")

    async def _user_turn(self, message: dict[str, Any], typed: dict[str, Any] | None = None) -> None:
        """The caller's words (or keypad entry) go to the LLM, after the keypad entry ``typed`` before them."""
        if self._pipeline is None:
            return
        self.response_ended.clear()
        if self._pipeline.silence is not None:
            await self._pipeline.silence.caller_spoke(answering=True)
        self.transport.turn_meter.prompted(str(message["content"]))
        messages = [typed, message] if typed is not None else [message]
        await self._pipeline.worker.queue_frame(LLMMessagesAppendFrame(messages=messages, run_llm=True))

    async def _setup(self, setup: protocol.Setup) -> None:
        if not setup.session_id:
            logger.warning(f"{self}: setup without a sessionId ignored")
            return
        try:
            await self.twilio.bind("conversation_relay", setup.call_sid, setup.custom_parameters)
        except TokenError as problem:
            logger.warning(f"{self}: setup for call {setup.call_sid!r} refused, the session is closed: {problem}")
            await self.channel.close(POLICY_VIOLATION, f"setup refused: {problem}")
            return
        except StoreUnavailable as problem:
            await self._fail_unopened(problem)
            return
        metadata = {
            "transport": "conversation_relay",
            "callSid": setup.call_sid,
            "from": setup.from_,
            "to": setup.to,
            "direction": setup.direction,
            "customParameters": without_token(setup.custom_parameters),
        }
        returned = setup.custom_parameters if setup.custom_parameters.get(RETURN_STATUS) else {}
        session_id = str(returned.get(RESUME_SESSION) or setup.session_id)  # back from a warm transfer: resume
        try:
            session = await self.host.open_session(session_id, metadata)
        except StoreUnavailable as problem:
            await self._fail_unopened(problem)
            return
        if session is None:
            logger.warning(f"{self}: session id {session_id} is not this call's to use; the session is closed")
            await self.channel.close()
            return
        self.session_id, self.call_sid = session_id, setup.call_sid
        greeting = self.host.deployment.agent.greeting
        if greeting and not session.messages:  # Twilio speaks welcomeGreeting: keep it in the conversation
            session.messages.append({"role": "assistant", "content": greeting})
            await self.host.store.append(setup.session_id, session.messages, expected=0)
        self.hosted = self.host.start_call(
            self.transport,
            session_id,
            setup.from_ or None,
            AudioFormat(),
            session,
            self._on_effect,
            on_failure=self._on_failure,
        )
        self._pipeline = await self.hosted.built()
        if returned:
            ring_secs = float(returned.get(RETURN_RING_SECS) or 0)
            await self.hosted.transfer_returned(str(returned[RETURN_STATUS]), ring_secs, str(returned[RETURN_SAY]))

    async def _on_effect(self, effect: str, arguments: dict[str, Any]) -> None:
        """``end_call``/``transfer``: after the reply that follows the tool, end the session with handoff data."""
        self.response_ended.clear()
        handoff = protocol.handoff(effect, arguments)
        if handoff.get("mode") == "warm":  # the <Connect action> webhook brings the caller back to this session
            handoff["session"] = self.session_id
        self._ending = asyncio.ensure_future(self._end_after_reply(handoff))

    async def _on_failure(self, failure: CallFailure) -> None:
        """The call cannot go on: Twilio speaks ``say`` as the last text, then ``end`` hands the call off (the
        ``<Connect action>`` dials ``transfer_to`` or hangs up). A response cut mid-way is closed by this text."""
        await self.send(protocol.text_token(failure.say, last=True))  # not the turn's reply: not metered
        handoff = protocol.failure_handoff(failure.transfer_to, failure.error.summary())
        await self.send(protocol.end_session(handoff))

    async def _fail_unopened(self, problem: StoreUnavailable) -> None:
        """The session cannot be opened (its store is out of reach): Twilio speaks ``on_failure``'s message and
        hands the call off, as when a provider fails, rather than leaving the caller in silence."""
        logger.error(f"{self}: {problem}; the caller is told on_failure's message")
        await self._on_failure(store_failure(self.host.deployment.on_failure, problem))

    async def _end_after_reply(self, handoff: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.response_ended.wait(), END_REPLY_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning(f"{self}: no reply within {END_REPLY_TIMEOUT_SECS:g}s after {handoff['reason']}")
        await self.send(protocol.end_session(handoff))

    def __str__(self) -> str:
        return f"conversation_relay session {self.session_id or '(no setup)'} [{self.host.deployment.name}]"


def add_routes(router: APIRouter, host: CallHost, twilio: TwilioAccount) -> None:
    @router.websocket("/relay")
    async def relay(socket: WebSocket) -> None:
        if not await twilio.accept_signed(socket, "relay"):
            return
        slot = await admit_socket(host, socket, None)  # the caller was counted at the webhook
        if slot is not None:
            async with slot:
                await RelaySession(host, socket, twilio).run()
