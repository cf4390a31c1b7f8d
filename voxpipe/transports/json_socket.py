"""A WebSocket carrying JSON messages, for the server's Twilio and browser transports.

One send primitive that never raises (``False`` once the socket is gone), and one receive primitive that
yields well-formed messages only: what is malformed is logged and skipped by ``telephony.json_messages``.
A frame over ``MAX_FRAME_BYTES`` closes the socket (1009) before it is parsed, whatever ASGI server runs
the app (``voxpipe serve`` also sets uvicorn's ``ws_max_size`` to it, which refuses it before buffering).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect, WebSocketState

from voxpipe.telephony import json_messages

MAX_FRAME_BYTES = 1 << 20  # Twilio's and the page's messages are a few kilobytes at most
MESSAGE_TOO_BIG = 1009
MAX_CLOSE_REASON_BYTES = 123
POLICY_VIOLATION = 1008  # a refused socket (no valid token); the close reason says why


class JsonSocket:
    """JSON objects over one WebSocket, each with a string ``kind_key`` (``event``, ``type``)."""

    def __init__(self, socket: WebSocket, kind_key: str, owner: object):
        self.socket = socket
        self.kind_key = kind_key
        self._owner = owner  # names the call in log lines
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one JSON object; ``False`` once the socket is gone."""
        if self.socket.application_state is not WebSocketState.CONNECTED:
            return False
        try:
            async with self._lock:
                await self.socket.send_text(json_messages.dumps(message))
            return True
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Each well-formed message, until the peer goes away."""
        while True:
            try:
                message = await self.socket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            raw = text if text is not None else message.get("bytes") or b""
            if len(raw) > MAX_FRAME_BYTES:  # characters count as at least one byte each
                logger.warning(f"{self._owner}: a {len(raw)}-character frame is over {MAX_FRAME_BYTES}: closed")
                await self.close(MESSAGE_TOO_BIG, "frame too large")
                return
            parsed = json_messages.read(raw, self.kind_key, self._owner)
            if parsed is not None:
                yield parsed

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` (cut to the 123 bytes a close frame holds)."""
        if self.socket.application_state is WebSocketState.CONNECTED:
            reason = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.close(code, reason)
