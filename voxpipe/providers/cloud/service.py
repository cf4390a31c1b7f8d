"""``CloudService``: mixed in front of a pipecat service class, it gives it voxpipe's error handling.

``class AcmeTTS(CloudService, AcmeTTSService)`` takes ``response_timeout_secs`` (and passes every other
argument on) and then:

- classifies the exceptions of every SDK into pipecat's ``ErrorCategory`` (``errors.classify``): a cut
  stream or an SDK timeout is ``CONNECTIVITY``, a throttled AWS call ``RATE_LIMIT``; a fallback switches on it;
- owns a ``ResponseWatchdog`` (``self.watchdog``): the plugin calls ``self.watchdog.expect("audio")`` after a
  request and ``self.watchdog.received()`` when the vendor answers; an interruption, the end of the call
  and ``cleanup`` disarm it.

``OpenAIService`` is one on the shared OpenAI client; ``service_class`` joins a mixin and a pipecat class
for a plugin that needs nothing else.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from voxpipe.providers.cloud.errors import classify
from voxpipe.providers.cloud.watchdog import ResponseWatchdog

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from pipecat.frames.frames import Frame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.utils.errors import ErrorCategory

    _ServiceBase = FrameProcessor
else:
    _ServiceBase = object


class CloudService(_ServiceBase):
    """Mixed in before a pipecat service class: ``class DeepgramSTT(CloudService, DeepgramSTTService)``."""

    def __init__(self, *args: Any, response_timeout_secs: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchdog = ResponseWatchdog(self, response_timeout_secs)

    def _classify_error(self, exception: Exception) -> ErrorCategory | None:
        """pipecat reads only HTTP status codes; SDK exceptions without one are classified too (see errors)."""
        return classify(exception) or super()._classify_error(exception)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        from pipecat.frames.frames import CancelFrame, EndFrame, InterruptionFrame

        if isinstance(frame, InterruptionFrame | EndFrame | CancelFrame):
            self.watchdog.cancel()  # the request is moot: the caller spoke over it, or the call is over
        await super().process_frame(frame, direction)

    async def cleanup(self) -> None:
        self.watchdog.cancel()
        await super().cleanup()


class OpenAIService(CloudService):
    """A pipecat OpenAI service (LLM, STT, TTS) on the shared client of its options (``openai_client``).

    pipecat builds a client per service, so per call; ``client`` replaces it, and with it the connection pool.
    """

    def __init__(self, *args: Any, client: AsyncOpenAI, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client = client


@functools.cache
def service_class(mixin: type, base: type) -> type:
    """``mixin`` in front of the pipecat service class ``base``, for a plugin that needs nothing else."""
    return type(base.__name__, (mixin, base), {"__doc__": f"pipecat's {base.__name__} with {mixin.__name__}."})
