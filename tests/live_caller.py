"""A caller feeding a ``MemoryTransport`` in real time, and a whole call through ``run_measured_call`` with it.

``tests/`` is on ``sys.path`` under pytest, so tests import it as ``live_caller``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from voxpipe.bench.simulated_call import FRAME_SECS, INPUT_RATE
from voxpipe.config.models import Deployment
from voxpipe.pipeline.builder import CallContext, CallPipeline
from voxpipe.pipeline.experiment import ExperimentRouter
from voxpipe.pipeline.host import CallBookkeeping, run_measured_call
from voxpipe.pipeline.latency import first_audible
from voxpipe.records.model import CallRecord
from voxpipe.transports.memory import MemoryTransport


class LiveCaller:
    """Sends 20 ms frames of PCM16 at 16 kHz on a real-time schedule; silence fills waits."""

    def __init__(self, transport: MemoryTransport):
        self.transport = transport
        self.frame = int(INPUT_RATE * FRAME_SECS) * 2
        self.next_at = time.monotonic()

    async def send(self, pcm: bytes) -> None:
        for offset in range(0, len(pcm), self.frame):
            self.next_at += FRAME_SECS
            await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))
            await self.transport.feed(pcm[offset : offset + self.frame].ljust(self.frame, b"\0"))

    async def silence(self, secs: float) -> None:
        await self.send(b"\0" * self.frame * round(secs / FRAME_SECS))

    async def silence_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await self.send(b"\0" * self.frame)

    def bot_played_since(self, count: int) -> Callable[[], bool]:
        """Whether the bot played audible audio after the first ``count`` played chunks."""
        played = self.transport.played
        return lambda: any(first_audible(c.audio, c.sample_rate) is not None for c in played[count:])


async def live_call(
    deployment: Deployment,
    script: Callable[[LiveCaller, CallPipeline], Awaitable[None]],
    *,
    call: CallContext | None = None,
    bookkeeping: CallBookkeeping | None = None,
    on_built: Callable[[CallPipeline], Awaitable[None]] | None = None,
) -> CallRecord:
    """One call through ``run_measured_call`` (the served calls' path); ``script`` plays the caller, then hangs up."""
    transport = MemoryTransport()
    built: asyncio.Future[CallPipeline] = asyncio.get_running_loop().create_future()

    async def when_built(call_pipeline: CallPipeline) -> None:
        if on_built is not None:
            await on_built(call_pipeline)
        built.set_result(call_pipeline)

    async def caller() -> None:
        call_pipeline = await built
        await transport.ready.wait()
        await script(LiveCaller(transport), call_pipeline)
        await call_pipeline.hang_up()

    record, _ = await asyncio.gather(
        run_measured_call(
            ExperimentRouter(deployment), transport, call or CallContext(), bookkeeping or CallBookkeeping(), when_built
        ),
        caller(),
    )
    return record
