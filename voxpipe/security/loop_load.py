"""How busy the serving process's event loop is: the share of the last few seconds its thread spent on the CPU.

One event loop carries every call of a process. Past some share of its time busy, each call on it waits longer
at every hop, and a loop that is never idle misses turns. A call turned away at the door, to another instance
or with a message, costs less than every call on the process going slow, so a deployment's
``limits.max_loop_load`` turns new calls away above it: Twilio's webhook answers with a redirect or a message
(``voxpipe.web.app``), a browser page's call socket is closed with 1013 ("try again later",
``voxpipe.transports.admission``), and ``/readyz`` answers 503 for the load balancer. benchmarks/overload.py
measures it: a surge of callers on one core, all let in, heard turn gaps 425 ms or more above one call's at
p90; turned away above 0.75, the calls let in stayed within +100 ms (docs/deploy.md, "What a call costs").

The measure is ``time.thread_time()`` of the loop's own thread over the wall clock: the CPU the loop itself
used, not the threads that run models or record saves on other cores. It is sampled every second and averaged
over the last five samples, as LiveKit's agent workers average their load before they stop taking jobs, so a
burst does not turn calls away but a sustained load does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from voxpipe.security.limits import LimitExceeded

SAMPLE_SECS = 1.0
SAMPLES = 5


class LoopLoad:
    """The busy share (0-1) of the event loop it is started on, averaged over the last ``samples`` seconds."""

    def __init__(self, sample_secs: float = SAMPLE_SECS, samples: int = SAMPLES):
        self._sample_secs = sample_secs
        self._shares: deque[float] = deque(maxlen=samples)
        self._last = (0.0, 0.0)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def share(self) -> float:
        """The mean busy share of the last samples; 0 before the first."""
        return sum(self._shares) / len(self._shares) if self._shares else 0.0

    def above(self, limit: float) -> bool:
        """Whether the loop is busier than ``limit`` (so a limit of 1 is never exceeded)."""
        return self.share > limit

    def check(self, limit: float) -> None:
        """``LimitExceeded`` (``max_loop_load``, retry after the averaging window) when the loop is above ``limit``."""
        if self.above(limit):
            raise LimitExceeded("max_loop_load", self._sample_secs * (self._shares.maxlen or 1))

    def start(self) -> None:
        """Sample from now on, on the running loop (its callbacks run on the loop's thread)."""
        self._last = (time.monotonic(), time.thread_time())
        self._timer = asyncio.get_running_loop().call_later(self._sample_secs, self._sample)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        now, used = time.monotonic(), time.thread_time()
        wall = now - self._last[0]
        if wall > 0:
            self._shares.append(min(1.0, (used - self._last[1]) / wall))
        self._last = (now, used)
        self._timer = asyncio.get_running_loop().call_later(self._sample_secs, self._sample)
