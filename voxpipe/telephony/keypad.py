"""Keypad digits (DTMF) as the agent hears them: the keys of one entry, grouped into one user message.

A caller types a number, not single keys: digits pressed within ``PAUSE_SECS`` of each other are one entry,
and ``#`` ends an entry at once. The entry reaches the agent as one user message (``entry_message``), so the
model answers once, to the whole number. ``KeypadEntry`` does the grouping with an asyncio timer, for a
process that holds the call (the server, the bridge worker); the Lambda relay, where each key is its own
invocation, keeps the pending digits in the conversation row and applies the same rules (``ends_entry``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

PAUSE_SECS = 1.5  # digits typed within this pause are one entry
DIGITS = frozenset("0123456789*#")


class NotADigit(ValueError):
    """Something other than 0-9, * or # arrived as a key."""


def check(digit: str) -> str:
    """``digit`` if it is a keypad key, else ``NotADigit``."""
    if len(digit) != 1 or digit not in DIGITS:
        raise NotADigit(f"not a keypad digit: {digit!r}")
    return digit


def ends_entry(digit: str) -> bool:
    """``#`` ends an entry without waiting for the pause."""
    return digit == "#"


def entry_message(entry: str) -> dict[str, Any]:
    """The user message that tells the agent what was typed."""
    return {"role": "user", "content": f"(The caller pressed these keys on the phone keypad: {entry})"}


class KeypadEntry:
    """Collects keys and hands each complete entry to ``deliver`` as one user message."""

    def __init__(self, deliver: Callable[[dict[str, Any]], Awaitable[None]], pause_secs: float = PAUSE_SECS):
        self._deliver = deliver
        self._pause_secs = pause_secs
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def press(self, digit: str) -> None:
        """One key; raises ``NotADigit`` for anything but 0-9, * and #."""
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
        if not self._digits:
            return
        entry, self._digits = "".join(self._digits), []
        await self._deliver(entry_message(entry))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
