"""Fake OpenAI Realtime API (GA) over WebSocket at `/v1/realtime?model=...`.

Point the openai SDK at it with `AsyncOpenAI(websocket_base_url=fake.ws_url + "/v1", ...)`, or
pipecat's `OpenAIRealtimeLLMService(base_url=fake.ws_url + "/v1/realtime")`.

What it does, as the GA API does:
- `Authorization: Bearer <key>` is checked after the upgrade: a bad key gets an `error` event
  (`invalid_api_key`) and close code 3000, like the real service; `fail_status` rejects the handshake.
- `session.created` on connect; `session.update` is validated against the openai SDK's own
  pydantic models (`openai.types.realtime`), with GA strictness: a missing `session.type`, a
  beta-era field (`session.modalities`, `session.input_audio_format`, ...) or any unknown field
  gets the real `error` event (`missing_required_parameter`, `unknown_parameter`, `invalid_value`).
- `input_audio_buffer.append` (strict base64; PCM16 24 kHz, G.711 mu-law or A-law 8 kHz) feeds an
  energy VAD: `speech_started` / `speech_stopped` / `committed`, the user item
  (`conversation.item.added`/`done`), its transcription (when `audio.input.transcription` is set)
  and, with `create_response`, a response. Speech during a response cancels it (`turn_detected`).
- `conversation.item.create|delete|retrieve|truncate`, `input_audio_buffer.commit|clear`,
  `response.create`, `response.cancel`.
- Responses stream `response.output_audio.delta` (PCM16 24 kHz, or G.711 at 8 kHz when the output
  format is `audio/pcmu`/`audio/pcma`) with transcript deltas, or text deltas, or function calls,
  and end with `response.done` carrying GA usage.
- Unknown client event types get `error` (`invalid_value`, param `type`) and land in `errors`.

Fault modes besides `Behaviour`'s: `drop_next_responses(count, after_chunks)` cuts the connection in the
middle of the next responses only, so a client that reconnects finds a healthy service.

Inspect `fake.sessions` (one `RealtimeSession` per connection: `config`, `items`, `input_audio`,
`sent`, `responses`), `fake.truncations`, and the journal (`fake.messages("response.create")`).
Audio appends are journalled as `{"type": "input_audio_buffer.append", "audio_bytes": n}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Any

import pydantic
from aiohttp import WSMsgType, web
from openai.types.realtime import (
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemFunctionCall,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeConversationItemSystemMessage,
    RealtimeConversationItemUserMessage,
    RealtimeSessionCreateRequest,
    RealtimeTranscriptionSessionCreateRequest,
)
from openai.types.realtime.realtime_client_event import RealtimeClientEvent

from . import audio
from .base import Behaviour, FakeServer, StreamCut, run_cli
from .openai_http import OpenAIError, auth_error, error_response, injected_failure
from .script import ReplySpec, Script, ToolResult, Transcripts, TranscriptSpec, Turn, count_tokens, new_id

#: Client event type -> the openai SDK model that validates it.
CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(RealtimeClientEvent)[0])
}
ITEM_MODELS: dict[tuple[str, str | None], type[pydantic.BaseModel]] = {
    ("message", "system"): RealtimeConversationItemSystemMessage,
    ("message", "user"): RealtimeConversationItemUserMessage,
    ("message", "assistant"): RealtimeConversationItemAssistantMessage,
    ("function_call", None): RealtimeConversationItemFunctionCall,
    ("function_call_output", None): RealtimeConversationItemFunctionCallOutput,
}
DEFAULT_INSTRUCTIONS = "You are a helpful, witty, and friendly AI."
SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 600, "auto": 600, "high": 300}


class RealtimeError(Exception):
    """A client mistake answered with a Realtime `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None, benign: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.benign = code, message, param, benign


def event_id() -> str:
    """A server event id like `event_C9...`."""
    return new_id("event_", 21)


def _param(loc: tuple[Any, ...], prefix: str = "") -> str:
    """A pydantic error location as the dotted `param` OpenAI reports (union branch names dropped)."""
    parts = [prefix] if prefix else []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif not (isinstance(p, str) and (p[:1].isupper() or "[" in p)):
            parts.append(str(p))
    return ".".join(parts)


def validate_model(model: type[pydantic.BaseModel], data: Any, prefix: str = "") -> pydantic.BaseModel:
    """Validate `data` with an SDK model, GA-strict: unknown fields are errors too."""
    try:
        parsed = model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        param = _param(err["loc"], prefix)
        if err["type"] == "missing":
            raise RealtimeError(
                "missing_required_parameter", f"Missing required parameter: '{param}'.", param
            ) from None
        if err["type"] == "literal_error":
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{err['input']}'. Supported values are: {err['ctx']['expected']}.",
                param,
            ) from None
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': {err['msg']}.", param) from None
    unknown = _unknown_fields(parsed, prefix)
    if unknown:
        raise RealtimeError("unknown_parameter", f"Unknown parameter: '{unknown}'.", unknown)
    return parsed


def _unknown_fields(value: Any, path: str) -> str | None:
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            return f"{path}.{key}" if path else key
        for name in type(value).model_fields:
            found = _unknown_fields(getattr(value, name), f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _unknown_fields(v, f"{path}[{i}]")
            if found:
                return found
    return None


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge a session.update into the effective session: present fields replace, null clears."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("format", "turn_detection"):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


@dataclass
class Response:
    """One model response being streamed."""

    id: str
    reply_to: list[dict[str, Any]]
    in_conversation: bool
    modalities: list[str]
    cancel_reason: str | None = None
    task: asyncio.Task[None] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)


class RealtimeSession:
    """State of one Realtime WebSocket connection."""

    def __init__(
        self, fake: FakeOpenAIRealtime, ws: web.WebSocketResponse, request: web.Request, model: str, kind: str
    ) -> None:
        self.fake, self.ws, self.request, self.model, self.kind = fake, ws, request, model, kind
        self.config = self._default_config()
        self.items: list[dict[str, Any]] = []
        self.input_audio = bytearray()  # everything appended, decoded to PCM16 at the input rate
        self.buffer = bytearray()  # the uncommitted input buffer (PCM16)
        self.sent: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []  # response objects as sent in response.done
        self.audio_ms: dict[str, int] = {}  # assistant item id -> ms of audio sent
        self.active: Response | None = None
        self.speech_item_id: str | None = None
        self.vad = audio.EnergyVAD(self.input_rate, threshold_rms=fake.vad_threshold_rms, silence_ms=self._silence_ms())
        self._send_lock = asyncio.Lock()
        self._cached_prefix: tuple[str, list[str]] | None = None

    def _default_config(self) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": 24000}
        vad = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "idle_timeout_ms": None,
            "create_response": True,
            "interrupt_response": True,
        }
        sid = new_id("sess_", 21)
        expires = int(time.time()) + 3600
        if self.kind == "transcription":
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": sid,
                "expires_at": expires,
                "include": None,
                "audio": {
                    "input": {
                        "format": pcm,
                        "noise_reduction": None,
                        "turn_detection": vad,
                        "transcription": {"model": "gpt-4o-mini-transcribe", "language": None, "prompt": ""},
                    }
                },
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": sid,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": expires,
            "include": None,
            "audio": {
                "input": {"format": dict(pcm), "transcription": None, "noise_reduction": None, "turn_detection": vad},
                "output": {"format": dict(pcm), "voice": "marin", "speed": 1.0},
            },
        }

    # ------------------------------------------------------------------ config views

    def _fmt(self, direction: str) -> str:
        return ((self.config.get("audio") or {}).get(direction) or {}).get("format", {}).get("type") or "audio/pcm"

    @property
    def input_rate(self) -> int:
        """Sample rate of the input audio format."""
        return 24000 if self._fmt("input") == "audio/pcm" else 8000

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        """The effective turn detection config, or None when disabled."""
        return (self.config.get("audio") or {}).get("input", {}).get("turn_detection")

    def _silence_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") == "semantic_vad":
            return SEMANTIC_SILENCE_MS.get(td.get("eagerness") or "auto", 600)
        return int(td.get("silence_duration_ms") or 500)

    # ------------------------------------------------------------------ io

    async def send(self, event: dict[str, Any]) -> None:
        """Send one server event (serialised by a lock, since responses stream from a task)."""
        event = {"event_id": event_id(), **event}
        self.sent.append(event)
        async with self._send_lock:
            if not await self.fake.send_json(self.ws, event):
                raise ConnectionError("client went away")

    async def error(self, err: RealtimeError, client_event_id: str | None) -> None:
        """Report a client mistake: an `error` event, and (unless benign) the fake's `errors`."""
        if not err.benign:
            self.fake.violation(f"realtime: {err.code}: {err.message}")
        await self.send(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": err.code,
                    "message": err.message,
                    "param": err.param,
                    "event_id": client_event_id,
                },
            }
        )

    async def handle(self, event: Any) -> None:
        """Dispatch one client event."""
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise RealtimeError("invalid_value", "The event must be a JSON object with a string 'type'.", "type")
        kind = event["type"]
        model = CLIENT_EVENTS.get(kind)
        if model is None:
            supported = ", ".join(f"'{t}'" for t in CLIENT_EVENTS)
            raise RealtimeError("invalid_value", f"Invalid value: '{kind}'. Supported values are: {supported}.", "type")
        nested = {"session.update": "session", "conversation.item.create": "item"}.get(kind)
        if nested:
            allowed = {"type", "event_id", nested} | ({"previous_item_id"} if nested == "item" else set())
            extra = sorted(set(event) - allowed)
            if extra:
                raise RealtimeError("unknown_parameter", f"Unknown parameter: '{extra[0]}'.", extra[0])
            await (self.session_update(event) if nested == "session" else self.item_create(event))
            return
        validate_model(model, event)
        handler = getattr(self, kind.replace(".", "_"))
        await handler(event)

    # ------------------------------------------------------------------ session

    async def session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise RealtimeError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        if "type" not in session:
            raise RealtimeError(
                "missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type"
            )
        kinds = {"realtime": RealtimeSessionCreateRequest, "transcription": RealtimeTranscriptionSessionCreateRequest}
        if session["type"] not in kinds:
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{session['type']}'. Supported values are: 'realtime' and 'transcription'.",
                "session.type",
            )
        if session["type"] != self.kind:
            raise RealtimeError(
                "invalid_value",
                f"Cannot change the session type from '{self.kind}' to '{session['type']}'.",
                "session.type",
            )
        validate_model(kinds[session["type"]], session, "session")
        voice = ((session.get("audio") or {}).get("output") or {}).get("voice")
        if voice is not None and voice != self.config["audio"]["output"]["voice"] and self.audio_ms:
            raise RealtimeError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )
        modalities = session.get("output_modalities")
        if modalities is not None and sorted(modalities) not in (["audio"], ["text"]):
            raise RealtimeError(
                "invalid_value",
                "Invalid 'session.output_modalities': use ['audio'] or ['text'].",
                "session.output_modalities",
            )
        old_rate = self.input_rate
        deep_merge(self.config, {k: v for k, v in session.items() if k != "type"})
        if self.input_rate != old_rate:
            self.vad = audio.EnergyVAD(self.input_rate, threshold_rms=self.fake.vad_threshold_rms)
        self.vad.silence_ms = self._silence_ms()
        await self.send({"type": "session.updated", "session": copy.deepcopy(self.config)})

    # ------------------------------------------------------------------ input audio

    def _decode(self, raw: bytes) -> bytes:
        fmt = self._fmt("input")
        if fmt == "audio/pcmu":
            return audio.ulaw_to_pcm16(raw)
        if fmt == "audio/pcma":
            return audio.alaw_to_pcm16(raw)
        return raw[: len(raw) - len(raw) % 2]

    async def input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes, but got a value that is not valid base64.",
                "audio",
            ) from None
        pcm = self._decode(raw)
        self.input_audio += pcm
        self.buffer += pcm
        if self.turn_detection is None:
            return
        for vad_event in self.vad.feed(pcm):
            if vad_event.kind == "start":
                await self._speech_started(vad_event.at_ms)
            else:
                await self._speech_stopped(vad_event.at_ms)

    async def _speech_started(self, at_ms: int) -> None:
        td = self.turn_detection or {}
        self.speech_item_id = new_id("item_", 21)
        start = max(0, at_ms - int(td.get("prefix_padding_ms") or 300))
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start, "item_id": self.speech_item_id}
        )
        if self.active and td.get("interrupt_response", True) is not False:
            await self._cancel("turn_detected")

    async def _speech_stopped(self, at_ms: int) -> None:
        td = self.turn_detection or {}
        item_id = self.speech_item_id or new_id("item_", 21)
        self.speech_item_id = None
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": at_ms + self._silence_ms(),
                "item_id": item_id,
            }
        )
        await self._commit(item_id)
        if self.kind == "realtime" and td.get("create_response", True) is not False and not self.active:
            await self._start_response(None)

    async def input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        ms = len(self.buffer) / 2 / self.input_rate * 1000
        if ms < 100:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too "
                f"small. Expected at least 100ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self.vad.force_stop()
        item_id = self.speech_item_id or new_id("item_", 21)
        self.speech_item_id = None
        await self._commit(item_id)

    async def input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        self.vad.force_stop()
        self.speech_item_id = None
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        pcm, rate = bytes(self.buffer), self.input_rate
        self.buffer.clear()
        previous = self.items[-1]["id"] if self.items else None
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
            "_audio_ms": len(pcm) // 2 * 1000 // rate,
        }
        self.items.append(item)
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        await self.send({"type": "conversation.item.added", "previous_item_id": previous, "item": _public(item)})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous, "item": _public(item)})
        if not (self.config.get("audio") or {}).get("input", {}).get("transcription"):
            return
        transcript = self.fake.transcripts.next(pcm, rate)
        item["content"][0]["transcript"] = transcript
        for piece in re.findall(r"\S+\s*|\s+", transcript):
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": piece,
                }
            )
        audio_tokens = max(1, item["_audio_ms"] // 100)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {
                    "type": "tokens",
                    "input_tokens": audio_tokens,
                    "output_tokens": count_tokens(transcript),
                    "total_tokens": audio_tokens + count_tokens(transcript),
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                },
            }
        )

    # ------------------------------------------------------------------ conversation items

    def _find(self, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self.items if i["id"] == item_id), None)

    async def item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            raise RealtimeError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        model = ITEM_MODELS.get((item.get("type"), item.get("role") if item.get("type") == "message" else None))
        if model is None:
            raise RealtimeError(
                "invalid_value",
                f"Invalid value: '{item.get('type')}'. Supported values are: "
                "'message', 'function_call', and 'function_call_output'.",
                "item.type",
            )
        validate_model(model, item, "item")
        if item.get("id") and self._find(item["id"]):
            raise RealtimeError("invalid_value", f"Item with id '{item['id']}' already exists.", "item.id")
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and not self._find(previous):
            raise RealtimeError("invalid_value", f"Previous item with id '{previous}' not found.", "previous_item_id")
        if item["type"] == "function_call_output":
            calls = {i.get("call_id") for i in self.items if i["type"] == "function_call"}
            if item["call_id"] not in calls:
                raise RealtimeError(
                    "invalid_value", f"Tool call ID '{item['call_id']}' not found in conversation.", "item.call_id"
                )
        stored = {"id": item.get("id") or new_id("item_", 21), "object": "realtime.item", **item, "status": "completed"}
        stored.pop("previous_item_id", None)
        if previous is None:
            before = self.items[-1]["id"] if self.items else None
            self.items.append(stored)
        elif previous == "root":
            before = None
            self.items.insert(0, stored)
        else:
            index = self.items.index(self._find(previous))  # type: ignore[arg-type]
            before = previous
            self.items.insert(index + 1, stored)
        await self.send({"type": "conversation.item.added", "previous_item_id": before, "item": _public(stored)})
        await self.send({"type": "conversation.item.done", "previous_item_id": before, "item": _public(stored)})

    async def conversation_item_delete(self, event: dict[str, Any]) -> None:
        item = self._find(event["item_id"])
        if item is None:
            raise RealtimeError("item_delete_invalid_item_id", f"Item with item_id not found: {event['item_id']}")
        self.items.remove(item)
        await self.send({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._find(event["item_id"])
        if item is None:
            raise RealtimeError(
                "item_retrieve_invalid_item_id", f"Item with item_id not found: {event['item_id']}", benign=True
            )
        await self.send({"type": "conversation.item.retrieved", "item": _public(item)})

    async def conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, index, end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        item = self._find(item_id)
        if item is None:
            raise RealtimeError("item_truncate_invalid_item_id", f"Item with item_id not found: {item_id}", "item_id")
        if item.get("role") != "assistant" or item_id not in self.audio_ms:
            raise RealtimeError(
                "invalid_value",
                f"Item '{item_id}' is not an assistant message with audio; only assistant audio can be truncated.",
                "item_id",
            )
        content = item.get("content") or []
        if not 0 <= index < max(1, len(content)) or (content and content[index].get("type") != "output_audio"):
            raise RealtimeError(
                "invalid_value", f"Invalid content_index {index} for item '{item_id}'.", "content_index"
            )
        available = self.audio_ms[item_id]
        if end_ms < 0 or end_ms > available:
            raise RealtimeError(
                "invalid_value", f"Audio content of {available}ms is already shorter than {end_ms}ms", "audio_end_ms"
            )
        self.audio_ms[item_id] = end_ms
        if content:
            content[index]["transcript"] = ""
        record = {"item_id": item_id, "content_index": index, "audio_end_ms": end_ms, "audio_sent_ms": available}
        self.fake.truncations.append(record)
        await self.send(
            {"type": "conversation.item.truncated", "item_id": item_id, "content_index": index, "audio_end_ms": end_ms}
        )

    async def output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        raise RealtimeError(
            "invalid_value", "output_audio_buffer.clear is only supported for WebRTC connections.", "type"
        )

    # ------------------------------------------------------------------ responses

    async def response_create(self, event: dict[str, Any]) -> None:
        if self.kind != "realtime":
            raise RealtimeError("invalid_value", "Responses are not supported in transcription sessions.", "type")
        if self.active:
            raise RealtimeError(
                "conversation_already_has_active_response",
                "Conversation already has an active "
                f"response in progress: {self.active.id}. Wait until the response is finished "
                "before creating a new one.",
                benign=True,
            )
        params = event.get("response") or {}
        modalities = params.get("output_modalities")
        if modalities is not None and sorted(modalities) not in (["audio"], ["text"]):
            raise RealtimeError(
                "invalid_value",
                "Invalid 'response.output_modalities': use ['audio'] or ['text'].",
                "response.output_modalities",
            )
        await self._start_response(params)

    async def response_cancel(self, event: dict[str, Any]) -> None:
        if not self.active or (event.get("response_id") and event["response_id"] != self.active.id):
            raise RealtimeError(
                "response_cancel_not_active", "Cancellation failed: no active response found", benign=True
            )
        await self._cancel("client_cancelled")

    async def _cancel(self, reason: str) -> None:
        response = self.active
        if response is None or response.task is None:
            return
        response.cancel_reason = reason
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(response.task), 5.0)

    async def _start_response(self, params: dict[str, Any] | None) -> None:
        params = params or {}
        in_conversation = params.get("conversation", "auto") != "none"
        context = [_public(i) for i in params["input"]] if params.get("input") else list(self.items)
        modalities = params.get("output_modalities") or self.config.get("output_modalities") or ["audio"]
        response = Response(new_id("resp_", 21), context, in_conversation, modalities)
        self.active = response
        response.task = asyncio.create_task(self._run_response(response))

    def _turn(self, index: int, items: list[dict[str, Any]]) -> Turn:
        last_user = None
        for item in reversed(items):
            if item.get("type") == "message" and item.get("role") == "user":
                last_user = " ".join((c.get("text") or c.get("transcript") or "") for c in item.get("content") or [])
                break
        results: list[ToolResult] = []
        names = {i.get("call_id"): i.get("name") for i in items if i.get("type") == "function_call"}
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            results.insert(0, ToolResult(item["call_id"], item["output"], names.get(item["call_id"])))
        return Turn(index, [_public(i) for i in items], last_user, results)

    async def _run_response(self, response: Response) -> None:
        try:
            await self._stream_response(response)
        except (ConnectionError, StreamCut):
            pass
        finally:
            if self.active is response:
                self.active = None

    async def _stream_response(self, r: Response) -> None:
        fake = self.fake
        reply = fake.script.next(lambda i: self._turn(i, r.reply_to))
        usage_in = self._input_usage(r.reply_to)
        base = {
            "id": r.id,
            "object": "realtime.response",
            "conversation_id": "conv_" + self.config["id"][5:],
            "output_modalities": r.modalities,
            "max_output_tokens": self.config.get("max_output_tokens", "inf"),
            "audio": {
                "output": {
                    "format": self.config["audio"]["output"]["format"],
                    "voice": self.config["audio"]["output"]["voice"],
                }
            },
            "metadata": None,
            "usage": None,
        }
        await self.send(
            {
                "type": "response.created",
                "response": {**base, "status": "in_progress", "status_details": None, "output": []},
            }
        )
        await fake.first_byte_delay()
        sent = 0
        out_text = out_audio_ms = 0
        previous = self.items[-1]["id"] if self.items else None

        async def pace() -> bool:
            nonlocal sent
            if r.cancel_reason:
                return False
            if fake.drops > 0 and sent >= fake.drop_after_chunks:
                fake.drops -= 1
                fake.abort(self.request)
                raise StreamCut
            await fake.chunk_pacing(sent, self.request)
            sent += 1
            return not r.cancel_reason

        async def add_item(item: dict[str, Any], index: int) -> None:
            nonlocal previous
            r.output.append(item)
            await self.send(
                {
                    "type": "response.output_item.added",
                    "response_id": r.id,
                    "output_index": index,
                    "item": _public(item),
                }
            )
            if r.in_conversation:
                self.items.append(item)
                await self.send(
                    {"type": "conversation.item.added", "previous_item_id": previous, "item": _public(item)}
                )
            previous = item["id"]

        async def finish_item(item: dict[str, Any], index: int) -> None:
            item["status"] = "completed"
            if r.in_conversation:
                await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": _public(item)})
            await self.send(
                {"type": "response.output_item.done", "response_id": r.id, "output_index": index, "item": _public(item)}
            )

        index = 0
        if (reply.text or not reply.tool_calls) and not r.cancel_reason:
            item = {
                "id": new_id("item_", 21),
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            await add_item(item, index)
            ids = {"response_id": r.id, "item_id": item["id"], "output_index": index, "content_index": 0}
            words = re.findall(r"\S+\s*|\s+", reply.text)
            if "audio" in r.modalities:
                await self.send(
                    {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}}
                )
                chunks = self._audio_chunks(reply.text)
                self.audio_ms[item["id"]] = 0
                per_chunk = max(1, math.ceil(len(words) / max(1, len(chunks))))
                for n, (data, ms) in enumerate(chunks):
                    if not await pace():
                        break
                    await self.send(
                        {"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(data).decode()}
                    )
                    self.audio_ms[item["id"]] += ms
                    out_audio_ms += ms
                    for word in words[n * per_chunk : (n + 1) * per_chunk]:
                        await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": word})
                if not r.cancel_reason:
                    await self.send({"type": "response.output_audio.done", **ids})
                    await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": reply.text})
                    item["content"] = [{"type": "output_audio", "transcript": reply.text}]
                    await self.send(
                        {
                            "type": "response.content_part.done",
                            **ids,
                            "part": {"type": "audio", "transcript": reply.text},
                        }
                    )
            else:
                await self.send({"type": "response.content_part.added", **ids, "part": {"type": "text", "text": ""}})
                for word in words:
                    if not await pace():
                        break
                    await self.send({"type": "response.output_text.delta", **ids, "delta": word})
                if not r.cancel_reason:
                    await self.send({"type": "response.output_text.done", **ids, "text": reply.text})
                    item["content"] = [{"type": "output_text", "text": reply.text}]
                    await self.send(
                        {"type": "response.content_part.done", **ids, "part": {"type": "text", "text": reply.text}}
                    )
            out_text += count_tokens(reply.text)
            if r.cancel_reason:
                item["status"] = "incomplete"
                item["content"] = [
                    {
                        "type": "output_audio" if "audio" in r.modalities else "output_text",
                        "transcript" if "audio" in r.modalities else "text": "",
                    }
                ]
            else:
                await finish_item(item, index)
            index += 1
        for call in reply.tool_calls:
            if r.cancel_reason:
                break
            args = call.arguments_json()
            item = {
                "id": new_id("item_", 21),
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": call.name,
                "call_id": call.id or new_id("call_", 16),
                "arguments": "",
            }
            await add_item(item, index)
            ids = {"response_id": r.id, "item_id": item["id"], "output_index": index, "call_id": item["call_id"]}
            step = max(1, math.ceil(len(args) / 3))
            for i in range(0, len(args), step):
                if not await pace():
                    break
                await self.send({"type": "response.function_call_arguments.delta", **ids, "delta": args[i : i + step]})
            if r.cancel_reason:
                item["status"] = "incomplete"
                break
            item["arguments"] = args
            await self.send(
                {"type": "response.function_call_arguments.done", **ids, "name": call.name, "arguments": args}
            )
            out_text += count_tokens(call.name + args)
            await finish_item(item, index)
            index += 1
        status = "cancelled" if r.cancel_reason else "completed"
        details = {"type": "cancelled", "reason": r.cancel_reason} if r.cancel_reason else None
        out_audio = out_audio_ms // 50
        usage = {
            "total_tokens": usage_in["input_tokens"] + out_text + out_audio,
            **usage_in,
            "output_tokens": out_text + out_audio,
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
        done = {
            **base,
            "status": status,
            "status_details": details,
            "output": [_public(i) for i in r.output],
            "usage": usage,
        }
        self.responses.append(done)
        self.active = None
        await self.send({"type": "response.done", "response": done})

    def _audio_chunks(self, text: str) -> list[tuple[bytes, int]]:
        fmt = self._fmt("output")
        rate = 24000 if fmt == "audio/pcm" else 8000
        pcm = audio.speech_for_text(text, rate)
        step = rate * 2 * self.fake.audio_chunk_ms // 1000
        out = []
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            ms = len(piece) // 2 * 1000 // rate
            if fmt == "audio/pcmu":
                piece = audio.pcm16_to_ulaw(piece)
            elif fmt == "audio/pcma":
                piece = audio.pcm16_to_alaw(piece)
            out.append((piece, ms))
        return out

    def _input_usage(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        instructions = str(self.config.get("instructions") or "")
        text = count_tokens(instructions) + count_tokens(json.dumps(self.config.get("tools") or []))
        audio_tokens = 0
        keys: list[str] = []
        per_item: list[tuple[int, int]] = []
        for item in items:
            t = a = 0
            if item.get("type") == "message":
                for c in item.get("content") or []:
                    t += count_tokens(c.get("text") or "") + count_tokens(c.get("transcript") or "")
                if item.get("role") == "user" and "_audio_ms" in item:
                    a = item["_audio_ms"] // 100
                elif item["id"] in self.audio_ms:
                    a = self.audio_ms[item["id"]] // 50
            else:
                t = count_tokens(json.dumps(_public(item)))
            per_item.append((t, a))
            keys.append(item["id"])
            text += t
            audio_tokens += a
        cached_text = cached_audio = 0
        if self._cached_prefix and self._cached_prefix[0] == instructions:
            n = 0
            while n < min(len(keys), len(self._cached_prefix[1])) and keys[n] == self._cached_prefix[1][n]:
                n += 1
            cached_text = count_tokens(instructions) + sum(t for t, _ in per_item[:n])
            cached_audio = sum(a for _, a in per_item[:n])
        self._cached_prefix = (instructions, keys)
        total = text + audio_tokens
        cached = cached_text + cached_audio
        if total < 1024 or cached < 64:
            cached_text = cached_audio = cached = 0
        else:
            rounded = cached // 64 * 64
            cached_text = cached_text * rounded // cached
            cached_audio, cached = rounded - cached_text, rounded
        return {
            "input_tokens": total,
            "input_token_details": {
                "text_tokens": text,
                "audio_tokens": audio_tokens,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
        }


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the API shows it (without the fake's private bookkeeping)."""
    return {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("_")}


class FakeOpenAIRealtime(FakeServer):
    """Fake OpenAI Realtime (GA) WebSocket server.

    Args:
        behaviour: common knobs (`api_key` is the expected Bearer key).
        replies: reply script (see `script.py`); each `Turn.raw` is the list of conversation items.
        transcripts: input-audio transcription script (str, list, or callable(Utterance)).
        audio_chunk_ms: audio per `response.output_audio.delta` (default 100 ms).
        vad_threshold_rms: RMS (int16 scale) above which a 20 ms input frame counts as speech.
    """

    name = "openai-realtime"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        replies: ReplySpec = None,
        transcripts: TranscriptSpec = None,
        audio_chunk_ms: int = 100,
        vad_threshold_rms: float = 500.0,
    ) -> None:
        super().__init__(behaviour)
        self.script = Script(replies)
        self.transcripts = Transcripts(transcripts)
        self.audio_chunk_ms = audio_chunk_ms
        self.vad_threshold_rms = vad_threshold_rms
        self.sessions: list[RealtimeSession] = []
        self.truncations: list[dict[str, Any]] = []
        self.drops = 0  # responses still to be cut by a dropped connection (see drop_next_responses)
        self.drop_after_chunks = 0

    def drop_next_responses(self, count: int = 1, after_chunks: int = 2) -> None:
        """Fault: the next ``count`` responses drop their session's connection (TCP abort, no close frame)
        after ``after_chunks`` streamed chunks; the sessions opened after that are healthy again."""
        self.drops, self.drop_after_chunks = count, after_chunks

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/realtime", self.realtime)

    async def handle_unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.record("http", method=request.method, path=request.path, headers=self.headers_of(request))
        self.violation(f"unknown route {request.method} {request.path}")
        return error_response(OpenAIError(404, f"Invalid URL ({request.method} {request.path})"))

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.record("ws_connect", path=request.path, query=query, headers=self.headers_of(request))
        status = self.take_failure()
        if status is not None:
            failure, headers = injected_failure(status, query.get("model", "gpt-realtime"))
            return error_response(failure, headers)
        kind = "transcription" if query.get("intent") == "transcription" else "realtime"
        model = query.get("model", "")
        if kind == "realtime" and not model and not query.get("call_id"):
            self.violation("realtime: no model in the connection URL")
            return error_response(
                OpenAIError(
                    400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
                )
            )
        ws = await self.accept_ws(request)
        try:
            auth = auth_error(self, request.headers.get("Authorization"))
            if auth is not None:
                await self.send_json(
                    ws,
                    {
                        "type": "error",
                        "event_id": event_id(),
                        "error": {
                            "type": "invalid_request_error",
                            "code": auth.code or "missing_api_key",
                            "message": auth.message,
                            "param": None,
                            "event_id": None,
                        },
                    },
                )
                await ws.close(code=3000, message=b"invalid_request_error.invalid_api_key")
                return ws
            session = RealtimeSession(self, ws, request, model, kind)
            self.sessions.append(session)
            with contextlib.suppress(ConnectionError):
                await session.send({"type": "session.created", "session": copy.deepcopy(session.config)})
            await self._serve(session)
        finally:
            self.forget_ws(ws)
        return ws

    async def _serve(self, session: RealtimeSession) -> None:
        ws = session.ws
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self.record("ws_binary", nbytes=len(msg.data))
                    await session.error(
                        RealtimeError("invalid_value", "Binary frames are not supported; send JSON text events."), None
                    )
                    continue
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    self.record("ws_message", data=msg.data)
                    await session.error(
                        RealtimeError("invalid_json", "The server could not parse the event as JSON."), None
                    )
                    continue
                logged = event
                if isinstance(event, dict) and event.get("type") == "input_audio_buffer.append":
                    logged = {k: v for k, v in event.items() if k != "audio"}
                    logged["audio_bytes"] = len(str(event.get("audio", ""))) * 3 // 4
                self.record("ws_message", data=logged)
                try:
                    await session.handle(event)
                except RealtimeError as err:
                    await session.error(err, event.get("event_id") if isinstance(event, dict) else None)
        except (ConnectionError, StreamCut):
            pass
        finally:
            if session.active and session.active.task:
                session.active.task.cancel()
            self.record("ws_close", code=ws.close_code)


if __name__ == "__main__":
    run_cli(FakeOpenAIRealtime())
