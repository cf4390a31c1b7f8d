"""The public provider SDK: what a network provider plugin needs besides pipecat.

voxpipe's own cloud plugins (``voxpipe/providers/builtin``) are written on exactly this surface, as a third
party would write them. A plugin maps its options onto a pipecat service, fixing it where pipecat falls
short, and declares its prices; what network services need alike lives here:

- options: ``CloudOptions`` (key, connect and response timeouts), ``ApiKeyOptions`` (a required key),
  ``RetryOptions`` (SDK retries, for request/response APIs), ``OpenAIOptions``; ``token_prices`` for a price
  table and ``timeouts`` for the ``(connect, response)`` pair;
- shared clients: ``shared`` / ``shared_async`` keep one SDK client per event loop and configuration, so a
  call's requests reuse warm connections; ``close_shared`` closes them; ``openai_client`` and
  ``openai_service_args``; ``SharedClientSession`` for pipecat's AWS services;
- errors: ``classify`` maps SDK exceptions to pipecat's ``ErrorCategory``, which fallbacks switch on;
- ``ResponseWatchdog``: honours ``response_timeout_secs`` in any service; ``CloudService``, mixed in front
  of a pipecat service class, classifies its errors and owns one (``self.watchdog``); ``OpenAIService`` is one
  on the shared OpenAI client; ``service_class`` joins a mixin and a pipecat class;
- ``realtime_session_class``: pipecat's Realtime service with timeouts, reconnects, loud failures, G.711
  and billed input transcription;
- ``decode_mulaw``: a vendor's G.711 audio (asked for on telephone calls) as pipecat's PCM16 frames;
- ``llm_settings(model, instructions)``: the ``LLMSettings`` an LLM service is constructed with;
  ``agent_tools(agent)``: the deployment's tools, for a service that declares them itself (realtime).

Importing this package is cheap (plugins import it at module level): pipecat and the SDKs are imported by
the functions that use them. Where a built-in overrides a private pipecat method, the override is pinned
to the pipecat source it was checked against (``voxpipe.providers.cloud.pins``).
"""

from voxpipe.providers.cloud.audio import PHONE_RATE, decode_mulaw
from voxpipe.providers.cloud.clients import (
    SharedClientSession,
    close_shared,
    openai_client,
    openai_service_args,
    shared,
    shared_async,
)
from voxpipe.providers.cloud.errors import classify, realtime_error_category
from voxpipe.providers.cloud.options import (
    OPENAI_URL,
    ApiKeyOptions,
    OpenAIOptions,
    RetryOptions,
    timeouts,
    token_prices,
)
from voxpipe.providers.cloud.realtime import realtime_session_class
from voxpipe.providers.cloud.service import CloudService, OpenAIService, service_class
from voxpipe.providers.cloud.settings import agent_tools, llm_settings
from voxpipe.providers.cloud.watchdog import ResponseWatchdog
from voxpipe.providers.spec import CloudOptions

__all__ = [
    "OPENAI_URL",
    "PHONE_RATE",
    "ApiKeyOptions",
    "CloudOptions",
    "CloudService",
    "OpenAIOptions",
    "OpenAIService",
    "ResponseWatchdog",
    "RetryOptions",
    "SharedClientSession",
    "agent_tools",
    "classify",
    "close_shared",
    "decode_mulaw",
    "llm_settings",
    "openai_client",
    "openai_service_args",
    "realtime_error_category",
    "realtime_session_class",
    "service_class",
    "shared",
    "shared_async",
    "timeouts",
    "token_prices",
]
