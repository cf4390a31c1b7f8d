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

The workers of one host (``voxpipe serve --workers N``) accept on one shared socket: the kernel wakes them all for
a new connection and the first to accept it takes it, and a loop busy with its calls comes to its ``accept`` after
an idle one. So a worker judges the host, not itself: each writes its share, every sample, to a file in the folder
the workers share (``$PROMETHEUS_MULTIPROC_DIR``, which ``voxpipe serve`` makes), and the load a worker turns calls
away on is the lowest among the live workers. One busy worker beside an idle one turns no call away; the host does
once every worker is past the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from pathlib import Path

from loguru import logger

from voxpipe.security.limits import LimitExceeded

SAMPLE_SECS = 1.0
SAMPLES = 5
SHARE_FILE_PREFIX = "loop-load."  # + the worker's pid, in the folder the workers share
STALE_AFTER_SAMPLES = 3  # a share file not rewritten for this many samples is a worker that stopped


class LoopLoad:
    """The busy share (0-1) of the event loop it is started on, averaged over the last ``samples`` seconds.

    ``siblings``: the folder the workers of this host share, where each publishes its share (``None``: a
    process alone)."""

    def __init__(self, sample_secs: float = SAMPLE_SECS, samples: int = SAMPLES, siblings: Path | None = None):
        self._sample_secs = sample_secs
        self._shares: deque[float] = deque(maxlen=samples)
        self._last = (0.0, 0.0)
        self._timer: asyncio.TimerHandle | None = None
        self._siblings = siblings
        self._published = siblings / f"{SHARE_FILE_PREFIX}{os.getpid()}" if siblings else None
        self._siblings_least: float | None = None  # the lowest share of the other live workers, at the last sample

    @property
    def sample_secs(self) -> float:
        return self._sample_secs

    @property
    def share(self) -> float:
        """This loop's mean busy share over the last samples; 0 before the first."""
        return sum(self._shares) / len(self._shares) if self._shares else 0.0

    @property
    def host_share(self) -> float:
        """The lowest share among this host's live workers (this one's own, alone): what a new call meets."""
        return self.share if self._siblings_least is None else min(self.share, self._siblings_least)

    def above(self, limit: float) -> bool:
        """Whether the host is busier than ``limit`` (so a limit of 1 is never exceeded)."""
        return self.host_share > limit

    def check(self, limit: float) -> None:
        """``LimitExceeded`` (``max_loop_load``, retry after the averaging window) when the host is above ``limit``."""
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
        if self._published is not None:
            with contextlib.suppress(OSError):
                self._published.unlink()

    def _sample(self) -> None:
        now, used = time.monotonic(), time.thread_time()
        wall = now - self._last[0]
        if wall > 0:
            self._shares.append(min(1.0, (used - self._last[1]) / wall))
        self._last = (now, used)
        if self._siblings is not None and self._published is not None:
            _publish(self._published, self.share)
            fresh_since = time.time() - STALE_AFTER_SAMPLES * self._sample_secs
            self._siblings_least = _least_sibling_share(self._siblings, self._published, fresh_since)
        self._timer = asyncio.get_running_loop().call_later(self._sample_secs, self._sample)


def _publish(path: Path, share: float) -> None:
    """Write this worker's share where its siblings read it (replaced whole: a reader never sees half)."""
    draft = path.with_name(path.name + ".new")
    try:
        draft.write_text(f"{share:.4f}")
        draft.replace(path)
    except OSError as exc:  # the folder is gone or full: the others judge without this worker
        logger.warning(f"loop load not shared with the other workers: {exc}")


def _least_sibling_share(folder: Path, own: Path, fresh_since: float) -> float | None:
    """The lowest share the other live workers published (``None``: none is live)."""
    shares = []
    for path in folder.glob(f"{SHARE_FILE_PREFIX}*[0-9]"):
        if path == own:
            continue
        with contextlib.suppress(OSError, ValueError):  # a worker that just stopped, or a stray file
            if path.stat().st_mtime >= fresh_since:
                shares.append(float(path.read_text()))
    return min(shares, default=None)
