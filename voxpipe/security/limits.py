"""Rate and concurrency limits of one deployment: sliding windows per key, and concurrency slots.

Every call and every minted OpenAI client secret spends money at a vendor, and the routes are on the open
internet, so each deployment caps (``limits:`` in its YAML):

- ``concurrent_calls``: calls in progress at once (a slot, taken when the call starts, given back when it ends);
- ``calls_per_minute_per_client``: new calls per client address per sliding minute;
- ``minted_secrets_per_minute``: Realtime client secrets minted per sliding minute, all clients together.

Beyond a limit a route answers 429 (``Retry-After``) or closes the WebSocket with the reason, and counts it.
This module only decides; it knows no HTTP. The clock is injectable so tests need no sleeping. Memory is
bounded: a window keeps at most ``limit`` timestamps per key and at most ``max_keys`` keys (the least
recently seen key is forgotten first, so rotating addresses cannot fill the server's memory).

The rate windows are shared by every process that shares the deployment's sessions (``SharedWindows``): in
Redis a fleet (``voxpipe.sessions.redis_limits``), in SQLite the workers of one host
(``voxpipe.sessions.sqlite_limits``) then allow each client its ``calls_per_minute_per_client`` and the
deployment its ``minted_secrets_per_minute`` in all. With memory sessions, and while the shared store fails
(logged), each process counts alone. ``concurrent_calls`` is always per process (a slot is this process's
call).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("voxpipe.security")

Clock = Callable[[], float]

MAX_WEBHOOK_BYTES = 64 * 1024
"""A Twilio webhook's form is a few kilobytes: a larger body is refused (413) before it is read whole."""


class LimitExceeded(Exception):
    """A limit refused a request: ``limit`` names it (as in the YAML), ``retry_after_secs`` says when to retry."""

    def __init__(self, limit: str, retry_after_secs: float):
        super().__init__(f"{limit} exceeded; retry in {retry_after_secs:.0f} s")
        self.limit = limit
        self.retry_after_secs = retry_after_secs


class SlidingWindow:
    """At most ``limit`` events per ``window_secs`` for each key, counted over a sliding window."""

    def __init__(
        self, name: str, limit: int, window_secs: float = 60.0, clock: Clock = time.monotonic, max_keys: int = 10_000
    ):
        if limit < 1 or window_secs <= 0 or max_keys < 1:
            raise ValueError("a window needs limit >= 1, window_secs > 0 and max_keys >= 1")
        self.name, self.limit, self.window_secs, self.max_keys = name, limit, window_secs, max_keys
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def take(self, key: str = "") -> None:
        """Count one event for ``key``, or raise ``LimitExceeded`` (counting nothing) if it is over the limit."""
        now = self._clock()
        events = self._events.pop(key, None) or deque()
        while events and events[0] <= now - self.window_secs:
            events.popleft()
        self._events[key] = events  # most recently seen last
        if len(events) >= self.limit:
            raise LimitExceeded(self.name, events[0] + self.window_secs - now)
        events.append(now)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._events)


@dataclass
class Slot:
    """One concurrency slot held; ``release`` (or leaving the ``with`` block) gives it back, once."""

    _owner: ConcurrencySlots
    _held: bool = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._in_use -= 1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class ConcurrencySlots:
    """At most ``limit`` holders at once."""

    def __init__(self, name: str, limit: int):
        if limit < 1:
            raise ValueError("concurrency slots need limit >= 1")
        self.name, self.limit = name, limit
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def take(self) -> Slot:
        """A slot, or ``LimitExceeded`` when all are held (retry when one ends: no time can be promised)."""
        if self._in_use >= self.limit:
            raise LimitExceeded(self.name, 1.0)
        self._in_use += 1
        return Slot(self)


class SharedWindows(Protocol):
    """Sliding windows kept outside the process, so all processes of a deployment count together."""

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        """Count one event for ``key`` in the window ``name``, or raise ``LimitExceeded`` (counting nothing)."""
        ...

    async def close(self) -> None: ...


class DeploymentLimits:
    """The three limits of one deployment, as the routes use them. ``shared``: where the rate windows are
    counted for every process (``None``: in this one); if it fails, this process's own windows count."""

    def __init__(
        self,
        concurrent_calls: int,
        calls_per_minute_per_client: int,
        minted_secrets_per_minute: int,
        clock: Clock = time.monotonic,
        shared: SharedWindows | None = None,
    ):
        self.calls = ConcurrencySlots("concurrent_calls", concurrent_calls)
        self.new_calls = SlidingWindow("calls_per_minute_per_client", calls_per_minute_per_client, clock=clock)
        self.secrets = SlidingWindow("minted_secrets_per_minute", minted_secrets_per_minute, clock=clock)
        self.shared = shared
        self._shared_failing = False

    async def _take(self, window: SlidingWindow, key: str) -> None:
        if self.shared is not None:
            try:
                await self.shared.take(window.name, window.limit, window.window_secs, key)
                self._shared_failing = False
                return
            except LimitExceeded:
                raise
            except Exception as exc:  # the shared store is down: this process's own window still bounds it
                if not self._shared_failing:  # once per outage, not once per request
                    log.warning(f"shared limits unavailable, counting in this process until they are back: {exc!r}")
                self._shared_failing = True
        window.take(key)

    async def admit_new_call(self, client: str) -> None:
        """Count one new call (or page token) from ``client``, or raise ``LimitExceeded``."""
        await self._take(self.new_calls, client)

    async def admit_call(self, client: str | None) -> Slot:
        """Admit a new call from ``client`` (its address): the slot it holds until it ends, or ``LimitExceeded``.

        The per-client window is checked first, so a client over its rate never takes a slot. ``None``: the
        client was counted already (a Twilio call, by its caller's number at the signed webhook).
        """
        if client is not None:
            await self.admit_new_call(client)
        return self.calls.take()

    async def admit_secret(self) -> None:
        """Count one minted client secret, or raise ``LimitExceeded``."""
        await self._take(self.secrets, "")


class RealTimeBudget:
    """A call's caller audio may arrive at most ``factor`` times faster than real time (plus a ``burst_secs``
    allowance for network jitter): audio beyond that cannot be speech, only load on the STT, so it is dropped.
    """

    def __init__(self, factor: float = 1.5, burst_secs: float = 2.0, clock: Clock = time.monotonic):
        self.factor, self.burst_secs = factor, burst_secs
        self._clock = clock
        self._started: float | None = None
        self._taken = 0.0
        self.dropped_secs = 0.0

    def take(self, secs: float) -> bool:
        """Whether ``secs`` of audio arriving now fit the budget (counted if so; ``dropped_secs`` if not)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        if self._taken + secs > self.burst_secs + self.factor * (now - self._started) + 1e-9:  # float sums
            self.dropped_secs += secs
            return False
        self._taken += secs
        return True
