"""A call's observers behind one pipecat observer (voxpipe.pipeline.call_observer): who is told of what.

Every observer hears a frame's first push; observers of every push hear the later ones too, except audio passed
on from processor to processor (what is measured of audio is its first push); processing reports go only to
observers that want them. The cascade's caller audio stops at the user aggregator (pipeline.aggregators).
"""

from __future__ import annotations

from pipecat.frames.frames import InputAudioRawFrame, TextFrame, TranscriptionFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voxpipe.pipeline.aggregators import CascadeUserAggregator
from voxpipe.pipeline.call_observer import CallObserver


class Log(BaseObserver):
    def __init__(self, *, every_push: bool):
        super().__init__(observe_every_push=every_push)
        self.pushed: list[tuple[str, bool]] = []
        self.processed = 0

    async def on_push_frame(self, data: FramePushed) -> None:
        self.pushed.append((type(data.frame).__name__, data.first_push))


class Processing(Log):
    async def on_process_frame(self, data: FrameProcessed) -> None:
        self.processed += 1


def push(frame: object, first: bool) -> FramePushed:
    a, b = FrameProcessor(name="a"), FrameProcessor(name="b")
    return FramePushed(a, b, frame, FrameDirection.DOWNSTREAM, 0, first_push=first)  # type: ignore[arg-type]


async def test_who_is_told_of_what() -> None:
    once, every, processing = Log(every_push=False), Log(every_push=True), Processing(every_push=False)
    observer = CallObserver([once, every, processing])
    audio = InputAudioRawFrame(audio=b"\0\0" * 160, sample_rate=8000, num_channels=1)
    text = TextFrame("hello")
    for data in (push(audio, True), push(audio, False), push(text, True), push(text, False)):
        await observer.on_push_frame(data)
    assert once.pushed == [("InputAudioRawFrame", True), ("TextFrame", True)]
    assert every.pushed == [("InputAudioRawFrame", True), ("TextFrame", True), ("TextFrame", False)]
    await observer.on_process_frame(FrameProcessed(FrameProcessor(), text, FrameDirection.DOWNSTREAM, 0))
    assert (once.processed, processing.processed) == (0, 1)
    assert observer.observe_every_push


async def test_the_cascade_user_aggregator_keeps_caller_audio() -> None:
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams

    pushed: list[object] = []

    class Next(FrameProcessor):
        async def queue_frame(self, frame: object, direction: object = None, callback: object = None) -> None:
            pushed.append(frame)

    user = CascadeUserAggregator(LLMContext(), params=LLMUserAggregatorParams())
    user.link(Next())
    audio = InputAudioRawFrame(audio=b"\0\0" * 160, sample_rate=8000, num_channels=1)
    await user.push_frame(audio)
    await user.push_frame(TranscriptionFrame("hi", "caller", "now"))
    assert [type(f).__name__ for f in pushed] == ["TranscriptionFrame"]
