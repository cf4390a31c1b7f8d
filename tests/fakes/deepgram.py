"""Fake Deepgram live speech-to-text WebSocket at `/v1/listen`.

Point deepgram-sdk at it with `DeepgramClientEnvironment(base=fake.url, production=fake.ws_url,
agent=fake.ws_url, agent_rest=fake.url)`, or pipecat's `DeepgramSTTService(base_url=fake.ws_url)`.

Handshake, as Deepgram does it:
- auth: `Authorization: Token <api key>` (what deepgram-sdk sends for `api_key=`), or
  `Authorization: Bearer <token>` when the fake has an `access_token` (deepgram-sdk's
  `access_token=`), or the browser form `Sec-WebSocket-Protocol: token, <api key>`. Anything else
  gets HTTP 401 with Deepgram's `{"err_code": "INVALID_AUTH", ...}` body.
- query parameters are validated (encoding, sample_rate, booleans, endpointing, utterance_end_ms,
  keyterm on Nova-3 only); a bad one gets HTTP 400 `INVALID_QUERY_PARAMETER`.

Streaming: binary frames are decoded per `encoding` (linear16, mulaw, alaw; channel 0 of
interleaved audio) and run through an energy VAD. Each detected utterance gets (when enabled)
`SpeechStarted`, interim `Results` as speech goes on, a final `Results` (`is_final`, and
`speech_final` when endpointing is on) with words and timings, and `UtteranceEnd` after
`utterance_end_ms` of audio without words. Text messages: `KeepAlive`, `Finalize` (a final with
`from_finalize: true`; no answer at all when nothing is buffered), `CloseStream` (finals, `Metadata`,
close 1000), `Configure`. Any other text message gets an `Error` (`SchemaError`) and close 1008. No
audio and no message for `inactivity_timeout_s` (10 s, like Deepgram) closes with 1011 (NET-0001).

Transcripts are scripted (`transcripts=`): one per utterance, in order, or a callable(Utterance).
Fault mode besides `Behaviour`'s: `fake.muted = True` keeps the connection open but sends no more results.
Inspect `fake.streams` (one `ListenStream` per connection: params, audio, sent messages, close code).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from . import audio
from .base import MAX_WAIT_S, Behaviour, FakeServer, StreamCut, run_cli
from .script import Transcripts, TranscriptSpec

ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex", "g729"}
DECODABLE = {"linear16", "mulaw", "alaw"}
BOOLEAN_PARAMS = {
    "interim_results",
    "punctuate",
    "smart_format",
    "vad_events",
    "diarize",
    "numerals",
    "profanity_filter",
    "dictation",
    "detect_entities",
    "multichannel",
    "filler_words",
    "mip_opt_out",
    "no_delay",
    "paragraphs",
}
NET0001 = "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001"
MODEL_UUID = "1abfe86b-e047-4eed-858a-35e5625b41ee"


def dg_error(status: int, err_code: str, err_msg: str) -> web.Response:
    """An HTTP error with Deepgram's JSON body and headers."""
    request_id = str(uuid.uuid4())
    body = {"err_code": err_code, "err_msg": err_msg, "request_id": request_id}
    return web.json_response(body, status=status, headers={"dg-request-id": request_id, "dg-error": err_msg})


class QueryError(Exception):
    """A query parameter Deepgram would reject."""


class ListenStream:
    """State of one `/v1/listen` connection."""

    def __init__(
        self,
        fake: FakeDeepgram,
        ws: web.WebSocketResponse,
        request: web.Request,
        params: dict[str, Any],
        request_id: str,
    ) -> None:
        self.fake, self.ws, self.request, self.params, self.request_id = fake, ws, request, params, request_id
        self.results_sent = 0
        self.encoding = params.get("encoding", "linear16")
        self.rate = int(params.get("sample_rate", 16000))
        self.channels = int(params.get("channels", 1))
        self.interim = params.get("interim_results") == "true"
        self.vad_events = params.get("vad_events") == "true"
        self.punctuate = params.get("punctuate") == "true" or params.get("smart_format") == "true"
        endpointing = params.get("endpointing", "10")
        self.endpointing_ms = None if endpointing == "false" else (10 if endpointing == "true" else int(endpointing))
        self.utterance_end_ms = int(params["utterance_end_ms"]) if "utterance_end_ms" in params else None
        self.model = params.get("model", "base")
        self.keyterms: list[str] = list(params.get("keyterm", []))
        self.vad = audio.EnergyVAD(
            self.rate, threshold_rms=fake.vad_threshold_rms, silence_ms=max(20, self.endpointing_ms or 500)
        )
        self.audio = bytearray()  # raw bytes as received
        self.pcm = bytearray()  # channel 0, decoded to PCM16
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.cursor_s = 0.0  # end of the last finalised segment
        self.utterance_start_s: float | None = None
        self.transcript: str | None = None
        self.interims = 0
        self.next_interim_ms = 0
        self.last_word_end: float | None = None

    @property
    def position_s(self) -> float:
        """Seconds of (channel 0) audio received."""
        return len(self.pcm) / 2 / self.rate

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message; `Results` honour the first-byte delay, pacing and cut knobs."""
        if message["type"] == "Results":
            if self.fake.muted:
                self.fake.record("muted", data=message)
                return
            if self.results_sent == 0:
                await self.fake.first_byte_delay()
            await self.fake.chunk_pacing(self.results_sent, self.request)
            self.results_sent += 1
        self.sent.append(message)
        if not await self.fake.send_json(self.ws, message):
            raise ConnectionError("client went away")

    def _decode(self, data: bytes) -> bytes:
        if self.encoding == "mulaw":
            pcm = audio.ulaw_to_pcm16(data)
        elif self.encoding == "alaw":
            pcm = audio.alaw_to_pcm16(data)
        else:
            pcm = data[: len(data) - len(data) % 2]
        if self.channels > 1:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = samples[: len(samples) - len(samples) % self.channels : self.channels].tobytes()
        return pcm

    async def on_audio(self, data: bytes) -> None:
        """Handle one binary audio frame."""
        pcm = self._decode(data)
        self.audio += data
        self.pcm += pcm
        for event in self.vad.feed(pcm):
            if event.kind == "start":
                await self._speech_started(event.at_ms / 1000)
            else:
                await self._final(event.at_ms / 1000, speech_final=self.endpointing_ms is not None)
        if self.vad.in_speech and self.interim and self.vad.position_ms >= self.next_interim_ms:
            self.next_interim_ms = self.vad.position_ms + self.fake.interim_every_ms
            await self._interim()
        await self._maybe_utterance_end()

    async def _speech_started(self, at_s: float) -> None:
        self.utterance_start_s = at_s
        self.transcript = None
        self.interims = 0
        self.next_interim_ms = self.vad.position_ms + self.fake.interim_every_ms
        if self.vad_events:
            await self.send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(at_s, 3)})

    def _utterance_pcm(self) -> bytes:
        start = int((self.utterance_start_s or 0.0) * self.rate) * 2
        return bytes(self.pcm[start:])

    def _text(self) -> str:
        if self.transcript is None:
            self.transcript = self.fake.transcripts.next(self._utterance_pcm(), self.rate)
        return self.transcript

    async def _interim(self) -> None:
        words = self._text().split()
        self.interims += 1
        shown = words[: min(len(words), self.interims)]
        await self.send(self._results(" ".join(shown), self.position_s, is_final=False, speech_final=False))

    async def _final(self, end_s: float, *, speech_final: bool, from_finalize: bool = False) -> None:
        text = self._text() if self.utterance_start_s is not None else ""
        await self.send(
            self._results(
                text,
                max(end_s, self.position_s),
                is_final=True,
                speech_final=speech_final,
                from_finalize=from_finalize,
                speech_end_s=end_s,
            )
        )
        self.cursor_s = self.position_s
        self.utterance_start_s = None
        self.transcript = None

    async def _maybe_utterance_end(self) -> None:
        if self.utterance_end_ms is None or self.last_word_end is None or self.vad.in_speech:
            return
        if self.position_s >= self.last_word_end + self.utterance_end_ms / 1000:
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.last_word_end, 3)})
            self.last_word_end = None

    def _results(
        self,
        text: str,
        end_s: float,
        *,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool = False,
        speech_end_s: float | None = None,
    ) -> dict[str, Any]:
        start = self.cursor_s
        words_out = []
        words = text.split()
        if words:
            begin = self.utterance_start_s if self.utterance_start_s is not None else start
            finish = speech_end_s if speech_end_s is not None else end_s
            step = max(0.01, (finish - begin) / len(words))
            for i, w in enumerate(words):
                entry = {
                    "word": w.strip(".,!?;:").lower(),
                    "start": round(begin + i * step, 3),
                    "end": round(begin + (i + 1) * step, 3),
                    "confidence": 0.99,
                }
                if self.punctuate:
                    entry["punctuated_word"] = w
                words_out.append(entry)
            if is_final:
                self.last_word_end = words_out[-1]["end"]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end_s - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": text, "confidence": 0.99 if text else 0.0, "words": words_out}]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_uuid": MODEL_UUID,
                "model_info": {
                    "name": f"general-{self.model}",
                    "version": "2024-12-20.0",
                    "arch": self.model.split("-general")[0],
                },
            },
        }

    async def finalize(self, from_finalize: bool) -> None:
        """Flush the utterance in progress as a final result.

        As Deepgram does, a ``Finalize`` with nothing buffered (endpointing already finalized the speech, or
        there was none) gets no answer at all: a client waiting for a ``from_finalize`` result waits forever.
        """
        stopped = self.vad.force_stop()
        if stopped is None:
            if from_finalize:
                self.fake.record("finalize_unanswered", at_s=round(self.position_s, 3))
            return
        await self._final(stopped.at_ms / 1000, speech_final=False, from_finalize=from_finalize)

    def metadata(self) -> dict[str, Any]:
        """The `Metadata` message Deepgram sends before closing."""
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": hashlib.sha256(bytes(self.audio)).hexdigest(),
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(self.position_s, 3),
            "channels": self.channels,
            "models": [MODEL_UUID],
            "model_info": {
                MODEL_UUID: {"name": f"general-{self.model}", "version": "2024-12-20.0", "arch": self.model}
            },
        }


class FakeDeepgram(FakeServer):
    """Fake Deepgram live transcription server.

    Args:
        behaviour: common knobs (`api_key` is the expected `Token` key).
        transcripts: one transcript per utterance (str, list, or callable(Utterance)).
        access_token: a temporary token accepted as `Authorization: Bearer <token>` (default: none).
        inactivity_timeout_s: close 1011 after this long without audio or a text message.
        interim_every_ms: interim result cadence while speech goes on (audio time).
        vad_threshold_rms: RMS (int16 scale) above which a 20 ms frame counts as speech.
    """

    name = "deepgram"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        transcripts: TranscriptSpec = None,
        access_token: str | None = None,
        inactivity_timeout_s: float = 10.0,
        interim_every_ms: int = 500,
        vad_threshold_rms: float = 500.0,
    ) -> None:
        super().__init__(behaviour)
        self.transcripts = Transcripts(transcripts)
        self.access_token = access_token
        self.inactivity_timeout_s = inactivity_timeout_s
        self.interim_every_ms = interim_every_ms
        self.vad_threshold_rms = vad_threshold_rms
        self.muted = False  # fault: a hung vendor, which keeps the connection but sends no more results
        self.streams: list[ListenStream] = []

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self.listen)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method=request.method, path=request.path, headers=self.headers_of(request))
        self.violation(f"unknown route {request.method} {request.path}")
        return dg_error(404, "NOT_FOUND", f"Route not found: {request.method} {request.path}")

    def _credential_ok(self, request: web.Request) -> tuple[bool, str | None]:
        """(authorised, the websocket subprotocol to echo back)."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "token" and value:
            return self.key_ok(value.strip()), None
        if scheme.lower() == "bearer" and value:
            return self.access_token is not None and value.strip() == self.access_token, None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if len(protocols) == 2 and protocols[0] == "token":
            return self.key_ok(protocols[1]), "token"
        return False, None

    def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            params[key] = (
                values if key in ("keyterm", "keywords", "search", "replace", "redact", "tag", "extra") else values[-1]
            )
        encoding = params.get("encoding")
        if encoding is not None and encoding not in ENCODINGS:
            raise QueryError(f"Invalid value for query parameter 'encoding': '{encoding}'.")
        if encoding is not None and encoding not in DECODABLE:
            raise QueryError(f"This fake decodes only {sorted(DECODABLE)}, not '{encoding}'.")
        if encoding is None:
            raise QueryError("This fake needs raw audio: pass encoding=linear16|mulaw|alaw and sample_rate.")
        if "sample_rate" not in params:
            raise QueryError("sample_rate is required when encoding is specified.")
        for key in ("sample_rate", "channels", "utterance_end_ms"):
            if key in params and not (str(params[key]).isdigit() and int(params[key]) > 0):
                raise QueryError(f"Invalid value for query parameter '{key}': '{params[key]}'.")
        for key in BOOLEAN_PARAMS & set(params):
            if params[key] not in ("true", "false"):
                raise QueryError(f"Invalid value for query parameter '{key}': '{params[key]}'. Expected true or false.")
        endpointing = params.get("endpointing")
        if endpointing is not None and endpointing not in ("true", "false") and not str(endpointing).isdigit():
            raise QueryError(f"Invalid value for query parameter 'endpointing': '{endpointing}'.")
        if "utterance_end_ms" in params and params.get("interim_results") != "true":
            raise QueryError("utterance_end_ms requires interim_results=true.")
        if params.get("keyterm") and not str(params.get("model", "")).startswith("nova-3"):
            raise QueryError("Keyterm Prompting is only available for Nova-3 models.")
        return params

    async def listen(self, request: web.Request) -> web.StreamResponse:
        self.record(
            "ws_connect",
            path=request.path,
            query={k: request.query.getall(k) for k in request.query},
            headers=self.headers_of(request),
        )
        authorised, subprotocol = self._credential_ok(request)
        if not authorised:
            self.violation("deepgram: missing or invalid credentials")
            return dg_error(401, "INVALID_AUTH", "Invalid credentials.")
        status = self.take_failure()
        if status is not None:
            if status == 429:
                return dg_error(429, "TOO_MANY_REQUESTS", "Too many requests. Please try again later.")
            return dg_error(status, "INTERNAL_SERVER_ERROR", "We encountered an internal error.")
        try:
            params = self._params(request)
        except QueryError as err:
            self.violation(f"deepgram: {err}")
            return dg_error(400, "INVALID_QUERY_PARAMETER", str(err))
        request_id = str(uuid.uuid4())
        ws = web.WebSocketResponse(protocols=(subprotocol,) if subprotocol else (), max_msg_size=16 * 1024 * 1024)
        ws.headers["dg-request-id"] = request_id
        await ws.prepare(request)
        self._websockets.add(ws)
        stream = ListenStream(self, ws, request, params, request_id)
        self.streams.append(stream)
        try:
            await self._serve(stream)
        except (ConnectionError, StreamCut):
            pass
        finally:
            self.forget_ws(ws)
            stream.close_code = ws.close_code
            self.record("ws_close", code=ws.close_code)
        return ws

    async def _close(self, stream: ListenStream, code: int, reason: str) -> None:
        await stream.ws.close(code=code, message=reason.encode()[:123])

    async def _serve(self, stream: ListenStream) -> None:
        ws = stream.ws
        deadline = time.monotonic() + self.inactivity_timeout_s
        while not ws.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.record("timeout", after_s=self.inactivity_timeout_s)
                await self._close(stream, 1011, NET0001)
                return
            try:
                msg = await ws.receive(timeout=min(remaining, MAX_WAIT_S))
            except TimeoutError:
                continue
            if msg.type == WSMsgType.BINARY:
                self.record("ws_binary", nbytes=len(msg.data))
                deadline = time.monotonic() + self.inactivity_timeout_s
                if not msg.data:  # a zero-length frame is the legacy way to close the stream
                    await self._close_stream(stream)
                    return
                await stream.on_audio(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                return  # close, closing, error
            try:
                message = json.loads(msg.data)
            except ValueError:
                message = msg.data
            self.record("ws_message", data=message)
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "KeepAlive":
                deadline = time.monotonic() + self.inactivity_timeout_s
            elif kind == "Finalize":
                deadline = time.monotonic() + self.inactivity_timeout_s
                await stream.finalize(from_finalize=True)
            elif kind == "CloseStream":
                await self._close_stream(stream)
                return
            elif kind == "Configure" and isinstance(message.get("keyterms", []), list | None):
                deadline = time.monotonic() + self.inactivity_timeout_s
                await self._configure(stream, message)
            else:
                self.violation(f"deepgram: unexpected text message {msg.data[:200]!r}")
                await stream.send(
                    {
                        "type": "Error",
                        "variant": "SchemaError",
                        "description": "Failed to parse the client message: unknown or malformed type.",
                        "message": msg.data,
                    }
                )
                await self._close(stream, 1008, "DATA-0000: The client message could not be parsed.")
                return

    async def _close_stream(self, stream: ListenStream) -> None:
        await stream.finalize(from_finalize=False)
        await stream.send(stream.metadata())
        await self._close(stream, 1000, "")

    async def _configure(self, stream: ListenStream, message: dict[str, Any]) -> None:
        request_id = str(uuid.uuid4())
        keyterms = message.get("keyterms")
        if keyterms is not None and not stream.model.startswith("nova-3"):
            await stream.send(
                {
                    "type": "ConfigureFailure",
                    "request_id": request_id,
                    "code": "CONFIGURE_KEYTERMS_NOT_SUPPORTED",
                    "description": "Keyterm updates are only supported on Nova-3 models.",
                }
            )
            return
        reply: dict[str, Any] = {"type": "ConfigureSuccess", "request_id": request_id}
        if keyterms is not None:
            stream.keyterms = list(keyterms)
            reply["keyterms"] = stream.keyterms
        await stream.send(reply)


def frames(data: bytes, rate: int, frame_ms: int = 20, bytes_per_sample: int = 2) -> list[bytes]:
    """Split audio into `frame_ms` pieces, as a live client sends it."""
    step = max(bytes_per_sample, rate * bytes_per_sample * frame_ms // 1000)
    return [data[i : i + step] for i in range(0, len(data), step)]


if __name__ == "__main__":
    run_cli(FakeDeepgram())
