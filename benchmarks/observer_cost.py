"""CPU a call's observers cost per caller frame: pipecat's observer queues against voxpipe's inline CallObserver.

pipecat hands every frame push, and every frame each processor handles, to every observer: the worker's
``WorkerObserver`` puts it on one asyncio queue per observer and a task per observer wakes to handle it. An
observer created with ``observe_every_push=False`` is only told about a frame's first push; the others get
every hop. This script runs the observers voxpipe attaches to every call (``CallMeter``'s usage and error
observers, ``TurnMeter``) and pushes what one caller's 20 ms audio frame does in a cascade (one first push
and ``--hops`` - 1 repeats, each hop also reported as processed), then prints the CPU time per caller frame
in microseconds (min of ``--repeat`` runs) for each observer alone and all of them behind a real
``WorkerObserver``, and for all of them the three ways a call can be observed:

- ``pipecat``: each observer behind pipecat's ``WorkerObserver`` (a queue and task each);
- ``one queue``: all of them behind one voxpipe ``CallObserver`` behind the ``WorkerObserver`` (a queue and
  task per call; voxpipe until issue 12's second round);
- ``inline``: the ``CallObserver`` in the ``WorkerObserver``'s place, telling its observers as frames are
  pushed (``CallObserver.install``: what a call runs now).

    python benchmarks/observer_cost.py [--frames 20000] [--hops 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.asyncio.task_manager import TaskManager

from voxpipe.pipeline.call_observer import CallObserver
from voxpipe.pipeline.latency import TurnMeter
from voxpipe.pipeline.metering import CallMeter

SILENCE_20MS_16K = b"\x00\x00" * 320


async def _cost_us(observers: list[BaseObserver], frames: int, hops: int, how: str = "pipecat") -> float:
    """CPU microseconds per caller frame to deliver ``frames`` frames of ``hops`` pushes to ``observers``,
    observed ``how``: ``pipecat``, ``one queue`` or ``inline`` (the module doc)."""
    proxy: WorkerObserver | CallObserver
    if how == "inline":
        proxy = CallObserver(observers)
    else:
        proxy = WorkerObserver(observers=[CallObserver(observers)] if how == "one queue" else observers)
    await proxy.setup(TaskManager(loop=asyncio.get_running_loop()))
    source, destination = FrameProcessor(name="input"), FrameProcessor(name="stt")
    started = time.process_time()
    for _ in range(frames):
        frame = InputAudioRawFrame(audio=SILENCE_20MS_16K, sample_rate=16000, num_channels=1)
        for _ in range(hops):
            push = FramePushed(source, destination, frame, FrameDirection.DOWNSTREAM, time.monotonic_ns())
            await proxy.on_push_frame(push)
            await proxy.on_process_frame(FrameProcessed(destination, frame, FrameDirection.DOWNSTREAM, push.timestamp))
            await asyncio.sleep(0)  # each hop is a step of another processor's task: observer tasks run between
    for queue in [p.queue for p in (getattr(proxy, "_proxies", None) or {}).values()]:
        await queue.join()
    elapsed = time.process_time() - started
    await proxy.cleanup()
    return elapsed / frames * 1e6


def _configurations() -> dict[str, Callable[[], list[BaseObserver]]]:
    def usage() -> list[BaseObserver]:
        return [CallMeter({}).observer]

    def errors() -> list[BaseObserver]:
        return [CallMeter({}).error_observer]

    def turns() -> list[BaseObserver]:
        return [TurnMeter(FrameProcessor(name="output"))]

    def every_call() -> list[BaseObserver]:
        return [*CallMeter({}).observers, TurnMeter(FrameProcessor(name="output"))]

    return {
        "none": list,
        "usage (ServiceMetricsObserver)": usage,
        "errors": errors,
        "TurnMeter": turns,
        "all of a call": every_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--hops", type=int, default=3, help="pushes of each caller frame (first + repeats)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU per caller frame ({args.hops} pushes each), microseconds, min of {args.repeat} runs")
    for name, make in _configurations().items():
        best = min(asyncio.run(_cost_us(make(), args.frames, args.hops)) for _ in range(args.repeat))
        every_push = [o.observe_every_push for o in make()]
        print(f"{name:32} {best:7.1f} us   observe_every_push={every_push}")
    every_call = _configurations()["all of a call"]
    for how in ("pipecat", "one queue", "inline"):
        best = min(asyncio.run(_cost_us(every_call(), args.frames, args.hops, how)) for _ in range(args.repeat))
        print(f"{'all of a call, ' + how:32} {best:7.1f} us")


if __name__ == "__main__":
    main()
