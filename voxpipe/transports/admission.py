"""The deployment's ``limits:`` at the door of every route: a refused request is answered, logged and counted.

The limiter (``voxpipe.security.limits``, held by the call host) only decides. Here the answer is given: an
HTTP request over a limit gets 429 with ``Retry-After``; a WebSocket is accepted and closed at once with
1013 ("try again later") and the limit's name as the reason, so a client can tell it from a refusal of its
credentials (1008). A socket that starts a new call (a browser page's) is also refused while the process's
event loop is past ``limits.max_loop_load`` (``voxpipe.security.loop_load``); a Twilio stream is not: its call
was let in at the webhook, and cutting it now would leave the caller in silence. Each refusal is counted in
``/metrics`` (``voxpipe_refused_total{limit=...}``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import HTTPException, WebSocket

from voxpipe.pipeline.host import CallHost
from voxpipe.security.limits import CallSlot, LimitExceeded
from voxpipe.security.loop_load import LoopLoad

T = TypeVar("T")
TRY_AGAIN_LATER = 1013


async def admit_socket(
    host: CallHost, socket: WebSocket, client: str | None, load: LoopLoad | None = None
) -> CallSlot | None:
    """The call's concurrency slot (release it when the call ends), or ``None`` once the accepted socket was
    closed with the reason. ``client`` is the peer's address for the per-client rate (``None``: counted at
    the signed webhook already); ``load``: the process's loop, for a socket that is the call's first door."""
    try:
        if load is not None:
            load.check(host.deployment.limits.max_loop_load)
        return await host.limits.admit_call(client)
    except LimitExceeded as refused:
        host.refused(refused)
        await socket.close(code=TRY_AGAIN_LATER, reason=str(refused))
        return None


async def admit_request(host: CallHost, take: Callable[[], Awaitable[T]]) -> T:
    """``await take()`` (a limiter's count), or ``HTTPException`` 429 with ``Retry-After``."""
    try:
        return await take()
    except LimitExceeded as refused:
        host.refused(refused)
        retry = str(max(1, math.ceil(refused.retry_after_secs)))
        raise HTTPException(status_code=429, detail=str(refused), headers={"Retry-After": retry}) from None
