"""Graceful drain of a process's calls: live calls run to their end, up to each deployment's deadline.

A deploy or a scale-in must not cut a caller off mid-sentence. Whatever stops taking new calls (``voxpipe serve``'s
app, ``voxpipe.web.drain``; the serverless bridge's worker, ``voxpipe.serverless.worker``), the calls already in
are drained the same way: each runs for at most its deployment's ``drain.deadline_secs`` from the start of the
drain, and a call still live then ends through the deployment's ``on_failure`` (the caller is told, then hung up
or transferred), by the same path as a provider that cannot go on, so its record is complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from loguru import logger
from pipecat.frames.frames import ErrorFrame
from pipecat.processors.frame_processor import FrameDirection

from voxpipe.pipeline.host import CallHost, HostedCall

POLL_SECS = 0.1


class Drain:
    """The drain of one process's call hosts; ``begin()`` starts it once, ``done`` is set when it is over."""

    def __init__(self, hosts: Sequence[CallHost]):
        self.hosts = list(hosts)
        self.draining = False
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        live = sum(len(host.calls) for host in self.hosts)
        logger.info(f"draining: no new calls; {live} live call(s) may run to their end")
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ended_early: set[HostedCall] = set()
        while live := [(host, call) for host in self.hosts for call in host.calls]:
            for host, call in live:
                if call not in ended_early and loop.time() - started >= host.deployment.drain.deadline_secs:
                    ended_early.add(call)
                    await _end_through_failure(call, host.deployment.drain.deadline_secs)
            await asyncio.sleep(POLL_SECS)
        logger.info("drained: no live call left")
        self.done.set()


async def _end_through_failure(call: HostedCall, deadline: float) -> None:
    """End a live call the way a call that cannot go on ends: ``on_failure`` tells the caller, then the end."""
    pipeline = call.pipeline
    logger.warning(f"call {call.call_id}: still live {deadline:g}s after the drain began; ending it (on_failure)")
    if pipeline is None:
        await call.close()
        return
    error = ErrorFrame(f"the server is shutting down (drain deadline of {deadline:g}s reached)", fatal=True)
    await pipeline.worker.queue_frame(error, FrameDirection.UPSTREAM)
