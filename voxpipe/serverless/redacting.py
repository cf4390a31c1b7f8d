"""The Lambda relay's redaction: the deployment's ``redact:`` applied to what it writes to DynamoDB and its logs.

On the server, the live conversation stays in the call's memory and only the copy a session store keeps is
masked (``voxpipe.redaction.sessions``). A Lambda keeps nothing between invocations: the DynamoDB conversation
*is* the call's memory. So each invocation masks every conversation it writes, whole (a number split over two
keypad entries or turns is found once its second half arrives, and its first half is masked then), while the
model gets, for the turn being answered, the caller's words and the tool calls as they were said in memory.
Later turns see the masked history: ``[card_number]`` in place of the digits. ``before_llm: true`` masks the
new turn before the model sees it too.

The arguments of a ``sensitive`` tool are secrets of the call, masked wherever they recur, in later turns (and
later invocations) too. Their values may not be kept, so the conversation keeps keyed digests of their digits
(HMAC-SHA256 under ``$VOXPIPE_SIGNING_SECRET``: a 4-digit PIN's plain hash would be guessed in 10,000 tries,
without the key it cannot be), and every invocation masks any run of digits whose digest is among them. A
deployment with no signing secret (``insecure: true``) masks a secret only in the invocation that learnt it.

Log lines are masked as they are made (a ``logging`` record factory): message, arguments and traceback, in
every logger of the process, for as long as an invocation of a call with ``redact:`` runs. A Lambda container
serves one invocation at a time, so one current redactor per process is enough.

Imports neither pydantic nor loguru (``voxpipe.redaction`` is free of both at import time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from voxpipe.aws.conversations import Conversation, ConversationTable
from voxpipe.redaction import Redactor
from voxpipe.security.tokens import SECRET_VARIABLE
from voxpipe.serverless import TABLE_ENV, HandlerConfig
from voxpipe.serverless.relay_turns import BOOKKEEPING, SENSITIVE_DIGESTS

_current: list[Redactor] = []
_base_factory = logging.getLogRecordFactory()


def conversations(config: HandlerConfig) -> tuple[ConversationTable, Redactor | None]:
    """The conversation table one invocation of a call writes through, and its redactor (``None`` without
    ``redact:``; the arguments of ``sensitive`` tools are added to it as they are made)."""
    redactor = Redactor(config.redact) if config.redact is not None else None
    table = ConversationTable(config.setting(TABLE_ENV), config.ttl_secs, masked=stored_form(redactor, config.environ))
    return table, redactor


class DigestedDigits:
    """Digit strings known only by their keyed digests: ``digits in known`` tells whether they are among them."""

    def __init__(self, key: bytes, digests: Iterable[str] = ()):
        self.key = key
        self.digests = set(digests)

    def digest(self, digits: str) -> str:
        return hmac.new(self.key, digits.encode(), hashlib.sha256).hexdigest()

    def __contains__(self, digits: object) -> bool:
        return bool(self.digests) and isinstance(digits, str) and self.digest(digits) in self.digests

    def __bool__(self) -> bool:
        return bool(self.digests)


def _learn_digests(redactor: Redactor, metadata: dict[str, Any], key: bytes) -> list[str]:
    """The digests of the call's sensitive digits: those stored, and those of the secrets learnt since."""
    known = DigestedDigits(key, metadata.get(SENSITIVE_DIGESTS) or [])
    for secret in redactor.secrets:
        digits = re.sub(r"\D", "", secret)
        if len(digits) >= 3:
            known.digests.add(known.digest(digits))
    redactor.known_digits = known
    return sorted(known.digests)


def stored_form(redactor: Redactor | None, environ: Mapping[str, str]) -> Callable[[Conversation], Conversation] | None:
    """What ``ConversationTable`` writes of a conversation: its messages and metadata masked."""
    if redactor is None:
        return None
    key = environ.get(SECRET_VARIABLE, "").encode()

    def masked(conversation: Conversation) -> Conversation:
        metadata = dict(conversation.metadata)
        if key:
            metadata[SENSITIVE_DIGESTS] = _learn_digests(redactor, metadata, key)
        messages = redactor.messages(conversation.messages)
        for clear, message in zip(conversation.messages, messages, strict=True):
            if message.get("tool_calls"):
                message["tool_calls"] = [_masked_call(redactor, call) for call in clear["tool_calls"]]
        return dataclasses.replace(
            conversation,
            messages=messages,
            metadata={k: v if k in BOOKKEEPING else redactor.value(v) for k, v in metadata.items()},
            live={turn: None if heard is None else redactor.text(heard) for turn, heard in conversation.live.items()},
        )

    return masked


def _masked_call(redactor: Redactor, call: dict[str, Any]) -> dict[str, Any]:
    """A tool call with its arguments masked as values, so that they stay JSON (``{"pin": [sensitive]}`` would not)."""
    function = call.get("function") or {}
    try:
        arguments = json.dumps(
            _masked_json(redactor, json.loads(function.get("arguments") or "{}")), ensure_ascii=False
        )
    except ValueError:
        arguments = json.dumps({"masked": redactor.text(str(function.get("arguments")))})
    return {**redactor.value(call), "function": {**redactor.value(function), "arguments": arguments}}


def _masked_json(redactor: Redactor, value: Any) -> Any:
    """A JSON value masked: strings, and numbers too (a PIN the model passed as ``1234``)."""
    if isinstance(value, dict):
        return {key: _masked_json(redactor, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked_json(redactor, item) for item in value]
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        masked = redactor.text(str(value))
        return value if masked == str(value) else masked
    return value


def _masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if not _current:
        return record
    redactor = _current[-1]
    text = record.getMessage()
    if record.exc_info:  # the traceback may quote the caller (a tool's error): masked with the message
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        record.exc_info, record.exc_text = None, None
    record.msg, record.args = redactor.text(text), None
    return record


@contextmanager
def redacting_logs(redactor: Redactor | None) -> Iterator[None]:
    """Mask ``redactor``'s data in every log record made while the block runs."""
    if redactor is None:
        yield
        return
    if logging.getLogRecordFactory() is not _masked_record:
        logging.setLogRecordFactory(_masked_record)
    _current.append(redactor)
    try:
        yield
    finally:
        _current.remove(redactor)
