"""Every observer of one call behind one pipecat observer, and audio that is only passed on seen by none.

pipecat's ``WorkerObserver`` gives each observer of a worker its own asyncio queue and task, and puts every
push of every frame on the queues of the observers that want it: with voxpipe's four per-call observers
(usage, errors, the turn meter, the reply resumer) a caller's audio frame woke ~10 tasks on its way through
a cascade. ``CallObserver`` is the worker's one observer of voxpipe's own: one queue and one task per call.
It tells its observers of a frame's first push (all of them) and of later pushes (those that observe every
push), except for audio frames: what is measured of audio (``latency.TurnMeter``, the recording) is its first
push, so a caller's or the bot's audio passed on from processor to processor costs one type check.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.frames.frames import AudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed, ProcessorSetUp
from pipecat.utils.asyncio.task_manager import BaseTaskManager


class CallObserver(BaseObserver):
    """The observers of one call, told of each push in the order given."""

    def __init__(self, observers: Sequence[BaseObserver]):
        self.observers = list(observers)
        self._every_push = [o for o in self.observers if o.observe_every_push]
        # pipecat reports every frame every processor handles; few observers want that (none of voxpipe's)
        self._of_processing = [
            o for o in self.observers if type(o).on_process_frame is not BaseObserver.on_process_frame
        ]
        super().__init__(observe_every_push=bool(self._every_push))

    async def setup(self, task_manager: BaseTaskManager) -> None:
        await super().setup(task_manager)
        for observer in self.observers:
            await observer.setup(task_manager)

    async def cleanup(self) -> None:
        await super().cleanup()
        for observer in self.observers:
            await observer.cleanup()

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.first_push:
            for observer in self.observers:
                await observer.on_push_frame(data)
        elif not isinstance(data.frame, AudioRawFrame):
            for observer in self._every_push:
                await observer.on_push_frame(data)

    async def on_pipeline_started(self) -> None:
        for observer in self.observers:
            await observer.on_pipeline_started()

    async def on_process_frame(self, data: FrameProcessed) -> None:
        for observer in self._of_processing:
            await observer.on_process_frame(data)

    async def on_processor_setup(self, data: ProcessorSetUp) -> None:
        for observer in self.observers:
            await observer.on_processor_setup(data)
