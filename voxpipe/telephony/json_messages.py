"""The one place a peer's JSON text message is read: anything malformed is logged and skipped, never raised.

Media Streams name their events in ``event``, ConversationRelay its messages in ``type``. A message that is
oversized, not JSON, not an object, or lacks a string kind is refused here, with a log line that names the
call, so one bad message never harms the call, let alone another.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("voxpipe.telephony")

MAX_MESSAGE_CHARS = 64 * 1024  # a 20 ms media event is ~300 characters


def read(text: str | bytes | None, kind_key: str, owner: object) -> dict[str, Any] | None:
    """The message ``text`` holds, or ``None`` (and a warning naming ``owner``) if it is malformed."""
    if isinstance(text, bytes):
        log.warning("%s: binary frame ignored (%d bytes)", owner, len(text))
        return None
    if text is None:
        return None
    if len(text) > MAX_MESSAGE_CHARS:
        log.warning("%s: oversized message ignored (%d characters)", owner, len(text))
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        log.warning("%s: malformed JSON ignored: %.80r", owner, text)
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get(kind_key), str):
        return parsed
    log.warning("%s: message without a '%s' ignored: %.80r", owner, kind_key, text)
    return None


def dumps(message: dict[str, Any]) -> str:
    """A message as sent: compact JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
