"""`voxpipe serve` with its event loop watched: how late the loop runs what is ready, and what GC stops it for.

Run as the server by benchmarks/loop_lag.py (``python benchmarks/loop_probe.py OUT.json serve CONFIG ...``,
the arguments of ``voxpipe``'s command line). Inside the server's loop, next to the calls, it keeps:

- timer lateness: a task that sleeps 5 ms over and over, and how much later than asked it woke (what a
  paced write, the VAD's 10 ms batch tick or any ``call_later`` waits beyond its time);
- ready-queue wait: a task that yields (``sleep(0)``) over and over, and how long until it ran again (what
  one task wake-up costs a frame: every hop of a frame between pipecat processors is one);
- GC pauses: the duration of each of the collector's runs, by generation (``gc.callbacks``);
- the process's CPU time over the same wall time.

SIGUSR1 clears what was kept (the benchmark sends it after its warm-up call), and with
``$VOXPIPE_PROBE_FREEZE`` set also freezes the heap then (``gc.collect(); gc.freeze()``: an experiment).
On SIGTERM, once uvicorn has stopped (it hands the signal back), everything kept is written to OUT.json.
The probes cost a few microseconds, 400 times a second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path

import uvicorn

PROBE_SECS = 0.005
FREEZE_VARIABLE = "VOXPIPE_PROBE_FREEZE"  # set: gc.freeze() at SIGUSR1 (loop_lag.py --freeze-after-warm-up)


class LoopProbe:
    """Timer lateness and ready-queue wait of the running loop, and GC pauses of the process (module doc)."""

    def __init__(self) -> None:
        self.timer_late_ms: list[float] = []
        self.ready_wait_ms: list[float] = []
        self.gc_pauses_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started = 0.0
        self.started = time.monotonic()
        self.cpu_started = time.process_time()

    def clear(self, *_: object) -> None:
        if os.environ.get(FREEZE_VARIABLE):  # the heap after a first call, out of the collector's full runs
            gc.collect()
            gc.freeze()
        self.timer_late_ms.clear()
        self.ready_wait_ms.clear()
        for pauses in self.gc_pauses_ms.values():
            pauses.clear()
        self.started, self.cpu_started = time.monotonic(), time.process_time()

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses_ms[info["generation"]].append((time.perf_counter() - self._gc_started) * 1000)

    async def watch_timers(self) -> None:
        while True:
            asked = time.perf_counter() + PROBE_SECS
            await asyncio.sleep(PROBE_SECS)
            self.timer_late_ms.append((time.perf_counter() - asked) * 1000)

    async def watch_ready_queue(self) -> None:
        while True:
            await asyncio.sleep(PROBE_SECS)
            yielded = time.perf_counter()
            await asyncio.sleep(0)
            self.ready_wait_ms.append((time.perf_counter() - yielded) * 1000)

    def summary(self) -> dict[str, object]:
        return {
            "secs": time.monotonic() - self.started,
            "cpu_secs": time.process_time() - self.cpu_started,
            "timer_late_ms": self.timer_late_ms,
            "ready_wait_ms": self.ready_wait_ms,
            "gc_pauses_ms": {str(gen): pauses for gen, pauses in self.gc_pauses_ms.items()},
        }


def main() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    probe = LoopProbe()
    gc.callbacks.append(probe.on_gc)
    signal.signal(signal.SIGUSR1, probe.clear)
    loop_kind: list[str] = []

    def write_and_exit(*_: object) -> None:
        """SIGTERM once uvicorn has shut down (it hands the signal back to the handler it found): write."""
        out.write_text(json.dumps({**probe.summary(), "loop": "".join(loop_kind)}))
        os._exit(0)

    signal.signal(signal.SIGTERM, write_and_exit)
    serve = uvicorn.Server.serve

    async def watched_serve(self: uvicorn.Server, sockets: object = None) -> None:
        loop_kind.append(type(asyncio.get_running_loop()).__module__)
        tasks = [asyncio.create_task(probe.watch_timers()), asyncio.create_task(probe.watch_ready_queue())]
        try:
            await serve(self, sockets)
        finally:
            for task in tasks:
                task.cancel()

    uvicorn.Server.serve = watched_serve  # type: ignore[method-assign]
    from voxpipe import cli

    sys.argv = ["voxpipe", *argv]
    cli.main()


if __name__ == "__main__":
    main()
