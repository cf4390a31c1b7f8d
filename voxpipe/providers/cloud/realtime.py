"""``realtime_session_class``: pipecat's OpenAI Realtime service with what a phone call needs of it.

Part of the public provider SDK: a plugin for any vendor speaking the OpenAI Realtime protocol builds on it.
What it adds to pipecat's ``OpenAIRealtimeLLMService`` (or a service built on it):

- the connect timeout is honoured, and a refused handshake or an ``error`` event ends the session with a
  classified, permanent error: pipecat would leave the call on a dead socket;
- a dropped connection is reconnected up to ``reconnect_attempts`` times (counted until a response completes
  again, so a flapping service runs out too), after 0, 0.25, 0.5, 1 s...; the new session gets the call's
  conversation back and a reply the drop cut short is asked for again (a short gap); then a permanent
  ``CONNECTIVITY`` error is pushed (which ends the call, or moves to a backup);
- a response with no output within ``response_timeout_secs`` is reported (the ``ResponseWatchdog``);
- pipecat sends its first context as conversation items and asks for a response; when that context holds
  the caller's turn that server VAD has already committed and is answering (or, for a quick reply, has
  answered and the aggregator has written too), only the history before it is sent, so the turn is neither
  duplicated nor answered twice;
- in a fallback chain: a failed session says what it heard and left unanswered (``unanswered_turn``); a
  backup handed the call (``ConversationHandoverFrame``) restores the conversation as after a reconnect and
  answers that turn once; a session retired by a switch is closed; a reply a drop cut short is marked with a
  ``ReplyCutFrame`` after its end, so its fragment leaves the conversation when it is asked for again;
- with ``pcmu=True`` (phone calls) the caller's audio goes out as G.711 and the model's comes back as it,
  decoded only to the PCM16 pipecat frames carry; a barge-in truncates at what the caller heard;
- the input transcription is billed: its usage (which pipecat drops) is reported as usage of
  ``transcription_model``, priced by the provider's entry for that model;
- a malformed event is logged and skipped (pipecat's receive loop would end the session on it);
- with ``interrupt_response=False`` (``interruptions.enabled: false``) every ``session.update`` tells the server
  VAD not to cancel the reply when the caller speaks (pipecat's ``server_vad`` model has no such field).

Each override of a pipecat private method here is pinned in ``voxpipe.providers.cloud.pins``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from voxpipe.providers.cloud.audio import PHONE_RATE, decode_mulaw
from voxpipe.providers.cloud.errors import realtime_error_category
from voxpipe.providers.cloud.service import CloudService

#: Seconds before reconnect attempt n (the last repeats): the first is at once, a blip costs no wait.
RECONNECT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)
_TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


class _CheckedSocket:
    """The session's WebSocket as pipecat's receive loop reads it, with two fixes on the way in.

    - A malformed event is logged and dropped: pipecat's parser raises on it, which ends the receive loop
      and so the session, for one bad message.
    - Each input transcription's ``usage`` is handed to ``on_usage`` (pipecat's event model drops the field).
    """

    def __init__(self, socket: Any, on_usage: Callable[[str, dict[str, Any]], None]) -> None:
        self._socket, self._on_usage = socket, on_usage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)

    async def __aiter__(self) -> AsyncIterator[Any]:
        from loguru import logger
        from pipecat.services.openai.realtime.events import parse_server_event

        async for message in self._socket:
            try:
                parse_server_event(message)
            except Exception as exc:
                logger.warning(f"Realtime: malformed event skipped: {str(exc)[:300]}")
                continue
            if isinstance(message, str) and _TRANSCRIBED in message:
                event = json.loads(message)
                if event.get("type") == _TRANSCRIBED and isinstance(event.get("usage"), dict):
                    self._on_usage(str(event.get("item_id")), event["usage"])
            yield message


def _turn_taken(messages: list[Any], heard: str) -> int | None:
    """Where the caller's turn ``heard`` (the last transcribed on the session) starts in ``messages``, or ``None``."""
    from pipecat.processors.aggregators.llm_context import standard_message_text

    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            text = " ".join(standard_message_text(message).split())
            return index if heard and text == heard else None
    return None


def transcription_usage(processor: str, model: str, usage: dict[str, Any]) -> Any:
    """The pipecat metrics of a Realtime transcription's ``usage`` (tokens, or seconds for whisper-1)."""
    from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData, STTUsage, STTUsageMetricsData

    if usage.get("type") == "duration":
        return STTUsageMetricsData(processor=processor, model=model, value=STTUsage(audio_seconds=usage["seconds"]))
    details = usage.get("input_token_details") or {}
    tokens = LLMTokenUsage(
        prompt_tokens=usage.get("input_tokens") or 0,
        completion_tokens=usage.get("output_tokens") or 0,
        total_tokens=usage.get("total_tokens") or 0,
        input_audio_tokens=details.get("audio_tokens"),
    )
    return LLMUsageMetricsData(processor=processor, model=model, value=tokens)


@functools.cache
def realtime_session_class(base: type) -> type:
    """``base`` (pipecat's ``OpenAIRealtimeLLMService`` or a service built on it) with the fixes above.

    Takes ``pcmu``, ``connect_timeout_secs``, ``reconnect_attempts``, ``transcription_model`` and
    ``interrupt_response`` besides ``CloudService``'s and ``base``'s arguments.
    """
    import base64

    from pipecat.frames import frames
    from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.openai.realtime import events
    from pipecat.utils.errors import ErrorCategory
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from voxpipe.audio import g711
    from voxpipe.pipeline.frames import BotAudioPlayedFrame, ConversationHandoverFrame, ReplyCutFrame

    answers = (frames.TTSAudioRawFrame, frames.LLMTextFrame, frames.FunctionCallsStartedFrame)

    class UninterruptedSessionUpdate(events.SessionUpdateEvent):
        """A ``session.update`` whose turn detection does not cancel the reply when the caller speaks."""

        def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            message = super().model_dump(*args, **kwargs)
            detection = ((message["session"].get("audio") or {}).get("input") or {}).get("turn_detection")
            if isinstance(detection, dict):
                detection["interrupt_response"] = False
            return message

    class RealtimeSession(CloudService, base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            *,
            pcmu: bool,
            connect_timeout_secs: float,
            reconnect_attempts: int = 2,
            transcription_model: str | None = None,
            interrupt_response: bool = True,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._interrupt_response = interrupt_response
            self._pcmu, self._connect_timeout_secs, self._heard = pcmu, connect_timeout_secs, ""
            self._reconnect_attempts, self._transcription_model = reconnect_attempts, transcription_model
            self._attempts_left = reconnect_attempts  # until a response completes: a flapping service runs out
            self._played_ms: int | None = None  # what the caller heard of the answer, when the transport knows
            self._restore_when_ready = self._answer_when_restored = False  # (after a reconnect)
            self._turn_pending = False  # the caller's turn ended (server VAD) and no response is done since
            self._transcription_usage: dict[str, dict[str, Any]] = {}

        async def process_frame(self, frame: frames.Frame, direction: FrameDirection) -> None:
            if isinstance(frame, BotAudioPlayedFrame):
                self._played_ms = frame.played_ms
                return
            if isinstance(frame, ConversationHandoverFrame):
                return await self._take_over(frame)
            await super().process_frame(frame, direction)

        # ------------------------------------------------------------------------------ fallback

        @property
        def unanswered_turn(self) -> str | None:
            """The caller's words this session heard and did not answer (a reply cut short counts as none), for a
            backup to answer; ``None`` when nothing is owed, or the words were not transcribed yet."""
            return self._heard if self._heard and (self._turn_pending or self._response_active) else None

        async def _take_over(self, handover: ConversationHandoverFrame) -> None:
            """A fallback switched the call here from a failed session: this one gets the conversation so far
            (as after a reconnect) and answers the turn the failed one left unanswered, once."""
            context = handover.context if isinstance(handover.context, LLMContext) else LLMContext()
            self._context, self._heard = context, handover.heard
            self._llm_needs_conversation_setup = True
            await self._process_completed_function_calls(send_new_results=False)
            self._restore_when_ready, self._answer_when_restored = True, handover.answer
            await self._restore()  # (now if the session is ready, else when it is)

        async def set_usable(self, is_usable: bool) -> None:
            """A session retired by a fallback is closed: a late reply would be billed for nothing."""
            await super().set_usable(is_usable)
            if not is_usable and self._websocket:  # (in a task: this may run in the receive loop it ends)
                self.watchdog.cancel()
                self.create_task(self._disconnect(), name="realtime_retire")

        async def _truncate_current_audio_response(self) -> None:
            """Truncate at the milliseconds the caller heard (pipecat uses the time since the answer began)."""
            current, played_ms = self._current_audio_response, self._played_ms
            self._played_ms = None
            if current is None or played_ms is None:
                return await super()._truncate_current_audio_response()
            self._current_audio_response = None
            sent_ms = self._calculate_audio_duration_ms(current.total_size, *((8000, 1) if self._pcmu else ()))
            await self.send_client_event(
                events.ConversationItemTruncateEvent(
                    item_id=current.item_id, content_index=current.content_index, audio_end_ms=min(played_ms, sent_ms)
                )
            )

        async def send_client_event(self, event: Any) -> None:
            """A ``session.update`` carries ``interrupt_response: false`` when the caller may not cut the bot off."""
            if not self._interrupt_response and isinstance(event, events.SessionUpdateEvent):
                event = UninterruptedSessionUpdate(**dict(event))
            await super().send_client_event(event)

        # ------------------------------------------------------------------------------ the connection

        async def _connect(self) -> None:
            """pipecat's ignores the connect timeout and only logs a refused handshake: the call would go on
            with no session."""
            if self._websocket:
                return
            try:
                await self._open()
            except Exception as exc:
                await self.push_error(f"cannot connect: {exc}", exception=exc, force_treat_as_permanent=True)

        async def _open(self) -> None:
            self._websocket = None
            socket = await connect(
                self.base_url, additional_headers=await self._auth_headers(), open_timeout=self._connect_timeout_secs
            )
            self._websocket = _CheckedSocket(socket, self._transcription_usage.__setitem__)
            self._receive_task = self.create_task(self._receive_task_handler())

        async def _receive_task_handler(self) -> None:
            """pipecat's ends quietly when the connection drops, leaving the call on a dead socket: here the
            session is reopened (see ``_reconnect``)."""
            problem, exc = "the server closed the connection", None
            try:
                await super()._receive_task_handler()
            except Exception as error:
                problem, exc = f"connection lost: {error}", error
            if self.is_usable and not self._disconnecting:  # (after an error event the session is over already)
                self.create_task(self._reconnect(problem, exc), name="realtime_reconnect")

        async def _reconnect(self, problem: str, exc: Exception | None) -> None:
            """Reopen a dropped session with the call's conversation; fail loudly when no attempt succeeds."""
            cut_short = self._response_active
            unanswered = cut_short or self._turn_pending  # (server VAD had the turn; no response done since)
            self.watchdog.cancel()
            if cut_short:  # end the reply the drop cut, as response.done would have: it is asked for again
                if self._current_audio_response is not None:
                    await self.push_frame(frames.TTSStoppedFrame())
                self._current_audio_response = None
                await self.push_frame(frames.LLMFullResponseEndFrame())
                await self.push_frame(ReplyCutFrame())
            await self._disconnect()
            from loguru import logger

            logger.warning(f"{self}: {problem}; reconnecting ({self._attempts_left} attempts left)")
            while self._attempts_left > 0:
                attempt = self._reconnect_attempts - self._attempts_left
                self._attempts_left -= 1
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                try:
                    await self._open()
                except Exception as error:
                    problem, exc = f"reconnect attempt {attempt + 1} failed: {error}", error
                    continue
                self._llm_needs_conversation_setup = True
                if self._context is not None:  # (none yet when the session drops before the call's start)
                    await self._process_completed_function_calls(send_new_results=False)
                self._restore_when_ready, self._answer_when_restored = True, unanswered
                return
            attempts = f"{self._reconnect_attempts} reconnect attempt(s)"
            await self.push_error(
                f"{problem} (session lost; {attempts})",
                exception=exc,
                category=ErrorCategory.CONNECTIVITY,
                force_treat_as_permanent=True,
            )

        async def _handle_evt_session_updated(self, evt: Any) -> None:
            """After a reconnect (or a takeover), the new session gets the conversation so far, and a turn the
            drop left unanswered (or a reply it cut) is answered."""
            await super()._handle_evt_session_updated(evt)
            await self._restore()

        async def _restore(self) -> None:
            ready = self._api_session_ready and self._llm_needs_conversation_setup
            if not (self._restore_when_ready and ready and self._context is not None):
                return  # (with no context yet, the call's first one restores it: see _handle_context)
            self._restore_when_ready = self._llm_needs_conversation_setup = False
            await self._send_history(self._conversation_so_far())
            if self._answer_when_restored:
                await self._create_response()

        def _conversation_so_far(self) -> list[Any]:
            """The call's context, and the caller's last turn if the context does not have it yet (the user
            aggregator adds it when the turn ends, which a drop mid-answer can come before)."""
            messages = list(self._context.get_messages()) if self._context is not None else []
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            last_user = " ".join(standard_message_text(users[-1]).split()) if users else ""
            if self._heard and self._heard != last_user:
                messages.append({"role": "user", "content": self._heard})
            return messages

        async def _send_history(self, messages: list[Any]) -> None:
            history = await self.get_llm_adapter().get_llm_invocation_params(LLMContext(messages))
            previous = "root"
            for item in history["messages"]:
                self._messages_added_manually[item.id] = True
                await self.send_client_event(events.ConversationItemCreateEvent(item=item, previous_item_id=previous))
                previous = item.id

        async def push_error(self, error_msg: str, exception: Exception | None = None, **kwargs: Any) -> None:
            """A send on a dropped connection is no failure of its own (pipecat reports each one): the receive
            loop sees the drop and reconnects, or reports the lost session."""
            if isinstance(exception, ConnectionClosed) and not kwargs.get("force_treat_as_permanent"):
                return
            await super().push_error(error_msg, exception=exception, **kwargs)

        async def _handle_evt_error(self, evt: Any) -> None:
            """pipecat's error has no category: here an auth, rate or server error is told from a bad request."""
            code = evt.error.code or evt.error.type or ""
            message = f"Realtime error {code}: {evt.error.message}"
            category = realtime_error_category(evt.error.code, evt.error.type)
            await self.push_error(message, category=category, force_treat_as_permanent=True)

        # ------------------------------------------------------------------------------ the conversation

        async def handle_evt_input_audio_transcription_completed(self, evt: Any) -> None:
            self._heard = " ".join(evt.transcript.split())
            usage = self._transcription_usage.pop(evt.item_id, None)
            if usage and self._transcription_model and self.usage_metrics_enabled:
                metrics = transcription_usage(self.name, self._transcription_model, usage)
                await self.push_frame(frames.MetricsFrame(data=[metrics]))
            await super().handle_evt_input_audio_transcription_completed(evt)

        async def _handle_context(self, context: LLMContext, direction: FrameDirection) -> None:
            """The first context may hold the turn server VAD already answered (or is answering): the user
            aggregator writes it when the reply starts, and the reply too by the time the frame is read when
            the reply was quick. pipecat would send it all and ask for an answer again; only the history
            before that turn is sent."""
            messages = context.get_messages()
            first = self._context is None and self._llm_needs_conversation_setup  # (a reconnect restores its own)
            if first and self._restore_when_ready:  # reopened (or taken over) before the call had a context
                self._context = context
                await self._process_completed_function_calls(send_new_results=False)
                return await self._restore()
            taken = _turn_taken(messages, self._heard) if first else None
            if taken is None:
                return await super()._handle_context(context, direction)
            self._context, self._llm_needs_conversation_setup = context, False
            await self._process_completed_function_calls(send_new_results=False)
            await self._send_history(messages[:taken])

        async def _create_response(self) -> None:
            """Arms the response watchdog."""
            await super()._create_response()
            self.watchdog.expect("response")

        async def _handle_evt_speech_started(self, evt: Any) -> None:
            """A new turn: what was heard of the last one is answered or moot."""
            self._heard = ""
            await super()._handle_evt_speech_started(evt)

        async def _handle_evt_speech_stopped(self, evt: Any) -> None:
            """Arms the response watchdog: server VAD creates the response."""
            await super()._handle_evt_speech_stopped(evt)
            self._turn_pending = True
            self.watchdog.expect("response")

        async def _handle_evt_response_done(self, evt: Any) -> None:
            """Disarms the response watchdog; the session works again, so a later drop gets every attempt."""
            self.watchdog.received()
            self._attempts_left, self._turn_pending = self._reconnect_attempts, False
            await super()._handle_evt_response_done(evt)

        # ------------------------------------------------------------------------------ G.711 audio

        async def _send_user_audio(self, frame: frames.InputAudioRawFrame) -> None:
            """pipecat always sends PCM16 at 24 kHz; a phone call's session takes G.711 at 8 kHz."""
            if not self._pcmu:
                return await super()._send_user_audio(frame)
            audio = await self._resampler.resample(frame.audio, frame.sample_rate, PHONE_RATE)
            payload = base64.b64encode(g711.encode(audio)).decode()
            await self.send_client_event(events.InputAudioBufferAppendEvent(audio=payload))

        def _calculate_audio_duration_ms(self, total_bytes: int, sample_rate: int = 24000, bytes_per_sample: int = 2):
            """G.711 is one byte per sample at 8 kHz, not pipecat's two at 24 kHz."""
            pcmu = (PHONE_RATE, 1) if self._pcmu else (sample_rate, bytes_per_sample)
            return super()._calculate_audio_duration_ms(total_bytes, *pcmu)

        async def push_frame(self, frame: frames.Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
            if isinstance(frame, answers):
                self.watchdog.received()
            pcmu_audio = self._pcmu and isinstance(frame, frames.TTSAudioRawFrame)
            await super().push_frame(decode_mulaw(frame) if pcmu_audio else frame, direction)

    return RealtimeSession
