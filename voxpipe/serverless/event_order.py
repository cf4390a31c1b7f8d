"""A bridged connection's events put back in the order the client sent them, as they come off the queue.

Concurrent ``$default`` invocations can queue one connection's messages out of order (a cold Lambda container
holds one back). Events carrying a ``sequenceNumber`` (Twilio's always do, from 1: the ``start``) are handed on
in order, an early one waiting up to ``REORDER_WAIT_SECS`` for the gap before it to fill (``START_WAIT_SECS``
for the first event: nothing of a call works before Twilio's ``start``, and it may land on a cold container).
Audio that comes after its gap was skipped is dropped (other events are still handed on). At most
``MAX_EARLY_EVENTS`` wait: one more skips the gap at once. Each event travels with when the Lambda queued it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

#: How long an out-of-order event waits for the ones before it (then the gap is skipped): a cold Lambda
#: container can hold one message back by several hundred milliseconds.
REORDER_WAIT_SECS = 1.0
#: How long events wait for the first one (Twilio's ``start``): the cold container it may land on (the first
#: ``$default`` of a connection) can take more than a second to start.
START_WAIT_SECS = 5.0
#: Events held back waiting for a gap to fill (10 s of Twilio audio); one more skips the gap at once.
MAX_EARLY_EVENTS = 500

Queued = tuple[dict[str, Any], float | None]
"""A client event and when the Lambda queued it (``time.monotonic()``; ``None``: unknown)."""


class EventOrder:
    """Hands one connection's events to ``deliver`` in sequence order (see the module docstring)."""

    def __init__(self, deliver: Callable[[dict[str, Any], float | None], Awaitable[None]], owner: object):
        self._deliver = deliver
        self._owner = owner  # names the connection in log lines
        self.next_seq = 1
        self.early: dict[int, Queued] = {}
        self.gap_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def receive(self, event: dict[str, Any], received_at: float | None) -> None:
        sequence = event.get("sequenceNumber")
        if not str(sequence or "").isdigit():
            await self._deliver(event, received_at)
            return
        seq = int(sequence)
        if seq == self.next_seq:
            await self._in_order(seq, (event, received_at))
        elif seq > self.next_seq:
            self.early[seq] = (event, received_at)
            if len(self.early) > MAX_EARLY_EVENTS:  # bounded: a client cannot make the worker hold more
                logger.warning("%s: %s events wait for %s; the gap is skipped", self._owner, len(self.early), seq)
                first = min(self.early)
                await self._in_order(first, self.early.pop(first))
            if self.early and self.gap_timer is None:
                wait = START_WAIT_SECS if self.next_seq == 1 else REORDER_WAIT_SECS
                self.gap_timer = asyncio.get_running_loop().call_later(wait, self._skip_gap)
        elif event["event"] != "media":  # a straggler whose gap was skipped: stale audio is dropped, events not
            await self._deliver(event, received_at)

    async def _in_order(self, seq: int, queued: Queued) -> None:
        await self._deliver(*queued)
        self.next_seq = seq + 1
        while self.next_seq in self.early:
            await self._deliver(*self.early.pop(self.next_seq))
            self.next_seq += 1
        if not self.early and self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def _skip_gap(self) -> None:
        self.gap_timer = None
        if self.early:
            first = min(self.early)
            logger.warning("%s: events %s..%s never came; skipped", self._owner, self.next_seq, first - 1)
            task = asyncio.ensure_future(self._in_order(first, self.early.pop(first)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
