"""A call's observers told inline in the worker's place (voxpipe.pipeline.call_observer): who is told of what.

Every observer hears a frame's first push; observers of every push hear the later ones too, except audio passed
on from processor to processor (what is measured of audio is its first push); processing reports go only to
observers that want them; an observer that raises harms neither the frame nor the others. A built call's
worker has no observer queue or task left. The cascade's caller audio stops at the user aggregator
(pipeline.aggregators).
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


def push(frame: object) -> FramePushed:
    a, b = FrameProcessor(name="a"), FrameProcessor(name="b")
    return FramePushed(a, b, frame, FrameDirection.DOWNSTREAM, 0)  # type: ignore[arg-type]


async def test_who_is_told_of_what() -> None:
    once, every, processing = Log(every_push=False), Log(every_push=True), Processing(every_push=False)
    observer = CallObserver([once, every, processing])
    audio = InputAudioRawFrame(audio=b"\0\0" * 160, sample_rate=8000, num_channels=1)
    text = TextFrame("hello")
    for frame in (audio, audio, text, text):  # each pushed on once: the observer tells the first push
        await observer.on_push_frame(push(frame))
    assert once.pushed == [("InputAudioRawFrame", True), ("TextFrame", True)]
    assert every.pushed == [("InputAudioRawFrame", True), ("TextFrame", True), ("TextFrame", False)]
    await observer.on_process_frame(FrameProcessed(FrameProcessor(), text, FrameDirection.DOWNSTREAM, 0))
    assert (once.processed, processing.processed) == (0, 1)
    assert observer.observe_every_push


async def test_an_observer_that_raises_harms_nobody() -> None:
    class Broken(BaseObserver):
        async def on_push_frame(self, data: FramePushed) -> None:
            raise RuntimeError("broken observer")

    after = Log(every_push=False)
    observer = CallObserver([Broken(), after])
    await observer.on_push_frame(push(TextFrame("hello")))
    assert after.pushed == [("TextFrame", True)]


async def test_a_built_call_tells_its_observers_inline() -> None:
    """No observer queue or task: the worker's observer is the call's, with pipecat's idle watch in it."""
    from pipecat.pipeline.worker import IdleFrameObserver

    from tests.test_builder import CASCADE
    from voxpipe.config.loader import parse_deployment
    from voxpipe.pipeline.builder import build_call
    from voxpipe.transports.memory import MemoryTransport

    built = build_call(parse_deployment(CASCADE, environ={}), MemoryTransport(16000, 24000))
    observer = built.worker._observer
    assert isinstance(observer, CallObserver)
    assert any(isinstance(o, IdleFrameObserver) for o in observer.observers)
    assert built.meter.observers[0] in observer.observers


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
