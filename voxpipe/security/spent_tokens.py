"""Single-use tokens: a call-binding token opens one socket, once.

A Twilio binding token (``voxpipe.security.call_binding``) is valid for 120 s, so whoever captured it (with
the handshake, whose signature is valid for every call) could otherwise open a second socket for the same
CallSid within that time. The first socket to bring it spends it; the token is remembered until it has
expired, and any later socket bringing it is refused. Remembered in memory here (one process); a deployment
whose sessions are in Redis remembers them there (``voxpipe.sessions.redis_spent``), so every server of a
fleet refuses a token spent on another, and one whose sessions are in SQLite in that file
(``voxpipe.sessions.sqlite_spent``: the workers of one host). Only a digest of each token is kept. Standard
library only.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


def digest(token: str) -> str:
    """What is remembered of a token: enough to recognise it, nothing to replay."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SpentTokens(Protocol):
    """Where spent tokens are remembered."""

    async def spend(self, token: str, keep_secs: float) -> bool:
        """``True`` the first time ``token`` is spent (it is then remembered ``keep_secs``), ``False`` after."""
        ...

    async def close(self) -> None: ...


class MemorySpentTokens:
    """Spent tokens of this process. Bounded by time: every token is kept the same ``keep_secs``, so the
    oldest are first to expire and are dropped as new ones come (only tokens this server minted for signed
    webhooks get here: a forged one is refused before it is spent)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    async def spend(self, token: str, keep_secs: float) -> bool:
        now = self._clock()
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        key = digest(token)
        if key in self._until:
            return False
        self._until[key] = now + keep_secs
        return True

    def __len__(self) -> int:
        return len(self._until)

    async def close(self) -> None:
        """Nothing to let go."""
