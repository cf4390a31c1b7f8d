"""Every observer of one call told inline, as frames are pushed: no queue, no task, audio passed on seen by none.

pipecat's ``PipelineWorker`` hands its observers to a ``WorkerObserver``, which gives each observer its own
asyncio queue and task and puts on them every push of every frame and every frame every processor handles
(``on_process_frame``). For a caller's audio frame on its way through a cascade that was four queue puts and
four task wake-ups per hop, for observers that had nothing to do with it: ~9% of a call's CPU even with
voxpipe's observers behind one queue (issue 12's profile). ``CallObserver`` takes the ``WorkerObserver``'s
place in the call's worker (``install``) and calls its observers directly, in the order given:

- a frame's first push reaches every observer; later pushes only those that observe every push, and never
  for audio frames: what is measured of audio (``latency.TurnMeter``, the recording) is its first push, so
  audio passed on from processor to processor costs one lookup and one type check;
- processing reports reach only the observers that take them (none of voxpipe's), so a processed frame costs
  nothing at all.

Calling inline is right for voxpipe's observers because each only notes what it sees (a list append, an event
set: no I/O, no waiting), which costs less than the queue hop that deferred it. An observer that raises is
logged and skipped; the frame goes on. The price is that an observer which did wait would hold up the frame
it was told of: observers added to a call must not (the bench's, the recording's and the meter's do not).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loguru import logger
from pipecat.frames.frames import AudioRawFrame, Frame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed, ProcessorSetUp
from pipecat.pipeline.worker import PipelineWorker
from pipecat.utils.asyncio.task_manager import BaseTaskManager


class CallObserver(BaseObserver):
    """The observers of one call, told of each push in the order given, in the pushing processor's task."""

    def __init__(self, observers: Sequence[BaseObserver]):
        super().__init__()
        self.observers: list[BaseObserver] = []
        self._every_push: list[BaseObserver] = []
        self._of_processing: list[BaseObserver] = []
        self._pushed: weakref.WeakValueDictionary[int, Frame] = weakref.WeakValueDictionary()
        for observer in observers:
            self.add_observer(observer)

    @classmethod
    def install(cls, worker: PipelineWorker) -> CallObserver:
        """Put a ``CallObserver`` of the worker's observers (its own idle watch included) in the place of its
        ``WorkerObserver``, before the worker runs (pipecat hands that observer to the processors at start)."""
        observer = cls(worker._observer._observers)  # (pinned: providers/cloud/pins.py RELIED_ON)
        worker._observer = observer
        return observer

    @property
    def observe_every_push(self) -> bool:
        return bool(self._every_push)

    def add_observer(self, observer: BaseObserver) -> None:
        """What ``PipelineWorker.add_observer`` calls (the bench adds its own observers to a built call)."""
        self.observers.append(observer)
        if observer.observe_every_push:
            self._every_push.append(observer)
        # pipecat reports every frame every processor handles; few observers want that (none of voxpipe's)
        if type(observer).on_process_frame is not BaseObserver.on_process_frame:
            self._of_processing.append(observer)

    async def remove_observer(self, observer: BaseObserver) -> None:
        """What ``PipelineWorker.remove_observer`` calls."""
        for told in (self.observers, self._every_push, self._of_processing):
            if observer in told:
                told.remove(observer)
        await observer.cleanup()

    async def setup(self, task_manager: BaseTaskManager) -> None:
        await super().setup(task_manager)
        for observer in self.observers:
            await observer.setup(task_manager)

    async def cleanup(self) -> None:
        await super().cleanup()
        for observer in self.observers:
            await _told(observer.cleanup)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        data.first_push = frame.id not in self._pushed
        if data.first_push:
            self._pushed[frame.id] = frame
            for observer in self.observers:
                await _told(observer.on_push_frame, data)
        elif not isinstance(frame, AudioRawFrame):
            for observer in self._every_push:
                await _told(observer.on_push_frame, data)

    async def on_pipeline_started(self) -> None:
        for observer in self.observers:
            await _told(observer.on_pipeline_started)

    async def on_process_frame(self, data: FrameProcessed) -> None:
        for observer in self._of_processing:
            await _told(observer.on_process_frame, data)

    async def on_processor_setup(self, data: ProcessorSetUp) -> None:
        for observer in self.observers:
            await _told(observer.on_processor_setup, data)


async def _told(method: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Tell one observer; one that raises is logged, and neither the frame nor the other observers suffer."""
    try:
        await method(*args)
    except Exception:
        logger.exception(f"observer {getattr(method, '__self__', method)} failed")
