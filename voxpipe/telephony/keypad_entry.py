"""Keypad entries collected in a process that holds the call: the rules of ``keypad``, timed by asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from voxpipe.telephony.keypad import PAUSE_SECS, check, check_room, ends_entry, entry_message


class KeypadEntry:
    """Collects keys and hands each complete entry to ``deliver`` as one user message."""

    def __init__(self, deliver: Callable[[dict[str, Any]], Awaitable[None]], pause_secs: float = PAUSE_SECS):
        self._deliver = deliver
        self._pause_secs = pause_secs
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def press(self, digit: str) -> None:
        """One key; raises ``NotADigit`` for anything but 0-9, * and #, or a key past the entry's limit
        (``#`` still ends a full entry)."""
        if not ends_entry(digit):
            check_room(len(self._digits))
        self._digits.append(check(digit))
        if self._timer is not None:
            self._timer.cancel()
        if ends_entry(digit):
            await self.flush()
        else:
            self._timer = asyncio.get_running_loop().call_later(self._pause_secs, self._flush_soon)

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Deliver the digits so far as one entry (nothing if there are none)."""
        message = self.take()
        if message is not None:
            await self._deliver(message)

    def take(self) -> dict[str, Any] | None:
        """The entry typed so far as its user message, without delivering it (``None`` if no keys are pending)."""
        if self._timer is not None:
            self._timer.cancel()
        if not self._digits:
            return None
        entry, self._digits = "".join(self._digits), []
        return entry_message(entry)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
