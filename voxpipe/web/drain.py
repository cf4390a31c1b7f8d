"""Graceful drain: a served process told to stop (SIGTERM) stops taking calls and lets live calls finish.

A deploy or a scale-in must not cut a caller off mid-sentence. On SIGTERM (``install_sigterm``) the process:

1. turns ``/readyz`` to 503 at once, so load balancers and Kubernetes stop sending it calls;
2. refuses every new WebSocket (media stream, ConversationRelay, browser page) with close code 1013 (try
   again later), and answers Twilio's voice webhook with TwiML from the deployment's ``drain:`` section:
   ``<Redirect>`` to another instance, or ``<Say>`` its message then hang up;
3. lets live calls run to their end, each for at most its deployment's ``drain.deadline_secs`` from the
   signal; a call still live then ends through the deployment's ``on_failure`` (``voxpipe.pipeline.drain``,
   which the serverless bridge's worker drains with too);
4. hands the signal back to the server (uvicorn), which then stops once the last call has ended.

The signal is taken from uvicorn for the drain and given back after it: uvicorn's own shutdown closes live
WebSockets at once (code 1012), which is exactly what must not happen to a call.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from voxpipe.config.models import Deployment
from voxpipe.pipeline.drain import Drain
from voxpipe.telephony import twiml

TRY_AGAIN_LATER = 1013  # WebSocket close code: the server is overloaded or stopping, come back later


def turn_away_twiml(deployment: Deployment, say: str) -> str:
    """What Twilio's voice webhook answers a new call this process will not take (draining, or overloaded): a
    redirect to ``drain.redirect_url`` (another instance's voice webhook), or ``say`` and a hang-up."""
    if deployment.drain.redirect_url:
        return twiml.response(twiml.Verb("Redirect", {"method": "POST"}, text=deployment.drain.redirect_url))
    return twiml.end_call(say)


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
