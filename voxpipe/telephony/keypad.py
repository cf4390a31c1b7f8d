"""Keypad digits (DTMF) as the agent hears them: the keys of one entry, grouped into one user message.

A caller types a number, not single keys: digits pressed within ``PAUSE_SECS`` of each other are one entry,
and ``#`` ends an entry at once. The entry reaches the agent as one user message (``entry_message``), so the
model answers once, to the whole number. ``keypad_entry.KeypadEntry`` does the grouping with an asyncio timer,
for a process that holds the call (the server, the bridge worker); the Lambda relay, where each key is its own
invocation, keeps the pending digits in the conversation row and applies the same rules (``ends_entry``). This
module imports nothing but ``typing``: a Lambda cold start does not pay for asyncio (~50 ms).
"""

from __future__ import annotations

from typing import Any

PAUSE_SECS = 1.5  # digits typed within this pause are one entry
DIGITS = frozenset("0123456789*#")
MAX_ENTRY_DIGITS = 32  # longer than any number a caller types; more keys would only pile into one LLM message


class NotADigit(ValueError):
    """Something other than 0-9, * or # arrived as a key (or a key past ``MAX_ENTRY_DIGITS``): logged, dropped."""


def check_room(digits_so_far: int) -> None:
    """``NotADigit`` if an entry already holds ``MAX_ENTRY_DIGITS`` keys: the next one is dropped."""
    if digits_so_far >= MAX_ENTRY_DIGITS:
        raise NotADigit(f"an entry holds at most {MAX_ENTRY_DIGITS} keys; the key is dropped")


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
