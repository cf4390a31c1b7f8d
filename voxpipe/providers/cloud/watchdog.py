"""A response watchdog any provider can use to honour ``response_timeout_secs`` (public provider SDK).

A streaming vendor that stops answering leaves a call in dead air: nothing fails, nothing arrives. A
service arms the watchdog when it has asked for something (``expect``), disarms it when the answer arrives
(``received``), and if ``timeout_secs`` pass in between, the watchdog pushes a ``CONNECTIVITY`` error from
the service, which is what moves a fallback chain on (or ends the call when there is no backup).

``CloudService`` owns one (``self.watchdog``); a plugin whose service does not use ``CloudService`` makes
its own with ``ResponseWatchdog(self, options.response_timeout_secs)`` and calls ``cancel()`` in
``cleanup``. The watchdog must be armed and disarmed on the service's event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat.processors.frame_processor import FrameProcessor


class ResponseWatchdog:
    """Reports, from ``service``, a request that got no answer within ``timeout_secs``."""

    def __init__(self, service: FrameProcessor, timeout_secs: float) -> None:
        self.service = service
        self.timeout_secs = timeout_secs
        self._timer: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def expect(self, what: str) -> None:
        """Arm: the vendor must answer ``what`` within ``timeout_secs`` (no-op if already armed)."""
        if self._timer is None:
            self.waiting_for = what
            self._timer = asyncio.get_running_loop().call_later(self.timeout_secs, self._expired, what)

    def received(self) -> None:
        """Disarm: the vendor answered (or the request no longer matters)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waiting_for = None

    cancel = received

    def _expired(self, what: str) -> None:
        self._timer, self.waiting_for = None, None
        self.service.create_task(self._report(what), name="response_watchdog")

    async def _report(self, what: str) -> None:
        from pipecat.utils.errors import ErrorCategory

        await self.service.push_error(
            f"no {what} within {self.timeout_secs:g} s (response_timeout_secs)", category=ErrorCategory.CONNECTIVITY
        )
