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

The limits are shared by every process that shares the deployment's sessions (``SharedWindows``): in
Redis a fleet (``voxpipe.sessions.redis_limits``), in SQLite the workers of one host
(``voxpipe.sessions.sqlite_limits``) then allow each client its ``calls_per_minute_per_client``, the
deployment its ``minted_secrets_per_minute`` and its ``concurrent_calls`` in all. A shared call slot is a
lease with a time to live (``lease_secs``), renewed while the call lives and given back when it ends, so the
slots of a worker that crashed free themselves instead of leaking. With memory sessions, and while the
shared store fails (logged once per outage), each process counts alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voxpipe.config.models import LimitsConfig

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
        return self.count()

    def count(self) -> Slot:
        """A slot admitted elsewhere (by the shared store), counted here too so that this process's own
        calls still bound it while the store fails."""
        self._in_use += 1
        return Slot(self)


class SharedWindows(Protocol):
    """Sliding windows and slot leases kept outside the process, so all processes of a deployment count
    together. A lease's ``ttl_secs`` runs on the store's clock."""

    async def take(self, name: str, limit: int, window_secs: float, key: str) -> None:
        """Count one event for ``key`` in the window ``name``, or raise ``LimitExceeded`` (counting nothing)."""
        ...

    async def take_slot(self, name: str, limit: int, lease: str, ttl_secs: float) -> None:
        """Hold ``lease`` among the live leases of ``name`` for ``ttl_secs``, or raise ``LimitExceeded``."""
        ...

    async def renew_slot(self, name: str, lease: str, ttl_secs: float) -> None:
        """Hold ``lease`` for ``ttl_secs`` more (again, if it expired meanwhile: its call is still live)."""
        ...

    async def release_slot(self, name: str, lease: str) -> None: ...

    async def close(self) -> None: ...


class CallSlot:
    """A call's concurrency slot: this process's count, and its lease in the shared store if it holds one
    (renewed every third of its time to live until released). ``release`` (or leaving the ``async with``
    block) gives both back, once."""

    def __init__(self, limits: DeploymentLimits, local: Slot, lease: tuple[SharedWindows, str] | None = None):
        self._limits, self._local, self._lease = limits, local, lease
        self._renewing = asyncio.create_task(self._renew(*lease)) if lease is not None else None

    async def _renew(self, shared: SharedWindows, lease: str) -> None:
        limits = self._limits
        while True:
            await asyncio.sleep(limits.lease_secs / 3)
            try:
                await shared.renew_slot(limits.calls.name, lease, limits.lease_secs)
                limits.shared_back()
            except Exception as exc:  # the call goes on; its lease is renewed again once the store is back
                limits.shared_failed(exc)

    async def release(self) -> None:
        self._local.release()
        if self._renewing is None or self._lease is None:
            return
        self._renewing.cancel()
        self._renewing = None
        # A call's task is often cancelled as its socket closes: the lease is given back all the same.
        giving_back = asyncio.create_task(self._give_back(*self._lease))
        self._limits.releasing.add(giving_back)  # held until done (the loop keeps only weak references)
        giving_back.add_done_callback(self._limits.releasing.discard)
        await asyncio.shield(giving_back)

    async def _give_back(self, shared: SharedWindows, lease: str) -> None:
        try:
            await shared.release_slot(self._limits.calls.name, lease)
        except Exception as exc:  # the lease expires by itself after its time to live
            self._limits.shared_failed(exc)

    async def __aenter__(self) -> CallSlot:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.release()


class DeploymentLimits:
    """The three limits of one deployment, as the routes use them. ``shared``: where they are counted for
    every process (``None``: in this one); if it fails, this process's own windows and slots count.
    ``lease_secs``: how long a shared slot outlives a process that died holding it."""

    def __init__(
        self,
        concurrent_calls: int,
        calls_per_minute_per_client: int,
        minted_secrets_per_minute: int,
        clock: Clock = time.monotonic,
        shared: SharedWindows | None = None,
        lease_secs: float = 30.0,
    ):
        self.calls = ConcurrencySlots("concurrent_calls", concurrent_calls)
        self.new_calls = SlidingWindow("calls_per_minute_per_client", calls_per_minute_per_client, clock=clock)
        self.secrets = SlidingWindow("minted_secrets_per_minute", minted_secrets_per_minute, clock=clock)
        self.shared = shared
        self.lease_secs = lease_secs
        self.releasing: set[asyncio.Task[None]] = set()  # leases being given back
        self._shared_failing = False

    @classmethod
    def of(cls, config: LimitsConfig, shared: SharedWindows | None = None) -> DeploymentLimits:
        """The counted limits of a deployment's ``limits:`` (its ``max_loop_load`` is the served app's: it is
        a property of a process, not a count)."""
        return cls(
            config.concurrent_calls,
            config.calls_per_minute_per_client,
            config.minted_secrets_per_minute,
            shared=shared,
        )

    def shared_failed(self, problem: Exception) -> None:
        """The shared store failed: say so once per outage, not once per request."""
        if not self._shared_failing:
            log.warning(f"shared limits unavailable, counting in this process until they are back: {problem!r}")
        self._shared_failing = True

    def shared_back(self) -> None:
        self._shared_failing = False

    async def _take(self, window: SlidingWindow, key: str) -> None:
        if self.shared is not None:
            try:
                await self.shared.take(window.name, window.limit, window.window_secs, key)
                self.shared_back()
                return
            except LimitExceeded:
                raise
            except Exception as exc:  # the shared store is down: this process's own window still bounds it
                self.shared_failed(exc)
        window.take(key)

    async def _take_slot(self) -> CallSlot:
        if self.shared is not None:
            lease = secrets.token_hex(8)
            try:
                await self.shared.take_slot(self.calls.name, self.calls.limit, lease, self.lease_secs)
            except LimitExceeded:
                raise
            except Exception as exc:  # the shared store is down: this process's own calls still bound it
                self.shared_failed(exc)
            else:
                self.shared_back()
                return CallSlot(self, self.calls.count(), (self.shared, lease))
        return CallSlot(self, self.calls.take())

    async def close(self) -> None:
        """Give back the leases still being released, then let go of the shared store."""
        await asyncio.gather(*self.releasing, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()

    async def admit_new_call(self, client: str) -> None:
        """Count one new call (or page token) from ``client``, or raise ``LimitExceeded``."""
        await self._take(self.new_calls, client)

    async def admit_call(self, client: str | None) -> CallSlot:
        """Admit a new call from ``client`` (its address): the slot it holds until it ends, or ``LimitExceeded``.

        The per-client window is checked first, so a client over its rate never takes a slot. ``None``: the
        client was counted already (a Twilio call, by its caller's number at the signed webhook).
        """
        if client is not None:
            await self.admit_new_call(client)
        return await self._take_slot()

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
