"""The shared base of the cloud provider plugins: options, shared clients, errors, timeouts, Realtime sessions.

A cloud plugin maps its options onto a pipecat service (fixing it where pipecat falls short) and declares its
prices; what network services need alike lives here, so no plugin repeats it:

- options: ``ApiKeyOptions`` (the key, connect and response timeouts), ``RetryOptions`` (SDK retries, for
  request/response APIs), ``token_prices`` for a price table;
- shared clients: ``shared`` / ``shared_async`` keep one SDK client per event loop and configuration, so a
  call's requests reuse warm connections (``openai_client``; ``SharedClientSession`` for pipecat's AWS
  services, which would open a client per request);
- ``CloudService``, mixed in front of a pipecat service class: it classifies the exceptions of every SDK into
  pipecat's ``ErrorCategory`` (a cut stream or an SDK timeout is ``CONNECTIVITY``, a throttled AWS call
  ``RATE_LIMIT``), which is what a fallback switches on; and it runs the first-result watchdog of streaming
  services: ``_expect_result(what)`` after a request, ``_result_seen()`` when the vendor answers, and after
  ``response_timeout_secs`` of silence a ``CONNECTIVITY`` error says so instead of the call waiting forever.
  ``OpenAIService`` is one on the shared OpenAI client; ``service_class`` joins a mixin and a pipecat class;
- ``realtime_session_class``: pipecat's Realtime service with timeouts, loud failures and G.711;
- ``decoded_ulaw``: a vendor's G.711 audio (asked for on telephone calls) as pipecat's PCM16 frames.

Importing this module is cheap (plugins import it at module level): pipecat and the SDKs are imported by the
functions that use them.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable, Hashable
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import Field, SecretStr

from voxpipe.providers.spec import CloudOptions, Prices

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from pipecat.frames.frames import Frame, TTSAudioRawFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.utils.errors import ErrorCategory

    _ServiceBase = FrameProcessor
else:
    _ServiceBase = object

T = TypeVar("T")
PHONE_RATE = 8000  # G.711 on a telephone call
OPENAI_URL = "https://api.openai.com/v1"


class RetryOptions(CloudOptions):
    """Options of a provider whose SDK retries a failed request itself (request/response APIs)."""

    max_retries: int = Field(
        0,
        ge=0,
        le=5,
        description="Times a failed request (connection, 429, 5xx) is retried before it counts as failed; each "
        "retry adds its back-off to the turn, so keep 0 when the role has a fallback provider.",
    )


class ApiKeyOptions(CloudOptions):
    """Options of a provider that authenticates with one API key."""

    api_key: SecretStr = Field(description="API key; write it as ${ENV_VAR}, never inline.")


class OpenAIOptions(ApiKeyOptions, RetryOptions):
    """Options of the OpenAI HTTP providers (chat, transcription, speech)."""

    base_url: str = Field(OPENAI_URL, description="API base URL: OpenAI's, or an OpenAI-compatible endpoint.")


def token_prices(
    source: str,
    as_of: date,
    input_: float,
    cached: float,
    output: float,
    audio: tuple[float, float, float] | None = None,
) -> Prices:
    """USD per million tokens: text input, cached input and output, and ``audio`` input, cached and output."""
    audio_in, audio_cached, audio_out = audio or (None, None, None)
    return Prices(
        source=source,
        as_of=as_of,
        per_million_input_tokens=input_,
        per_million_cached_input_tokens=cached,
        per_million_output_tokens=output,
        per_million_audio_input_tokens=audio_in,
        per_million_cached_audio_input_tokens=audio_cached,
        per_million_audio_output_tokens=audio_out,
    )


def decoded_ulaw(frame: TTSAudioRawFrame) -> TTSAudioRawFrame:
    """A vendor's mu-law audio as the PCM16 pipecat frames carry, at the same 8 kHz: nothing is resampled."""
    from pipecat.frames.frames import TTSAudioRawFrame

    from voxpipe.audio import g711

    return TTSAudioRawFrame(g711.decode(frame.audio), PHONE_RATE, 1, context_id=frame.context_id)


# ---------------------------------------------------------------------------------------------- shared clients

_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def shared(key: Hashable, factory: Callable[[], T]) -> T:
    """The process-wide object for ``key``, made by ``factory`` on first use.

    Kept per event loop: a connection pool belongs to the loop that opened it. Without a running loop there
    is nothing to share with, and a fresh object is returned.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return factory()
    objects = _SHARED.setdefault(loop, {})
    if key not in objects:
        objects[key] = factory()
    return objects[key]


async def shared_async(key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
    """Like ``shared`` for objects made by a coroutine; concurrent first users wait for one creation.

    A creation that fails is forgotten, so the next request tries again.
    """
    creation: asyncio.Future[T] = shared(key, lambda: asyncio.ensure_future(factory()))
    try:
        return await asyncio.shield(creation)
    except Exception:
        objects = _SHARED.get(asyncio.get_running_loop(), {})
        if objects.get(key) is creation:
            del objects[key]
        raise


async def close_shared() -> None:
    """Close the clients shared on the running event loop (at shutdown, and between tests)."""
    objects = _SHARED.pop(asyncio.get_running_loop(), {})
    for value in objects.values():
        client = value
        if isinstance(value, asyncio.Future):
            if not value.done() or value.cancelled() or value.exception() is not None:
                value.cancel()
                continue
            client = value.result()
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is not None:
            await close()


def openai_client(options: OpenAIOptions) -> AsyncOpenAI:
    """The shared ``AsyncOpenAI`` client of a key, endpoint, timeouts and retries."""
    key = ("openai", options.api_key.get_secret_value(), options.base_url, *timeouts(options), options.max_retries)

    def create() -> AsyncOpenAI:
        from openai import AsyncOpenAI, Timeout

        return AsyncOpenAI(
            api_key=options.api_key.get_secret_value(),
            base_url=options.base_url,
            timeout=Timeout(options.response_timeout_secs, connect=options.connect_timeout_secs),
            max_retries=options.max_retries,
        )

    return shared(key, create)


def openai_service_args(options: OpenAIOptions) -> dict[str, Any]:
    """The arguments of an ``OpenAIService``: the shared client; the key, for the client pipecat builds (which
    the shared one replaces); and the response timeout."""
    return {
        "client": openai_client(options),
        "api_key": options.api_key.get_secret_value(),
        "response_timeout_secs": options.response_timeout_secs,
    }


def timeouts(options: CloudOptions) -> tuple[float, float]:
    """``(connect, response)`` timeouts in seconds."""
    return options.connect_timeout_secs, options.response_timeout_secs


class SharedClientSession:
    """Stands in for the aiobotocore session of a pipecat AWS service: ``create_client`` lends the shared client.

    pipecat's AWS services open a client, and so a connection, for every request; given this session they
    borrow one process-wide client per ``key`` (the configuration) instead, left open for the next request.
    """

    def __init__(self, session: Any, key: tuple[Any, ...]) -> None:
        self._session, self._key = session, key

    def create_client(self, **params: Any) -> _Lent:
        return _Lent(self._key, lambda: self._session.create_client(**params).__aenter__())


class _Lent:
    """``async with`` yields the shared client and leaves it open for the next request."""

    def __init__(self, key: tuple[Any, ...], open_client: Callable[[], Awaitable[Any]]) -> None:
        self._key, self._open_client = key, open_client

    async def __aenter__(self) -> Any:
        return await shared_async(self._key, self._open_client)

    async def __aexit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------------------------------- errors

#: Exception classes (by name, anywhere in the MRO) that mean the vendor could not be reached or the stream
#: broke: SDK timeouts, refused or reset connections, a WebSocket or HTTP stream cut mid-response.
_CONNECTIVITY_ERRORS = frozenset(
    {
        "APIConnectionError",  # openai (APITimeoutError too)
        "TransportError",  # httpx / httpx2: RemoteProtocolError, ReadTimeout, ConnectError...
        "ConnectionClosed",  # websockets
        "ClientConnectionError",  # aiohttp (ServerDisconnectedError too)
        "ClientPayloadError",  # aiohttp: a body cut short
        "ServerTimeoutError",  # aiohttp
        "HTTPClientError",  # botocore: EndpointConnectionError, ReadTimeoutError, ConnectTimeoutError...
    }
)

#: AWS error codes (botocore ``ClientError``, including errors sent inside an event stream) -> category name.
_AWS_CODES = {
    "ThrottlingException": "RATE_LIMIT",
    "TooManyRequestsException": "RATE_LIMIT",
    "ServiceQuotaExceededException": "QUOTA",
    "UnrecognizedClientException": "AUTHENTICATION",
    "InvalidSignatureException": "AUTHENTICATION",
    "ExpiredTokenException": "AUTHENTICATION",
    "AccessDeniedException": "AUTHORIZATION",
    "ValidationException": "INVALID_REQUEST",
    "ResourceNotFoundException": "INVALID_REQUEST",
    "ModelStreamErrorException": "SERVER",
    "ModelTimeoutException": "SERVER",
    "ModelNotReadyException": "SERVER",
    "InternalServerException": "SERVER",
    "ServiceUnavailableException": "SERVER",
}


def classify(exception: BaseException) -> ErrorCategory | None:
    """The category of an SDK exception pipecat cannot read a status code from, or ``None``."""
    from pipecat.utils.errors import ErrorCategory, classify_http_status_code

    response = getattr(exception, "response", None)
    if isinstance(response, dict):  # botocore: the parsed error, not an HTTP response object
        code = str(response.get("Error", {}).get("Code") or "")
        name = _AWS_CODES.get(code[:1].upper() + code[1:])  # in-stream errors are camelCase
        if name is not None:
            return ErrorCategory[name]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return classify_http_status_code(status) if isinstance(status, int) else None
    if {cls.__name__ for cls in type(exception).__mro__} & _CONNECTIVITY_ERRORS:
        return ErrorCategory.CONNECTIVITY
    return None


# ---------------------------------------------------------------------------------------------- the service mixin


class CloudService(_ServiceBase):
    """Mixed in before a pipecat service class: ``class DeepgramSTT(CloudService, DeepgramSTTService)``.

    Takes ``response_timeout_secs`` and passes every other argument to the pipecat service.
    """

    def __init__(self, *args: Any, response_timeout_secs: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._response_timeout_secs = response_timeout_secs
        self._watchdog: asyncio.TimerHandle | None = None

    def _classify_error(self, exception: Exception) -> ErrorCategory | None:
        return classify(exception) or super()._classify_error(exception)

    def _expect_result(self, what: str) -> None:
        """Arm the watchdog: the vendor must answer within ``response_timeout_secs`` (no-op if armed)."""
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self._response_timeout_secs, self._no_result, what)

    def _result_seen(self) -> None:
        """Disarm the watchdog: the vendor answered."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _no_result(self, what: str) -> None:
        self._watchdog = None
        self.create_task(self._report_no_result(what), name="no_result")

    async def _report_no_result(self, what: str) -> None:
        from pipecat.utils.errors import ErrorCategory

        await self.push_error(
            f"no {what} within {self._response_timeout_secs:g} s (response_timeout_secs)",
            category=ErrorCategory.CONNECTIVITY,
        )

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        from pipecat.frames.frames import CancelFrame, EndFrame, InterruptionFrame

        if isinstance(frame, InterruptionFrame | EndFrame | CancelFrame):
            self._result_seen()  # the request is moot: the caller spoke over it, or the call is over
        await super().process_frame(frame, direction)

    async def cleanup(self) -> None:
        self._result_seen()
        await super().cleanup()


class OpenAIService(CloudService):
    """A pipecat OpenAI service (LLM, STT, TTS) on the shared client of its options (``openai_client``).

    pipecat builds a client per service, so per call; ``client`` replaces it, and with it the connection pool.
    """

    def __init__(self, *args: Any, client: AsyncOpenAI, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client = client


@functools.cache
def service_class(mixin: type, base: type) -> type:
    """``mixin`` in front of the pipecat service class ``base``, for a plugin that needs nothing else."""
    return type(base.__name__, (mixin, base), {"__doc__": f"pipecat's {base.__name__} with {mixin.__name__}."})


# ---------------------------------------------------------------------------------------------- realtime sessions

#: Realtime ``error`` event code (or type) -> pipecat ErrorCategory name; any other error is a bad request.
REALTIME_ERRORS = {"invalid_api_key": "AUTHENTICATION", "rate_limit_exceeded": "RATE_LIMIT", "server_error": "SERVER"}


@functools.cache
def realtime_session_class(base: type) -> type:
    """``base`` (pipecat's ``OpenAIRealtimeLLMService``, or a service built on it for another vendor of the same
    protocol) with what voxpipe needs of a Realtime session.

    - The connect timeout is honoured, and a refused handshake, an ``error`` event or a dropped connection ends
      the session with a classified, permanent error: pipecat would leave the call on a dead socket.
    - A response with no output within ``response_timeout_secs`` is reported.
    - pipecat sends its first context as conversation items and asks for a response; when that context ends
      with the caller's turn, which server VAD has already committed and is answering, only the history before
      it is sent, so the turn is neither duplicated nor answered twice.
    - With ``pcmu=True`` (phone calls) the caller's audio goes out as G.711 and the model's comes back as it,
      decoded only to the PCM16 pipecat frames carry.

    Takes ``pcmu`` and ``connect_timeout_secs`` besides ``CloudService``'s and ``base``'s arguments.
    """
    import base64

    from pipecat.frames import frames
    from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.openai.realtime import events
    from pipecat.utils.errors import ErrorCategory
    from websockets.asyncio.client import connect

    from voxpipe.audio import g711
    from voxpipe.pipeline.frames import BotAudioPlayedFrame

    answers = (frames.TTSAudioRawFrame, frames.LLMTextFrame, frames.FunctionCallsStartedFrame)

    class RealtimeSession(CloudService, base):  # type: ignore[misc, valid-type]
        def __init__(self, *, pcmu: bool, connect_timeout_secs: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._pcmu, self._connect_timeout_secs, self._heard = pcmu, connect_timeout_secs, ""
            self._played_ms: int | None = None  # what the caller heard of the answer, when the transport knows

        async def process_frame(self, frame: frames.Frame, direction: FrameDirection) -> None:
            if isinstance(frame, BotAudioPlayedFrame):
                self._played_ms = frame.played_ms
                return
            await super().process_frame(frame, direction)

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

        async def _connect(self) -> None:
            if self._websocket:
                return
            try:
                headers = await self._auth_headers()
                self._websocket = await connect(
                    self.base_url, additional_headers=headers, open_timeout=self._connect_timeout_secs
                )
                self._receive_task = self.create_task(self._receive_task_handler())
            except Exception as exc:
                self._websocket = None
                await self.push_error(f"cannot connect: {exc}", exception=exc, force_treat_as_permanent=True)

        async def _receive_task_handler(self) -> None:
            problem, exc = "the server closed the connection", None
            try:
                await super()._receive_task_handler()
            except Exception as error:
                problem, exc = f"connection lost: {error}", error
            if self.is_usable and not self._disconnecting:  # (after an error event the session is over already)
                category = ErrorCategory.CONNECTIVITY
                await self.push_error(problem, exception=exc, category=category, force_treat_as_permanent=True)

        async def _handle_evt_error(self, evt: Any) -> None:
            code = evt.error.code or evt.error.type or ""
            name = REALTIME_ERRORS.get(code) or REALTIME_ERRORS.get(evt.error.type or "", "INVALID_REQUEST")
            message = f"Realtime error {code}: {evt.error.message}"
            await self.push_error(message, category=ErrorCategory[name], force_treat_as_permanent=True)

        async def handle_evt_input_audio_transcription_completed(self, evt: Any) -> None:
            self._heard = " ".join(evt.transcript.split())
            await super().handle_evt_input_audio_transcription_completed(evt)

        async def _handle_context(self, context: LLMContext, direction: FrameDirection) -> None:
            messages = context.get_messages()
            last = messages[-1] if messages else None
            heard = (
                isinstance(last, dict) and last.get("role") == "user" and " ".join(standard_message_text(last).split())
            )
            if not (self._llm_needs_conversation_setup and heard and heard == self._heard):
                return await super()._handle_context(context, direction)
            self._context, self._llm_needs_conversation_setup = context, False
            await self._process_completed_function_calls(send_new_results=False)
            history = await self.get_llm_adapter().get_llm_invocation_params(LLMContext(messages[:-1]))
            previous = "root"
            for item in history["messages"]:
                self._messages_added_manually[item.id] = True
                await self.send_client_event(events.ConversationItemCreateEvent(item=item, previous_item_id=previous))
                previous = item.id

        async def _create_response(self) -> None:
            await super()._create_response()
            self._expect_result("response")

        async def _handle_evt_speech_stopped(self, evt: Any) -> None:
            await super()._handle_evt_speech_stopped(evt)
            self._expect_result("response")  # server VAD creates it

        async def _handle_evt_response_done(self, evt: Any) -> None:
            self._result_seen()
            await super()._handle_evt_response_done(evt)

        async def _send_user_audio(self, frame: frames.InputAudioRawFrame) -> None:
            if not self._pcmu:
                return await super()._send_user_audio(frame)
            audio = await self._resampler.resample(frame.audio, frame.sample_rate, PHONE_RATE)
            payload = base64.b64encode(g711.encode(audio)).decode()
            await self.send_client_event(events.InputAudioBufferAppendEvent(audio=payload))

        def _calculate_audio_duration_ms(self, total_bytes: int, sample_rate: int = 24000, bytes_per_sample: int = 2):
            pcmu = (PHONE_RATE, 1) if self._pcmu else (sample_rate, bytes_per_sample)
            return super()._calculate_audio_duration_ms(total_bytes, *pcmu)

        async def push_frame(self, frame: frames.Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
            if isinstance(frame, answers):
                self._result_seen()
            pcmu_audio = self._pcmu and isinstance(frame, frames.TTSAudioRawFrame)
            await super().push_frame(decoded_ulaw(frame) if pcmu_audio else frame, direction)

    return RealtimeSession
