"""Whether the audio bridge's worker takes a new call, told to the Lambda that lets connections in.

The bridge's ``$connect`` (``worker.handler``) used to let every client in and queue its audio whether or not a
worker was there to run the call. With the worker stopped, crashed, cut off from the queue or past its load, a
Twilio caller heard silence until they hung up: dead air, the worst way a call can go. Now:

- The worker writes its status to the conversation table (``worker#<queue URL>``) when it starts, at the next
  load sample (every second) when its answer changes, and every ``HEARTBEAT_SECS`` regardless: whether it takes
  new calls and, if not, why. It refuses while its event loop is past ``limits.max_loop_load`` (measured as
  ``voxpipe serve`` measures its own, ``voxpipe.security.loop_load``), while it holds ``limits.concurrent_calls``
  calls, and once it is stopping. The row expires ``FRESH_SECS`` after it was written, so a worker that died, or
  can no longer reach the table, stops counting within that time.
- ``$connect`` reads the row (one consistent read, after the client's credentials are checked and before anything
  is recorded or queued) and refuses the connection with 503 when no fresh status is there or the status says
  no. A refused Twilio stream ends its ``<Connect>``: Twilio goes on with the verb after it, or requests the
  ``action`` URL, so the number's TwiML decides what such a caller hears (a ``<Say>`` and a ``<Dial>`` to a
  person, say). A browser page's socket fails to open.
- The worker checks again at each ``connect`` it takes from the queue, since the status it wrote can be a
  heartbeat old: a refused connection is closed at once (a Twilio stream ends its ``<Connect>`` the same way),
  and the refusal is logged with the limit's name.

The Lambda's half (``refusal``) imports nothing beyond the table; the worker's (``StatusBeacon``) runs in the
worker process only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from voxpipe.aws.conversations import ConversationTable, WorkerStatus

if TYPE_CHECKING:
    from voxpipe.config.models import LimitsConfig
    from voxpipe.security.limits import CallSlot, DeploymentLimits
    from voxpipe.security.loop_load import LoopLoad

logger = logging.getLogger(__name__)

HEARTBEAT_SECS = 5.0
FRESH_SECS = 15  # three heartbeats: a status not rewritten for this long is a worker that stopped
STOPPING = "the worker is stopping"


def refusal(status: WorkerStatus | None) -> str | None:
    """Why ``$connect`` refuses a new connection, given the worker's last status; ``None``: let it in."""
    if status is None:
        return "no bridge worker is serving calls (none has written its status lately)"
    if not status.accepting:
        return f"the bridge worker takes no new call: {status.refusal}"
    return None


class StatusBeacon:
    """The worker's half: decides whether it takes a new call, and keeps its status row in the table fresh."""

    def __init__(
        self,
        table: ConversationTable,
        queue_url: str,
        config: LimitsConfig,
        limits: DeploymentLimits,
        *,
        load: LoopLoad | None = None,
        heartbeat_secs: float = HEARTBEAT_SECS,
        fresh_secs: int = FRESH_SECS,
    ):
        """``config``: the deployment's ``limits:`` (its ``max_loop_load``); ``limits``: the call host's counts."""
        from voxpipe.security.loop_load import LoopLoad

        self.table, self.queue_url = table, queue_url
        self.max_loop_load = config.max_loop_load
        self.limits = limits
        self.load = load or LoopLoad()
        self.heartbeat_secs, self.fresh_secs = heartbeat_secs, fresh_secs
        self.published = asyncio.Event()  # set once the first status is in the table
        self.stopping = False  # draining or stopped: no new call, whatever the load
        self._failing = False

    def status(self) -> WorkerStatus:
        """What the worker would answer a new call now."""
        calls = self.limits.calls
        reason = ""
        if self.stopping:
            reason = STOPPING
        elif self.load.above(self.max_loop_load):
            reason = "max_loop_load exceeded"
        elif calls.in_use >= calls.limit:
            reason = "concurrent_calls exceeded"
        return WorkerStatus(accepting=not reason, refusal=reason, load=round(self.load.share, 3), calls=calls.in_use)

    async def admit(self) -> CallSlot:
        """A new call's slot (release it when the call ends), or ``LimitExceeded`` (the loop's load, or the
        deployment's counted limits)."""
        self.load.check(self.max_loop_load)
        return await self.limits.admit_call(None)  # the client was checked at $connect; no per-client rate here

    async def run(self) -> None:
        """Sample the loop and publish: now, whenever the answer changes, and every heartbeat (until cancelled)."""
        self.load.start()
        last: WorkerStatus | None = None
        written_at = float("-inf")
        try:
            while True:
                status = self.status()
                changed = last is None or (status.accepting, status.refusal) != (last.accepting, last.refusal)
                if changed and not status.accepting:
                    logger.warning(
                        "the bridge worker takes no new call: %s (load %.2f, %d calls)",
                        status.refusal,
                        status.load,
                        status.calls,
                    )
                elif changed and last is not None:
                    logger.info("the bridge worker takes new calls again")
                due = changed or time.monotonic() - written_at >= self.heartbeat_secs
                if due and await self._publish(status):
                    last, written_at = status, time.monotonic()
                    self.published.set()
                await asyncio.sleep(self.load.sample_secs)
        finally:
            self.load.stop()

    async def stop_taking_calls(self) -> None:
        """From now on no new call, and ``$connect`` is told at once (rather than after ``FRESH_SECS``)."""
        self.stopping = True
        await self._publish(self.status())

    async def _publish(self, status: WorkerStatus) -> bool:
        try:
            await asyncio.to_thread(self.table.publish_worker, self.queue_url, status, self.fresh_secs)
        except Exception as exc:  # the row goes stale and $connect refuses calls, which is right: say so once
            if not self._failing:
                logger.warning("the bridge worker's status is not written (new calls are refused): %r", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("the bridge worker's status is written again")
        self._failing = False
        return True
