"""Graceful drain: a served process told to stop (SIGTERM) stops taking calls and lets live calls finish.

A deploy or a scale-in must not cut a caller off mid-sentence. On SIGTERM (``install_sigterm``) the process:

1. turns ``/readyz`` to 503 at once, so load balancers and Kubernetes stop sending it calls;
2. refuses every new WebSocket (media stream, ConversationRelay, browser page) with close code 1013 (try
   again later), and answers Twilio's voice webhook with TwiML from the deployment's ``drain:`` section:
   ``<Redirect>`` to another instance, or ``<Say>`` its message then hang up;
3. lets live calls run to their end, each for at most its deployment's ``drain.deadline_secs`` from the
   signal; a call still live then ends through the deployment's ``on_failure`` (the caller is told, then
   hung up or transferred), by the same path as a provider that cannot go on, so its record is complete;
4. hands the signal back to the server (uvicorn), which then stops once the last call has ended.

The signal is taken from uvicorn for the drain and given back after it: uvicorn's own shutdown closes live
WebSockets at once (code 1012), which is exactly what must not happen to a call.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame
from pipecat.processors.frame_processor import FrameDirection
from starlette.types import ASGIApp, Receive, Scope, Send

from voxpipe.config.models import Deployment
from voxpipe.pipeline.host import CallHost, HostedCall
from voxpipe.telephony import twiml

TRY_AGAIN_LATER = 1013  # WebSocket close code: the server is overloaded or stopping, come back later
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

    def twiml(self, host: CallHost) -> str:
        """What Twilio's voice webhook answers while draining: a redirect to another instance, or a message."""
        return turn_away_twiml(host.deployment, host.deployment.drain.say)


def turn_away_twiml(deployment: Deployment, say: str) -> str:
    """What Twilio's voice webhook answers a new call this process will not take (draining, or overloaded): a
    redirect to ``drain.redirect_url`` (another instance's voice webhook), or ``say`` and a hang-up."""
    if deployment.drain.redirect_url:
        return twiml.response(twiml.Verb("Redirect", {"method": "POST"}, text=deployment.drain.redirect_url))
    return twiml.end_call(say)


async def _end_through_failure(call: HostedCall, deadline: float) -> None:
    """End a live call the way a call that cannot go on ends: ``on_failure`` tells the caller, then the end."""
    pipeline = call.pipeline
    logger.warning(f"call {call.call_id}: still live {deadline:g}s after the drain began; ending it (on_failure)")
    if pipeline is None:
        await call.close()
        return
    error = ErrorFrame(f"the server is shutting down (drain deadline of {deadline:g}s reached)", fatal=True)
    await pipeline.worker.queue_frame(error, FrameDirection.UPSTREAM)


class RefuseWhileDraining:
    """ASGI middleware: while draining, a new WebSocket is closed before it is accepted (1013)."""

    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.drain.draining:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "server draining"})
            return
        await self.app(scope, receive, send)


def install_sigterm(drain: Drain) -> None:
    """Make SIGTERM drain first, then reach the previous handler (the server's own shutdown).

    Only the main thread may set signal handlers: an app run in a test client's thread keeps the default.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous: Any = signal.getsignal(signal.SIGTERM)

    def hand_back() -> None:
        if callable(previous):
            previous(signal.SIGTERM, None)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if drain.draining:
            return
        loop.call_soon_threadsafe(_drain_then, drain, hand_back)

    signal.signal(signal.SIGTERM, on_sigterm)


def _drain_then(drain: Drain, then: Callable[[], None]) -> None:
    drain.begin()
    done = asyncio.ensure_future(drain.done.wait())
    done.add_done_callback(lambda _: then())
