"""Scripted replies and transcripts for the fakes.

A reply script is a list (used in order, one entry per model reply) or a callable. Each entry is
a `Reply`, a plain string (a text reply), a `ToolCall`, a list of `ToolCall`s, or a callable that
receives a `Turn` (the request, normalised across vendors) and returns one of those. When a list
runs out, the script's `default` reply is used.

    replies = [ToolCall("get_weather", {"city": "Paris"}), "It is sunny."]
    replies = tool_then_answer(ToolCall("get_weather", {"city": "Paris"}), "Weather: {result}")

Transcript scripts (for the speech-to-text fakes) are the same idea with strings:
a list of utterance texts used in order, a single string, or a callable of an `Utterance`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    """One function call the model makes. `arguments` is a dict or an already-encoded JSON string."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON text the vendor streams."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """One model reply: text, tool calls, or both (text first)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class ToolResult:
    """A tool result the client sent back (OpenAI `tool` message, Bedrock `toolResult`, Realtime output)."""

    call_id: str
    output: str
    name: str | None = None


@dataclass
class Turn:
    """What a scripted reply can look at: the request as the vendor received it, plus a normalised view.

    Attributes:
        index: 0-based number of this reply on this fake.
        raw: the vendor request (chat body, Bedrock body, or the Realtime conversation items).
        last_user_text: text of the last user message (or its audio transcript), if any.
        tool_results: tool results sent after the model's last reply (empty unless answering a call).
    """

    index: int
    raw: Any
    last_user_text: str | None
    tool_results: list[ToolResult]


ReplyLike = Reply | str | ToolCall | Sequence[ToolCall]
ReplyEntry = ReplyLike | Callable[[Turn], ReplyLike]
ReplySpec = Sequence[ReplyEntry] | Callable[[Turn], ReplyLike] | None


def as_reply(value: ReplyLike) -> Reply:
    """Normalise anything a script may return into a `Reply`."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(text=value)
    if isinstance(value, ToolCall):
        return Reply(tool_calls=[value])
    calls = list(value)
    if all(isinstance(c, ToolCall) for c in calls):
        return Reply(tool_calls=calls)
    raise TypeError(f"not a scripted reply: {value!r}")


class Script:
    """A thread-safe reply script: `next(turn_factory)` returns the next `Reply`."""

    def __init__(self, spec: ReplySpec = None, default: ReplyLike = "This is a scripted reply.") -> None:
        self._lock = threading.Lock()
        self._spec = spec
        self._used = 0
        self.default = default

    def next(self, make_turn: Callable[[int], Turn]) -> Reply:
        """Pick the next reply; `make_turn(index)` builds the Turn only when a callable needs it."""
        with self._lock:
            index = self._used
            self._used += 1
            if callable(self._spec):
                entry: ReplyEntry = self._spec
            elif self._spec is not None and index < len(self._spec):
                entry = self._spec[index]
            else:
                entry = self.default
        if callable(entry):
            entry = entry(make_turn(index))
        return as_reply(entry)


def tool_then_answer(call: ToolCall, answer: str = "The tool said: {result}") -> Callable[[Turn], Reply]:
    """A script that calls `call`, then answers with text quoting the tool result ({result})."""

    def script(turn: Turn) -> Reply:
        if turn.tool_results:
            return Reply(text=answer.format(result=turn.tool_results[-1].output))
        return Reply(tool_calls=[call])

    return script


@dataclass
class Utterance:
    """One utterance a speech-to-text fake heard: its index, PCM16 audio and sample rate."""

    index: int
    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        """Length of the utterance audio in seconds."""
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


TranscriptSpec = str | Sequence[str] | Callable[[Utterance], str] | None


class Transcripts:
    """A thread-safe transcript script: one text per detected utterance."""

    def __init__(self, spec: TranscriptSpec = None, default: str = "hello world") -> None:
        self._lock = threading.Lock()
        self._spec = spec
        self._used = 0
        self.default = default

    def next(self, pcm: bytes, sample_rate: int) -> str:
        """The transcript of the next utterance."""
        with self._lock:
            index = self._used
            self._used += 1
        spec = self._spec
        if callable(spec):
            return spec(Utterance(index, pcm, sample_rate))
        if isinstance(spec, str):
            return spec
        if spec is not None and index < len(spec):
            return spec[index]
        return self.default


def new_id(prefix: str, length: int = 24) -> str:
    """A vendor-style random identifier such as `call_3f2a...`."""
    return prefix + uuid.uuid4().hex[:length]


def count_tokens(text: str) -> int:
    """A deterministic token estimate (about four characters per token)."""
    return (len(text) + 3) // 4
