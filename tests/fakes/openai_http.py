"""Fake OpenAI HTTP API: streaming chat completions, audio transcriptions and speech.

Routes (point `AsyncOpenAI(base_url=fake.url + "/v1")` or `OPENAI_BASE_URL` at it):
- `POST /v1/chat/completions`: SSE chunks exactly as OpenAI streams them (text deltas, tool-call
  fragments keyed by index, a usage chunk with `choices: []` when `stream_options.include_usage`,
  then `data: [DONE]`). Requests are validated (model, roles, tool-call pairing, known parameters,
  `stream: true`) and violations get OpenAI's real 400 error shape.
- `POST /v1/audio/transcriptions`: multipart upload; json/text/verbose_json/srt/vtt and the SSE
  `stream=true` variant. The transcript comes from a script (`transcripts=`).
- `POST /v1/audio/speech`: JSON body; streams a deterministic tone (50 ms per input character) as
  raw PCM16 24 kHz mono for `pcm`, a WAV file for `wav`, or `speech.audio.delta` SSE events.
- `GET /v1/models`, and OpenAI's `Invalid URL` 404 for anything else.

Scripts: `replies=` (see `script.py`) decides each chat reply from the request.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from typing import Any

from aiohttp import web
from openai.types.audio import speech_create_params, transcription_create_params
from openai.types.chat import completion_create_params

from . import audio
from .base import Behaviour, FakeServer, StreamCut, run_cli
from .script import ReplySpec, Script, ToolCall, ToolResult, Transcripts, TranscriptSpec, Turn, count_tokens, new_id

OPENAI_SAMPLE_RATE = 24000
CHAT_PARAMS = set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
TRANSCRIPTION_PARAMS = set(transcription_create_params.TranscriptionCreateParamsBase.__annotations__) | {"stream"}
SPEECH_PARAMS = set(speech_create_params.SpeechCreateParams.__annotations__)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
AUDIO_FORMATS = ["flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"]


class OpenAIError(Exception):
    """A request problem answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        """The `{"error": {...}}` body OpenAI returns."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(err: OpenAIError, extra_headers: dict[str, str] | None = None) -> web.Response:
    """An HTTP response carrying an OpenAI error."""
    headers = {"x-request-id": new_id("req_"), **(extra_headers or {})}
    return web.json_response(err.body(), status=err.status, headers=headers)


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI echoes it in `invalid_api_key` errors."""
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else key[:2] + "***"


def auth_error(fake: FakeServer, authorization: str | None) -> OpenAIError | None:
    """Check an `Authorization: Bearer` header against the fake's key; the 401 to send, or None."""
    if not authorization or not authorization.startswith("Bearer ") or not authorization[7:].strip():
        fake.violation("missing Authorization: Bearer header")
        return OpenAIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
            "username) if you're accessing the API from your browser and are prompted for a username. "
            "You can obtain an API key from https://platform.openai.com/account/api-keys.",
        )
    key = authorization[7:].strip()
    if not fake.key_ok(key):
        fake.violation("wrong API key")
        return OpenAIError(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    return None


def injected_failure(status: int, model: str = "gpt-4o") -> tuple[OpenAIError, dict[str, str]]:
    """OpenAI's real error body and headers for an injected failure status."""
    if status == 429:
        return OpenAIError(
            429,
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            type_="requests",
            code="rate_limit_exceeded",
        ), {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "20s",
        }
    if status == 500:
        return OpenAIError(
            500, "The server had an error while processing your request. Sorry about that!", type_="server_error"
        ), {}
    if status == 503:
        return OpenAIError(503, "The server is overloaded or not ready yet.", type_="server_error"), {}
    if status == 401:
        return OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key"), {}
    return OpenAIError(status, f"Request failed with status {status}.", type_="server_error"), {}


def message_text(content: Any) -> str:
    """The plain text of a chat message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FakeOpenAI(FakeServer):
    """Fake OpenAI HTTP API (chat completions, transcriptions, speech).

    Args:
        behaviour: common knobs (`api_key` is the expected Bearer key).
        replies: chat reply script (list or callable, see `script.py`).
        transcripts: transcription script: a string, list of strings, or callable(Utterance).
        models: if given, only these chat models exist (others get `model_not_found`).
        require_stream: reject chat requests without `stream: true` (default True).
    """

    name = "openai"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        replies: ReplySpec = None,
        transcripts: TranscriptSpec = None,
        models: set[str] | None = None,
        require_stream: bool = True,
    ) -> None:
        super().__init__(behaviour)
        self.script = Script(replies)
        self.transcripts = Transcripts(transcripts)
        self.models = models
        self.require_stream = require_stream
        self._seen_prompts: list[list[str]] = []
        self.usages: list[dict[str, Any]] = []  # the usage of each completion streamed whole with include_usage

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_get("/v1/models", self.list_models)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method=request.method, path=request.path, headers=self.headers_of(request))
        self.violation(f"unknown route {request.method} {request.path}")
        return error_response(OpenAIError(404, f"Invalid URL ({request.method} {request.path})"))

    async def _preflight(self, request: web.Request, model: str = "gpt-4o") -> web.Response | None:
        """Auth and injected failures, shared by every route."""
        err = auth_error(self, request.headers.get("Authorization"))
        if err:
            return error_response(err)
        status = self.take_failure()
        if status is not None:
            failure, headers = injected_failure(status, model)
            return error_response(failure, headers)
        return None

    async def list_models(self, request: web.Request) -> web.Response:
        self.record("http", method="GET", path=request.path, headers=self.headers_of(request))
        if (early := await self._preflight(request)) is not None:
            return early
        ids = sorted(self.models or {"gpt-4o", "gpt-4o-mini", "gpt-transcribe", "gpt-4o-mini-tts"})
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": i, "object": "model", "created": 1700000000, "owned_by": "system"} for i in ids],
            }
        )

    # ------------------------------------------------------------------ chat

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.record("http", method="POST", path=request.path, headers=self.headers_of(request), json=body)
        if (early := await self._preflight(request, (body or {}).get("model", "gpt-4o"))) is not None:
            return early
        try:
            if not isinstance(body, dict):
                raise OpenAIError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely "
                    "means you aren't using your HTTP library correctly. The OpenAI API expects a "
                    "JSON payload, but what was sent was not valid JSON.",
                )
            self._validate_chat(body)
        except OpenAIError as err:
            self.violation(f"chat: {err.message}")
            return error_response(err)

        messages = body["messages"]
        reply = self.script.next(lambda i: self._turn(i, body))
        calls = [ToolCall(c.name, c.arguments, c.id or new_id("call_")) for c in reply.tool_calls]
        usage = self._usage(body, reply.text, calls)
        self._seen_prompts.append([json.dumps(m, sort_keys=True) for m in messages])
        completion_id = new_id("chatcmpl-", 29)
        if not body.get("stream"):
            return web.json_response(self._completion(completion_id, body["model"], reply.text, calls, usage))

        await self.first_byte_delay()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "x-request-id": new_id("req_"),
                "openai-version": "2020-10-01",
                "openai-processing-ms": "42",
            }
        )
        await response.prepare(request)
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        obfuscate = options.get("include_obfuscation", True)
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                c["usage"] = None
            if obfuscate:
                c["obfuscation"] = "x" * (len(json.dumps(delta)) % 7 + 1)
            return c

        chunks: list[dict[str, Any]] = []
        if reply.text or not calls:
            chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            chunks += [chunk({"content": piece}) for piece in re.findall(r"\S+\s*|\s+", reply.text)]
        for index, call in enumerate(calls):
            start = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if not chunks:
                chunks.append(chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None}))
            else:
                chunks.append(chunk({"tool_calls": [start]}))
            args = call.arguments_json()
            step = max(1, math.ceil(len(args) / 3))
            chunks += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": args[i : i + step]}}]})
                for i in range(0, len(args), step)
            ]
        chunks.append(chunk({}, "tool_calls" if calls else "stop"))
        if include_usage:
            chunks.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body["model"],
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        try:
            for sent, c in enumerate(chunks):
                await self.chunk_pacing(sent, request)
                await response.write(f"data: {json.dumps(c)}\n\n".encode())
            await self.chunk_pacing(len(chunks), request)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            if include_usage:
                self.usages.append(usage)
        except (StreamCut, ConnectionError):
            pass
        return response

    def _validate_chat(self, body: dict[str, Any]) -> None:
        unknown = sorted(set(body) - CHAT_PARAMS)
        if unknown:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = body.get("model")
        if not model:
            raise OpenAIError(400, "you must provide a model parameter")
        if self.models is not None and model not in self.models:
            raise OpenAIError(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        if body.get("stream") not in (True, False, None):
            raise OpenAIError(
                400,
                f"Invalid type for 'stream': expected a boolean, but got {type(body['stream']).__name__} instead.",
                param="stream",
                code="invalid_type",
            )
        if self.require_stream and body.get("stream") is not True:
            raise OpenAIError(
                400,
                "This fake serves streaming chat only: set 'stream': true "
                "(FakeOpenAI(require_stream=False) allows non-streaming).",
                param="stream",
            )
        if body.get("stream_options") is not None and not body.get("stream"):
            raise OpenAIError(
                400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
        self._validate_tools(body.get("tools"))
        messages = body.get("messages")
        if messages is None:
            raise OpenAIError(
                400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        if not isinstance(messages, list) or not messages:
            raise OpenAIError(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        open_calls: dict[str, int] = {}
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role is None:
                raise OpenAIError(
                    400,
                    f"Missing required parameter: 'messages[{i}].role'.",
                    param=f"messages[{i}].role",
                    code="missing_required_parameter",
                )
            if role not in ROLES:
                raise OpenAIError(
                    400,
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    "'user', 'function', 'tool', and 'developer'.",
                    param=f"messages[{i}].role",
                    code="invalid_value",
                )
            if role != "tool" and open_calls:
                missing = ", ".join(open_calls)
                raise OpenAIError(
                    400,
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                    f"response messages: {missing}",
                    param=f"messages.[{i}].role",
                )
            if role in ("system", "developer", "user") and "content" not in m:
                raise OpenAIError(
                    400,
                    f"Missing required parameter: 'messages[{i}].content'.",
                    param=f"messages[{i}].content",
                    code="missing_required_parameter",
                )
            if role == "assistant":
                calls = m.get("tool_calls") or []
                if m.get("content") is None and not calls:
                    raise OpenAIError(
                        400,
                        "Invalid value for 'content': expected a string, got null.",
                        param=f"messages.[{i}].content",
                    )
                for j, call in enumerate(calls):
                    fn = call.get("function") or {}
                    if (
                        not call.get("id")
                        or call.get("type") != "function"
                        or "name" not in fn
                        or "arguments" not in fn
                    ):
                        raise OpenAIError(
                            400,
                            f"Missing required parameter: 'messages[{i}].tool_calls[{j}]'.",
                            param=f"messages[{i}].tool_calls[{j}]",
                            code="missing_required_parameter",
                        )
                    open_calls[call["id"]] = i
            if role == "tool":
                call_id = m.get("tool_call_id")
                if not call_id:
                    raise OpenAIError(
                        400,
                        f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                        param=f"messages[{i}].tool_call_id",
                        code="missing_required_parameter",
                    )
                if call_id not in open_calls:
                    raise OpenAIError(
                        400,
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.",
                        param=f"messages.[{i}].role",
                    )
                del open_calls[call_id]
        if open_calls:
            raise OpenAIError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(open_calls)}",
                param=f"messages.[{len(messages)}].role",
            )

    def _validate_tools(self, tools: Any) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            raise OpenAIError(400, "Invalid type for 'tools': expected an array.", param="tools", code="invalid_type")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or "type" not in tool:
                raise OpenAIError(
                    400,
                    f"Missing required parameter: 'tools[{i}].type'.",
                    param=f"tools[{i}].type",
                    code="missing_required_parameter",
                )
            if tool["type"] == "function":
                fn = tool.get("function")
                if not isinstance(fn, dict) or "name" not in fn:
                    raise OpenAIError(
                        400,
                        f"Missing required parameter: 'tools[{i}].function'.",
                        param=f"tools[{i}].function",
                        code="missing_required_parameter",
                    )
                if not TOOL_NAME.match(str(fn["name"])):
                    raise OpenAIError(
                        400,
                        f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                        "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                        param=f"tools[{i}].function.name",
                        code="invalid_value",
                    )

    def _turn(self, index: int, body: dict[str, Any]) -> Turn:
        messages = body["messages"]
        last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), None)
        names = {c["id"]: c["function"]["name"] for m in messages for c in (m.get("tool_calls") or [])}
        results: list[ToolResult] = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(
                0, ToolResult(m["tool_call_id"], message_text(m.get("content")), names.get(m["tool_call_id"]))
            )
        return Turn(index, body, last_user, results)

    def _usage(self, body: dict[str, Any], text: str, calls: list[ToolCall]) -> dict[str, Any]:
        per_message = [count_tokens(json.dumps(m, sort_keys=True)) + 3 for m in body["messages"]]
        prompt = sum(per_message) + count_tokens(json.dumps(body.get("tools") or []))
        completion = count_tokens(text) + sum(count_tokens(c.name + c.arguments_json()) for c in calls)
        keys = [json.dumps(m, sort_keys=True) for m in body["messages"]]
        shared = 0
        for seen in self._seen_prompts:
            n = 0
            while n < min(len(seen), len(keys)) and seen[n] == keys[n]:
                n += 1
            shared = max(shared, sum(per_message[:n]))
        cached = (shared // 128) * 128 if prompt >= 1024 else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _completion(
        self, cid: str, model: str, text: str, calls: list[ToolCall], usage: dict[str, Any]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                for c in calls
            ]
        return {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if calls else "stop"}
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    # ------------------------------------------------------------------ transcriptions

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        fields: dict[str, Any] = {}
        upload: bytes | None = None
        filename = None
        if request.content_type == "multipart/form-data":
            form = await request.post()
            for key in form:
                values = form.getall(key)
                for value in values:
                    if isinstance(value, web.FileField):
                        upload, filename = value.file.read(), value.filename
                    else:
                        name = key[:-2] if key.endswith("[]") else key
                        fields.setdefault(name, []).append(value)
        form_fields = {
            k: v if len(v) > 1 or k in ("include", "timestamp_granularities", "keywords") else v[0]
            for k, v in fields.items()
        }
        self.record(
            "http",
            method="POST",
            path=request.path,
            headers=self.headers_of(request),
            form=form_fields,
            filename=filename,
            file_bytes=len(upload) if upload is not None else None,
        )
        model = form_fields.get("model", "gpt-transcribe")
        if (early := await self._preflight(request, model)) is not None:
            return early
        try:
            if request.content_type != "multipart/form-data":
                raise OpenAIError(
                    400,
                    "Invalid Content-Type header (application/json), expected multipart/form-data. "
                    "(HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')",
                )
            fmt = self._validate_transcription(form_fields, upload)
        except OpenAIError as err:
            self.violation(f"transcriptions: {err.message}")
            return error_response(err)
        assert upload is not None
        try:
            pcm, rate, _ = audio.parse_wav(upload)
        except ValueError:
            pcm, rate = upload, 0
        duration = len(pcm) / 2 / rate if rate else 1.0
        text = self.transcripts.next(pcm, rate)
        if model == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(duration)}
        else:
            audio_tokens = max(1, int(duration * 10))
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": count_tokens(text),
                "total_tokens": audio_tokens + count_tokens(text),
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            }
        await self.first_byte_delay()
        if str(form_fields.get("stream", "false")).lower() == "true":
            return await self._stream_transcript(request, text, usage)
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt in ("srt", "vtt"):
            stamp = lambda s: time.strftime("%H:%M:%S", time.gmtime(s)) + (",000" if fmt == "srt" else ".000")  # noqa: E731
            cue = f"{stamp(0)} --> {stamp(duration)}\n{text}\n"
            return web.Response(text=("1\n" + cue) if fmt == "srt" else "WEBVTT\n\n" + cue, content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": "english",
                    "duration": duration,
                    "text": text,
                    "segments": [
                        {
                            "id": 0,
                            "seek": 0,
                            "start": 0.0,
                            "end": duration,
                            "text": " " + text,
                            "tokens": [],
                            "temperature": 0.0,
                            "avg_logprob": -0.2,
                            "compression_ratio": 1.0,
                            "no_speech_prob": 0.01,
                        }
                    ],
                    "usage": usage,
                }
            )
        result: dict[str, Any] = {"text": text, "usage": usage}
        if "logprobs" in (form_fields.get("include") or []):
            result["logprobs"] = [{"token": w, "logprob": -0.01, "bytes": list(w.encode())} for w in text.split()]
        return web.json_response(result)

    def _validate_transcription(self, form: dict[str, Any], upload: bytes | None) -> str:
        unknown = sorted(set(form) - TRANSCRIPTION_PARAMS)
        if unknown:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {unknown[0]}")
        if upload is None:
            raise OpenAIError(
                400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        if not form.get("model"):
            raise OpenAIError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        if audio.audio_container(upload) is None:
            raise OpenAIError(400, f"Invalid file format. Supported formats: {AUDIO_FORMATS}")
        model = form["model"]
        fmt = form.get("response_format", "json")
        if fmt not in ("json", "text", "srt", "verbose_json", "vtt", "diarized_json"):
            raise OpenAIError(
                400,
                f"Invalid value: '{fmt}'. Supported values are: 'json', 'text', 'srt', "
                "'verbose_json', 'vtt', and 'diarized_json'.",
                param="response_format",
                code="invalid_value",
            )
        if model != "whisper-1" and fmt not in ("json", "text"):
            raise OpenAIError(
                400,
                f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or 'text' instead.",
                param="response_format",
                code="unsupported_value",
            )
        if "logprobs" in (form.get("include") or []) and (model == "whisper-1" or fmt != "json"):
            raise OpenAIError(
                400,
                "logprobs are only supported with response_format 'json' on GPT transcription models.",
                param="include",
                code="unsupported_value",
            )
        if str(form.get("stream", "false")).lower() == "true" and model == "whisper-1":
            raise OpenAIError(
                400, "Streaming is not supported for the whisper-1 model.", param="stream", code="unsupported_value"
            )
        return fmt

    async def _stream_transcript(self, request: web.Request, text: str, usage: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "x-request-id": new_id("req_")}
        )
        await response.prepare(request)
        events: list[dict[str, Any]] = [
            {"type": "transcript.text.delta", "delta": piece} for piece in re.findall(r"\S+\s*|\s+", text)
        ]
        events.append({"type": "transcript.text.done", "text": text, "usage": usage})
        try:
            for sent, event in enumerate(events):
                await self.chunk_pacing(sent, request)
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await response.write_eof()
        except (StreamCut, ConnectionError):
            pass
        return response

    # ------------------------------------------------------------------ speech

    async def speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        self.record("http", method="POST", path=request.path, headers=self.headers_of(request), json=body)
        if (early := await self._preflight(request, (body or {}).get("model", "gpt-4o-mini-tts"))) is not None:
            return early
        try:
            if not isinstance(body, dict):
                raise OpenAIError(400, "We could not parse the JSON body of your request.")
            self._validate_speech(body)
        except OpenAIError as err:
            self.violation(f"speech: {err.message}")
            return error_response(err)
        fmt = body.get("response_format", "mp3")
        pcm = audio.speech_for_text(body["input"], OPENAI_SAMPLE_RATE)
        await self.first_byte_delay()
        sse = body.get("stream_format") == "sse"
        content_type = "text/event-stream" if sse else {"pcm": "audio/pcm", "wav": "audio/wav"}[fmt]
        response = web.StreamResponse(headers={"Content-Type": content_type, "x-request-id": new_id("req_")})
        await response.prepare(request)
        data = audio.wav_bytes(pcm, OPENAI_SAMPLE_RATE) if fmt == "wav" else pcm
        step = OPENAI_SAMPLE_RATE * 2 // 10  # 100 ms of PCM per chunk
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        try:
            for sent, piece in enumerate(pieces):
                await self.chunk_pacing(sent, request)
                if sse:
                    event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                    await response.write(f"data: {json.dumps(event)}\n\n".encode())
                else:
                    await response.write(piece)
            if sse:
                tokens_in, tokens_out = count_tokens(body["input"]), len(pcm) // (OPENAI_SAMPLE_RATE * 2 // 20)
                done = {
                    "type": "speech.audio.done",
                    "usage": {
                        "input_tokens": tokens_in,
                        "output_tokens": tokens_out,
                        "total_tokens": tokens_in + tokens_out,
                    },
                }
                await response.write(f"data: {json.dumps(done)}\n\n".encode())
            await response.write_eof()
        except (StreamCut, ConnectionError):
            pass
        return response

    def _validate_speech(self, body: dict[str, Any]) -> None:
        unknown = sorted(set(body) - SPEECH_PARAMS)
        if unknown:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {unknown[0]}")
        for required in ("model", "input", "voice"):
            if not body.get(required):
                raise OpenAIError(
                    400, f"Missing required parameter: '{required}'.", param=required, code="missing_required_parameter"
                )
        if not isinstance(body["input"], str) or len(body["input"]) > 4096:
            raise OpenAIError(
                400,
                "Invalid 'input': string too long. Expected a string with maximum length 4096.",
                param="input",
                code="string_above_max_length",
            )
        voice = body["voice"]
        if not (voice in VOICES or (isinstance(voice, dict) and isinstance(voice.get("id"), str))):
            raise OpenAIError(
                400,
                f"Invalid value: '{voice}'. Supported values are: " + ", ".join(f"'{v}'" for v in VOICES) + ".",
                param="voice",
                code="invalid_value",
            )
        fmt = body.get("response_format", "mp3")
        if fmt not in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
            raise OpenAIError(
                400,
                f"Invalid value: '{fmt}'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'.",
                param="response_format",
                code="invalid_value",
            )
        if fmt not in ("wav", "pcm"):
            raise OpenAIError(400, f"This fake only synthesises 'pcm' and 'wav', not '{fmt}'.", param="response_format")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise OpenAIError(
                400,
                f"Invalid 'speed': expected a number between 0.25 and 4.0, got {speed}.",
                param="speed",
                code="invalid_value",
            )
        legacy = body["model"] in ("tts-1", "tts-1-hd")
        if legacy and body.get("instructions"):
            raise OpenAIError(
                400,
                f"Instructions are not supported with the model '{body['model']}'.",
                param="instructions",
                code="unsupported_value",
            )
        if body.get("stream_format", "audio") not in ("audio", "sse") or (
            legacy and body.get("stream_format") == "sse"
        ):
            raise OpenAIError(
                400,
                f"Invalid value for 'stream_format' with model '{body['model']}'.",
                param="stream_format",
                code="invalid_value",
            )


if __name__ == "__main__":
    run_cli(FakeOpenAI())
