"""Fake ElevenLabs streaming text-to-speech WebSockets.

Routes (pipecat: `ElevenLabsTTSService(url=fake.ws_url, ...)`):
- `/v1/text-to-speech/{voice_id}/stream-input`: one context. The first message must be the
  initialisation `{"text": " ", ...}` (optional `voice_settings`, `generation_config`, `xi_api_key`);
  then text chunks (`try_trigger_generation`, `flush`); `{"text": ""}` ends the input: the rest is
  spoken, `{"isFinal": true}` is sent and the socket closes (1000).
- `/v1/text-to-speech/{voice_id}/multi-stream-input`: contexts keyed by `context_id` (at most 5
  open). A context's first message opens it (and is the only one that may carry `voice_settings`);
  `{"context_id", "flush": true}` speaks its buffer; `{"text": "", "context_id"}` keeps it alive;
  `{"context_id", "close_context": true}` closes it: audio already flushed is still delivered,
  anything else stops at once (recorded in `fake.closed_contexts`); `{"close_socket": true}`.

Query: `model_id`, `output_format` (pcm_8000..pcm_48000, ulaw_8000, alaw_8000 are synthesised),
`auto_mode`, `inactivity_timeout` (default 20 s; the socket closes 1008 with ElevenLabs' message,
cut to the 123-byte close-reason limit as the real service does), `sync_alignment`, ...
Auth: `xi-api-key` header (or `authorization` query, or `xi_api_key` in the first message); a bad
key gets the socket closed with 1008, as ElevenLabs does.

Audio messages are `{"audio": b64, "alignment": {...}, "normalizedAlignment": {...}}` (+
`"contextId"` on multi-stream) with a deterministic tone, 50 ms per character, in the requested
format; alignment times are per message, as ElevenLabs sends them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import audio
from .base import MAX_WAIT_S, Behaviour, FakeServer, StreamCut, run_cli

OUTPUT_FORMATS = {
    "mp3_22050_32",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_32000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
    "alaw_8000",
    "opus_48000_32",
    "opus_48000_64",
    "opus_48000_96",
    "opus_48000_128",
    "opus_48000_192",
}
VOICE_SETTINGS = {"stability": (0.0, 1.0), "similarity_boost": (0.0, 1.0), "style": (0.0, 1.0), "speed": (0.7, 1.2)}
INIT_KEYS = {
    "text",
    "voice_settings",
    "generation_config",
    "pronunciation_dictionary_locators",
    "xi_api_key",
    "authorization",
    "context_id",
    "flush",
    "try_trigger_generation",
}
LATER_KEYS = {"text", "context_id", "flush", "try_trigger_generation", "close_context", "close_socket"}
MS_PER_CHAR = int(audio.SECONDS_PER_CHAR * 1000)
MAX_CONTEXTS = 5


class PolicyViolation(Exception):
    """A client message ElevenLabs answers by closing the socket with 1008."""


@dataclass
class Context:
    """One synthesis context (the only one on stream-input)."""

    id: str | None
    voice_settings: dict[str, Any] | None = None
    buffer: str = ""
    text: str = ""  # everything received
    spoken: str = ""  # everything turned into audio
    audio_bytes: int = 0
    flushed: bool = False
    closed: bool = False
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    first_audio_sent: bool = False


class TTSSocket:
    """State of one ElevenLabs TTS WebSocket."""

    def __init__(
        self,
        fake: FakeElevenLabs,
        ws: web.WebSocketResponse,
        request: web.Request,
        multi: bool,
        voice_id: str,
        params: dict[str, str],
    ) -> None:
        self.fake, self.ws, self.request, self.multi = fake, ws, request, multi
        self.voice_id, self.params = voice_id, params
        fmt = params.get("output_format", "mp3_44100_128")
        self.codec, _, rate = fmt.partition("_")
        self.rate = int(rate.split("_")[0])
        self.auto_mode = params.get("auto_mode") == "true"
        self.contexts: dict[str | None, Context] = {}
        self.sent: list[dict[str, Any]] = []
        self.chunks_sent = 0
        self.generation_config: dict[str, Any] | None = None
        self.close_code: int | None = None
        self._send_lock = asyncio.Lock()

    @property
    def schedule(self) -> list[float]:
        """The chunk length schedule in effect (characters buffered before generating)."""
        return list((self.generation_config or {}).get("chunk_length_schedule") or [120, 160, 250, 290])

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message (serialised: several contexts may speak at once)."""
        async with self._send_lock:
            self.sent.append(message)
            if not await self.fake.send_json(self.ws, message):
                raise ConnectionError("client went away")

    def encode(self, text: str) -> bytes:
        """Synthetic speech for `text` in the socket's output format: 50 ms per character."""
        pcm = audio.tone(len(text) * audio.SECONDS_PER_CHAR, self.rate)
        if self.codec == "ulaw":
            return audio.pcm16_to_ulaw(pcm)
        if self.codec == "alaw":
            return audio.pcm16_to_alaw(pcm)
        return pcm

    async def speak(self, ctx: Context) -> None:
        """Worker: turn queued text into audio messages until a None sentinel."""
        while True:
            text = await ctx.queue.get()
            if text is None:
                break
            for piece in re.findall(r".{1,40}(?:\s+|$)", text, flags=re.S) or [text]:
                if not ctx.first_audio_sent:
                    await self.fake.first_byte_delay()
                    ctx.first_audio_sent = True
                await self.fake.chunk_pacing(self.chunks_sent, self.request)
                data = self.encode(piece)
                align = {
                    "chars": list(piece),
                    "charStartTimesMs": [i * MS_PER_CHAR for i in range(len(piece))],
                    "charDurationsMs": [MS_PER_CHAR] * len(piece),
                }
                message: dict[str, Any] = {
                    "audio": base64.b64encode(data).decode(),
                    "normalizedAlignment": align,
                    "alignment": align,
                }
                if self.multi:
                    message["contextId"] = ctx.id
                else:
                    message["isFinal"] = None
                await self.send(message)
                self.chunks_sent += 1
                ctx.audio_bytes += len(data)
                ctx.spoken += piece
        await self.send({"isFinal": True, "contextId": ctx.id} if self.multi else {"isFinal": True})

    def generate(self, ctx: Context, force: bool) -> None:
        """Queue the context's buffer for synthesis when forced or the buffering rules allow."""
        text = ctx.buffer
        if not text.strip():
            return
        threshold = self.schedule[0] if self.schedule else 0
        boundary = self.auto_mode and re.search(r"[\s.,!?;:]$", text)
        if force or boundary or len(text) >= threshold:
            ctx.buffer = ""
            ctx.queue.put_nowait(text)

    async def finish(self, ctx: Context, *, cancel: bool, wait: bool) -> None:
        """End a context: stop it now (then isFinal), or let its worker drain and send isFinal.

        With `wait`, return only once the drained audio and isFinal are sent.
        """
        ctx.closed = True
        assert ctx.worker is not None
        if cancel:
            ctx.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, StreamCut):
                await ctx.worker
            await self.send({"isFinal": True, "contextId": ctx.id} if self.multi else {"isFinal": True})
            return
        ctx.queue.put_nowait(None)
        if wait:
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError, StreamCut):
                await asyncio.wait_for(asyncio.shield(ctx.worker), MAX_WAIT_S)

    def open_context(self, context_id: str | None) -> Context:
        """Create a context and its speaking worker."""
        ctx = Context(context_id)
        ctx.worker = asyncio.create_task(self._run_worker(ctx))
        self.contexts[context_id] = ctx
        return ctx

    async def _run_worker(self, ctx: Context) -> None:
        with contextlib.suppress(ConnectionError, StreamCut):
            await self.speak(ctx)


def validate_init(message: dict[str, Any]) -> None:
    """Check the optional settings a context's first message may carry."""
    settings = message.get("voice_settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise PolicyViolation("voice_settings must be an object")
        for key, value in settings.items():
            if key == "use_speaker_boost":
                if not isinstance(value, bool):
                    raise PolicyViolation("voice_settings.use_speaker_boost must be a boolean")
            elif key in VOICE_SETTINGS:
                low, high = VOICE_SETTINGS[key]
                if not isinstance(value, int | float) or not low <= value <= high:
                    raise PolicyViolation(f"voice_settings.{key} must be between {low} and {high}")
            else:
                raise PolicyViolation(f"Unknown voice setting '{key}'")
    config = message.get("generation_config")
    if config is not None:
        schedule = config.get("chunk_length_schedule") if isinstance(config, dict) else None
        if (
            not isinstance(config, dict)
            or set(config) - {"chunk_length_schedule"}
            or not isinstance(schedule, list)
            or not all(isinstance(x, int | float) and 50 <= x <= 500 for x in schedule)
        ):
            raise PolicyViolation("generation_config.chunk_length_schedule must be numbers between 50 and 500")


class FakeElevenLabs(FakeServer):
    """Fake ElevenLabs TTS WebSocket server (stream-input and multi-stream-input).

    Args:
        behaviour: common knobs (`api_key` is the expected `xi-api-key`).
        voices: if given, only these voice ids exist (others get a 1008 close).
    """

    name = "elevenlabs"

    def __init__(self, behaviour: Behaviour | None = None, *, voices: set[str] | None = None) -> None:
        super().__init__(behaviour)
        self.voices = voices
        self.sockets: list[TTSSocket] = []
        self.closed_contexts: list[dict[str, Any]] = []

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", self.stream_input)
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self.multi_stream_input)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method=request.method, path=request.path, headers=self.headers_of(request))
        self.violation(f"unknown route {request.method} {request.path}")
        return web.json_response({"detail": "Not Found"}, status=404)

    async def stream_input(self, request: web.Request) -> web.StreamResponse:
        return await self._connect(request, multi=False)

    async def multi_stream_input(self, request: web.Request) -> web.StreamResponse:
        return await self._connect(request, multi=True)

    def _query_error(self, params: dict[str, str], multi: bool) -> str | None:
        fmt = params.get("output_format", "mp3_44100_128")
        if fmt not in OUTPUT_FORMATS:
            return f"Invalid output_format '{fmt}'"
        if not fmt.startswith(("pcm_", "ulaw_", "alaw_")):
            return f"This fake synthesises only pcm_*, ulaw_8000 and alaw_8000, not '{fmt}'"
        for key in ("auto_mode", "sync_alignment", "enable_logging", "enable_ssml_parsing"):
            if key in params and params[key] not in ("true", "false"):
                return f"Invalid boolean for '{key}': '{params[key]}'"
        timeout = params.get("inactivity_timeout", "20")
        if not timeout.isdigit() or not 1 <= int(timeout) <= 180:
            return f"inactivity_timeout must be an integer between 1 and 180, got '{timeout}'"
        if params.get("apply_text_normalization", "auto") not in ("auto", "on", "off"):
            return "apply_text_normalization must be 'auto', 'on' or 'off'"
        if multi and params.get("model_id") == "eleven_v3":
            return "Multi-context WebSockets are not available for the eleven_v3 model"
        return None

    async def _connect(self, request: web.Request, multi: bool) -> web.StreamResponse:
        voice_id = request.match_info["voice_id"]
        params = dict(request.query)
        self.record("ws_connect", path=request.path, query=params, headers=self.headers_of(request), multi=multi)
        status = self.take_failure()
        if status is not None:
            code = "too_many_concurrent_requests" if status == 429 else "internal_server_error"
            return web.json_response(
                {"detail": {"status": code, "message": f"Request failed with status {status}"}}, status=status
            )
        problem = self._query_error(params, multi)
        if problem:
            self.violation(f"elevenlabs: {problem}")
            return web.json_response(
                {"detail": [{"loc": ["query"], "msg": problem, "type": "value_error"}]}, status=422
            )
        ws = await self.accept_ws(request)
        sock = TTSSocket(self, ws, request, multi, voice_id, params)
        self.sockets.append(sock)
        try:
            await self._serve(sock)
        except PolicyViolation as err:
            self.violation(f"elevenlabs: {err}")
            with contextlib.suppress(ConnectionError):
                await ws.close(code=1008, message=str(err).encode()[:123])
        except (ConnectionError, StreamCut):
            pass
        finally:
            for ctx in sock.contexts.values():
                if ctx.worker and not ctx.worker.done():
                    ctx.worker.cancel()
            self.forget_ws(ws)
            sock.close_code = ws.close_code
            self.record("ws_close", code=ws.close_code)
        return ws

    async def _serve(self, sock: TTSSocket) -> None:
        ws, request = sock.ws, sock.request
        header_key = request.headers.get("xi-api-key")
        authorised = self.key_ok(header_key) or self.key_ok(
            request.query.get("authorization", "").removeprefix("Bearer ").strip() or None
        )
        if header_key and not authorised:
            raise PolicyViolation("Invalid API key")
        if self.voices is not None and sock.voice_id not in self.voices:
            raise PolicyViolation(f"A voice with voice_id {sock.voice_id} was not found.")
        timeout = int(sock.params.get("inactivity_timeout", "20"))
        first = True
        while not ws.closed:
            try:
                msg = await ws.receive(timeout=min(timeout, MAX_WAIT_S))
            except TimeoutError:
                self.record("timeout", after_s=timeout)
                reason = (
                    f"Have not received a new text input within the timeout of {timeout} seconds. Streaming "
                    "input terminated. Please make sure to either feed the input in the timely manner, or to "
                    'send the end of input text (empty string "") when done.'
                )
                await ws.close(code=1008, message=reason.encode()[:123])
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                raise PolicyViolation("Invalid message: expected a JSON text frame")
            try:
                message = json.loads(msg.data)
            except ValueError:
                raise PolicyViolation("Invalid message: not JSON") from None
            self.record("ws_message", data=message)
            if not isinstance(message, dict):
                raise PolicyViolation("Invalid message: expected a JSON object")
            if first and not authorised:
                if not self.key_ok(message.get("xi_api_key")):
                    raise PolicyViolation("Invalid API key")
                authorised = True
            first = False
            done = await (self._multi_message(sock, message) if sock.multi else self._single_message(sock, message))
            if done:
                return

    async def _single_message(self, sock: TTSSocket, message: dict[str, Any]) -> bool:
        """Handle one stream-input message; True once the socket is finished."""
        ctx = sock.contexts.get(None)
        if ctx is None:
            if set(message) - (INIT_KEYS - {"context_id"}):
                raise PolicyViolation(f"Unknown fields in the first message: {sorted(set(message) - INIT_KEYS)}")
            if message.get("text") != " ":
                raise PolicyViolation("The first message must initialise the stream with text ' ' (a single space)")
            validate_init(message)
            ctx = sock.open_context(None)
            ctx.voice_settings = message.get("voice_settings")
            sock.generation_config = message.get("generation_config")
            return False
        extra = set(message) - {"text", "flush", "try_trigger_generation"}
        if extra:
            raise PolicyViolation(f"Unexpected fields after the first message: {sorted(extra)}")
        text = message.get("text")
        if not isinstance(text, str):
            raise PolicyViolation("Every message must carry a 'text' string")
        if text == "":
            sock.generate(ctx, force=True)
            await sock.finish(ctx, cancel=False, wait=True)
            await sock.ws.close(code=1000)
            return True
        ctx.buffer += text
        ctx.text += text
        sock.generate(ctx, force=bool(message.get("flush") or message.get("try_trigger_generation")))
        return False

    async def _multi_message(self, sock: TTSSocket, message: dict[str, Any]) -> bool:
        """Handle one multi-stream-input message; True once the socket is finished."""
        if message.get("close_socket") is True:
            for ctx in list(sock.contexts.values()):
                if not ctx.closed:
                    await sock.finish(ctx, cancel=not ctx.flushed, wait=True)
            await sock.ws.close(code=1000)
            return True
        context_id = message.get("context_id")
        if context_id is not None and not isinstance(context_id, str):
            raise PolicyViolation("context_id must be a string")
        ctx = sock.contexts.get(context_id)
        if message.get("close_context") is True:
            if ctx is None or ctx.closed:
                self.record("close_unknown_context", context_id=context_id)
                return False
            await sock.finish(ctx, cancel=not ctx.flushed, wait=False)
            self.closed_contexts.append(
                {
                    "context_id": context_id,
                    "flushed": ctx.flushed,
                    "text": ctx.text,
                    "spoken_before_close": ctx.spoken,
                    "audio_bytes_before_close": ctx.audio_bytes,
                    "cut_short": not ctx.flushed and ctx.spoken.strip() != ctx.text.strip(),
                    "time": time.monotonic(),
                }
            )
            return False
        opening = ctx is None or ctx.closed
        if not opening and ("voice_settings" in message or "generation_config" in message):
            raise PolicyViolation(
                f"voice_settings and generation_config may only be sent when context '{context_id}' is initialised"
            )
        allowed = INIT_KEYS if opening else LATER_KEYS
        if set(message) - allowed:
            raise PolicyViolation(f"Unknown fields: {sorted(set(message) - allowed)}")
        if message.get("flush") is True and opening and "text" not in message:
            self.record("flush_unknown_context", context_id=context_id)
            return False
        text = message.get("text")
        if "text" in message and not isinstance(text, str):
            raise PolicyViolation("'text' must be a string")
        if opening:
            if text is None:
                raise PolicyViolation("A context's first message must carry 'text'")
            if text == "":
                return False  # keep-alive of a context that is not open: nothing to keep alive
            open_count = sum(1 for c in sock.contexts.values() if not c.closed)
            if open_count >= MAX_CONTEXTS:
                await sock.send(
                    {
                        "message": f"Maximum simultaneous contexts per WebSocket connection exceeded "
                        f"({MAX_CONTEXTS}). Please close an existing context before opening a new one.",
                        "error": "max_active_conversations",
                        "code": 1008,
                    }
                )
                raise PolicyViolation("max_active_conversations")
            validate_init(message)
            ctx = sock.open_context(context_id)
            ctx.voice_settings = message.get("voice_settings")
            if message.get("generation_config"):
                sock.generation_config = message["generation_config"]
            if not text.strip():
                text = ""  # the " " that opens a context is not speech
        assert ctx is not None
        if text:
            ctx.buffer += text
            ctx.text += text
        if message.get("flush") is True:
            ctx.flushed = True
        sock.generate(ctx, force=bool(message.get("flush") or message.get("try_trigger_generation")))
        return False


if __name__ == "__main__":
    run_cli(FakeElevenLabs())
