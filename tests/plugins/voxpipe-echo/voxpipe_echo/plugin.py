"""llm `echo`: answers each caller turn with what it heard, streamed word by word like a network model."""

from datetime import date
from typing import Any

from pydantic import Field

from voxpipe.providers import CloudOptions, Prices, Provider, ServiceRequest, hookimpl


class EchoOptions(CloudOptions):
    prefix: str = Field("You said:", description="Words put before the caller's own.")
    latency_secs: float = Field(0.05, ge=0, description="Seconds before the first token (the model 'thinking').")


def build(request: ServiceRequest[EchoOptions]) -> Any:
    from voxpipe_echo.service import EchoLLMService  # pipecat is imported here, never at module level

    return EchoLLMService(
        model=request.model,
        instructions=request.agent.instructions,
        options=request.options,
        response_timeout_secs=request.options.response_timeout_secs,
    )


PROVIDER = Provider(
    name="echo",
    kind="llm",
    options=EchoOptions,
    build=build,
    default_model="echo-1",
    prices={
        "*": Prices(
            source="https://echo.example/pricing",
            as_of=date(2026, 11, 1),
            per_million_input_tokens=0.10,
            per_million_output_tokens=0.40,
        )
    },
    description="Repeats what the caller said (an example plugin).",
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
