"""Try an operation again after fixed waits, then give up: how a call's end treats a store that fails.

A call that ends writes its conversation (``sessions.base.SessionRecorder.flush``) and its record
(``records.spool.RecordKeeper.keep``). Either store may be restarting; a few seconds of retries ride that out,
and then each gives up its own way (the record is spooled, the conversation's loss is logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


async def succeeds_within(
    attempt: Callable[[], Awaitable[bool]],
    delays_secs: Sequence[float],
    before_retry: Callable[[float], None] = lambda delay: None,
) -> bool:
    """Await ``attempt()`` until it returns true, waiting each of ``delays_secs`` in turn between tries (after
    calling ``before_retry`` with the wait); ``False`` if the last try failed too."""
    for delay in delays_secs:
        if await attempt():
            return True
        before_retry(delay)
        await asyncio.sleep(delay)
    return await attempt()
