"""Twilio's side of a ConversationRelay session, over a real WebSocket.

Twilio opens the socket (signed like Media Streams), sends ``setup``, then one ``prompt`` per caller
utterance (``voicePrompt``, ``lang``, ``last``); it speaks the ``text`` tokens it receives and, when the caller
talks over them, sends ``interrupt`` with what it had spoken (``utteranceUntilInterrupt``). ``dtmf`` carries
keypad digits. The app ends the session with ``end`` (``handoffData``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from twilio.request_validator import RequestValidator

WAIT_SECS = 20.0


@dataclass
class RelaySimulator:
    """One simulated ConversationRelay session; use ``async with``."""

    ws_url: str
    signed_url: str
    auth_token: str = "test-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
    session_id: str = field(default_factory=lambda: "VX" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    custom_parameters: dict[str, str] = field(default_factory=dict)  # the TwiML's <Parameter>s

    def __post_init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.messages: list[dict[str, Any]] = []
        self._socket: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RelaySimulator:
        signature = RequestValidator(self.auth_token).compute_signature(self.signed_url, {})
        self._socket = await websockets.connect(self.ws_url, additional_headers={"X-Twilio-Signature": signature})
        self._reader = asyncio.create_task(self._read())
        await self.send(
            {
                "type": "setup",
                "sessionId": self.session_id,
                "callSid": self.call_sid,
                "from": "+15550001111",
                "to": "+15559990000",
                "direction": "inbound",
                "customParameters": self.custom_parameters,
            }
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self._socket:
                parsed = json.loads(message)
                self.messages.append(parsed)
                await self.received.put(parsed)

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_raw(self, data: str) -> None:
        await self._socket.send(data)

    async def prompt(self, text: str) -> None:
        await self.send({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True})

    async def next_message(self, timeout: float = WAIT_SECS) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def reply(self, timeout: float = WAIT_SECS) -> tuple[str, float]:
        """The tokens of one response, joined, and the seconds to its first token."""
        started = time.monotonic()
        tokens: list[str] = []
        first: float | None = None
        while True:
            message = await self.next_message(timeout)
            if message.get("type") != "text":
                continue
            first = first if first is not None else time.monotonic() - started
            tokens.append(message["token"])
            if message["last"]:
                return "".join(tokens), first

    async def tokens(self, count: int, timeout: float = WAIT_SECS) -> str:
        """The next ``count`` text tokens, joined (a response still streaming)."""
        out: list[str] = []
        while len(out) < count:
            message = await self.next_message(timeout)
            if message.get("type") == "text" and message["token"]:
                out.append(message["token"])
        return "".join(out)

    async def drain(self, settle_secs: float = 0.3) -> list[dict[str, Any]]:
        """Discard what arrives until nothing has for ``settle_secs`` (the tail of a cut response)."""
        drained = []
        with contextlib.suppress(TimeoutError):
            while True:
                drained.append(await self.next_message(settle_secs))
        return drained

    async def interrupt(self, heard: str, duration_ms: int = 500) -> None:
        await self.send(
            {"type": "interrupt", "utteranceUntilInterrupt": heard, "durationUntilInterruptMs": duration_ms}
        )

    async def dtmf(self, digit: str) -> None:
        await self.send({"type": "dtmf", "digit": digit})
