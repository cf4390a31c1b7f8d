"""Redaction: a deployment's ``redact:`` section applied to everything a call stores or emits.

One ``Redactor`` per call masks the deployment's entities and patterns plus the call's own secrets (the
arguments of a ``sensitive`` tool, added as the call goes). It is applied where data leaves the call: the
``CallRecord`` (``record``), the conversation written to a session store (``RedactingSessionStore``), log
lines (``redacting_logs``: a loguru patcher over every active call), trace attributes (built from the
redacted record), and, with ``before_llm``, the transcripts the model sees (``TranscriptRedactor``). The Lambda
relay applies it to each DynamoDB write and log line (``voxpipe.serverless.redacting``), so nothing here may
import pydantic or loguru at run time.
Caller entries are redacted together (``texts``), so a number spread over several keypad entries or
utterances is still found.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from voxpipe.redaction.detect import Found, find, mask, trimmed

if TYPE_CHECKING:  # not at run time: the Lambda relay redacts without loading pydantic
    from voxpipe.records.model import CallError, CallFailure, CallRecord

__all__ = ["RedactSettings", "Redactor"]


class RedactSettings(Protocol):
    """What a redactor reads of ``redact:``: ``voxpipe.config.sections.RedactConfig``, or on Lambda the handler
    configuration's plain copy of it."""

    entities: Sequence[str]
    patterns: Sequence[str]
    before_llm: bool


class Redactor:
    """Masks one call's personal data. ``secrets`` grows with each ``sensitive`` tool call."""

    def __init__(self, config: RedactSettings | None = None):
        self.entities = tuple(config.entities) if config else ()
        self.patterns = [re.compile(p) for p in config.patterns] if config else []
        self.before_llm = bool(config and config.before_llm)
        self.secrets: list[str] = []
        self.known_digits: Container[str] = ()  # digit secrets known only by digest (the Lambda relay's)

    def add_secret(self, value: Any) -> None:
        """Mask ``value`` (each string or number inside it) wherever it appears from now on."""
        if isinstance(value, dict):
            for item in value.values():
                self.add_secret(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self.add_secret(item)
        elif isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            self.secrets.append(str(value))

    def found(self, text: str) -> list[Found]:
        return find(text, self.entities, self.patterns, self.secrets, self.known_digits)

    def text(self, text: str) -> str:
        return mask(text, self.found(text)) if text else text

    def texts(self, texts: Sequence[str]) -> list[str]:
        """Mask a sequence of entries together: a number split across entries is found whole.

        The pieces of such a number become secrets of the call, so a reply that echoes one piece is masked too.
        """
        joined = "\n".join(texts)
        found = self.found(joined)
        out, offset = [], 0
        for text in texts:
            end = offset + len(text)
            inside = []
            for f in found:
                if f.start < end and f.end > offset:
                    piece = Found(max(f.start, offset) - offset, min(f.end, end) - offset, f.entity)
                    if f.start < offset or f.end > end:  # a piece of a split number: mask it wherever it recurs
                        piece = trimmed(text, piece)
                        self.add_secret(text[piece.start : piece.end])
                    inside.append(piece)
            out.append(mask(text, inside))
            offset = end + 1
        return out

    def value(self, value: Any) -> Any:
        """Any JSON-like value with every string in it masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """A conversation's messages, masked; user messages are redacted together (keypad entries)."""
        users = [i for i, m in enumerate(messages) if m.get("role") == "user" and isinstance(m.get("content"), str)]
        said = dict(zip(users, self.texts([messages[i]["content"] for i in users]), strict=True))  # learns first
        out = [self.value(dict(m)) for m in messages]
        for index, text in said.items():
            out[index]["content"] = text
        return out

    def error(self, error: CallError) -> CallError:
        return error.model_copy(update={"message": self.text(error.message)})

    def failure(self, failure: CallFailure) -> CallFailure:
        return failure.model_copy(update={"error": self.error(failure.error)})

    def record(self, record: CallRecord) -> CallRecord:
        """The record with what the caller and the bot said, errors and fallback reasons masked."""
        heard = self.texts([turn.heard for turn in record.turns])
        return record.model_copy(
            update={
                "turns": [
                    turn.model_copy(update={"heard": said, "reply": self.text(turn.reply)})
                    for turn, said in zip(record.turns, heard, strict=True)
                ],
                "errors": [self.error(error) for error in record.errors],
                "failure": self.failure(record.failure) if record.failure else None,
                "fallbacks": [f.model_copy(update={"reason": self.text(f.reason)}) for f in record.fallbacks],
            }
        )
