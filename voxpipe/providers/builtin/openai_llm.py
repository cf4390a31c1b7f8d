"""llm `openai`: chat completions, streamed, with tools and token usage (cached tokens included).

Any OpenAI-compatible endpoint (Azure OpenAI's v1 API, vLLM, Groq, Together, ...) works through ``base_url``;
price such a model with the deployment's ``pricing`` section. The client is shared by every call of the
process, so a call's first turn reuses a warm connection.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers import Provider, ServiceRequest, hookimpl
from voxpipe.providers.cloud import (
    OpenAIOptions,
    OpenAIService,
    openai_service_args,
    service_class,
    token_prices,
)

PRICES_URL = "https://openai.com/api/pricing/"
AS_OF = date(2025, 10, 1)


class OpenAILLMOptions(OpenAIOptions):
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature (model default if unset).")
    max_completion_tokens: int | None = Field(None, ge=1, description="Most tokens (count) of one reply.")


def build(request: ServiceRequest[OpenAILLMOptions]) -> Any:
    from pipecat.services.openai.llm import OpenAILLMService

    options = request.options
    sampling = options.model_dump(include={"temperature", "max_completion_tokens"}, exclude_none=True)
    return service_class(OpenAIService, OpenAILLMService)(
        **openai_service_args(options),
        settings=OpenAILLMService.Settings(
            model=request.model, system_instruction=request.agent.instructions, **sampling
        ),
    )


_prices = functools.partial(token_prices, PRICES_URL, AS_OF)


PROVIDER = Provider(
    name="openai",
    kind="llm",
    options=OpenAILLMOptions,
    build=build,
    default_model="gpt-4.1-mini",
    prices={
        "gpt-4.1": _prices(2.00, 0.50, 8.00),
        "gpt-4.1-mini": _prices(0.40, 0.10, 1.60),
        "gpt-4.1-nano": _prices(0.10, 0.025, 0.40),
        "gpt-4o": _prices(2.50, 1.25, 10.00),
        "gpt-4o-mini": _prices(0.15, 0.075, 0.60),
        "gpt-5": _prices(1.25, 0.125, 10.00),
        "gpt-5-mini": _prices(0.25, 0.025, 2.00),
        "gpt-5-nano": _prices(0.05, 0.005, 0.40),
    },
    description="OpenAI chat completions (or any OpenAI-compatible base_url): streaming, tools, cached-token usage.",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
