"""llm `bedrock`: Amazon Bedrock ``converse_stream`` (Amazon Nova Micro / Lite / Pro and other Converse models).

Region, endpoint, inference config (maxTokens, temperature, topP) and the deployment's tools map onto
pipecat's service. Requests are signed with the AWS credentials given in the options, or else with the
default credential chain (environment, profile, IAM role).

pipecat's service opens a new aiobotocore client for every request: a new connection, and a TLS handshake
on every turn. Here one client per process (and configuration) serves every turn of every call, and the
endpoint is passed to it directly rather than through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``. pipecat also
swallows a read timeout (the turn just ends silently); it is reported as a ``CONNECTIVITY`` error. And a
conversation the agent opened with its greeting gets a user turn in front, as Converse requires.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

from pydantic import Field, SecretStr, field_validator

from voxpipe.providers import Prices, Provider, ServiceRequest, hookimpl
from voxpipe.providers.cloud import RetryOptions, SharedClientSession, timeouts, token_prices

#: Put before a conversation the agent opened (its greeting): Converse requires the user to speak first.
CALL_CONNECTED = {"role": "user", "content": [{"text": "[The caller is on the line.]"}]}


class BedrockOptions(RetryOptions):
    api_key: SecretStr | None = Field(None, description="Not used: Bedrock signs requests with AWS credentials.")
    region: str = Field("us-east-1", description="AWS region of the bedrock-runtime endpoint.")
    endpoint_url: str | None = Field(None, description="Endpoint override (a VPC endpoint, a test fake).")
    aws_access_key_id: SecretStr | None = Field(None, description="Write ${AWS_ACCESS_KEY_ID}; unset: default chain.")
    aws_secret_access_key: SecretStr | None = Field(None, description="Write ${AWS_SECRET_ACCESS_KEY}.")
    aws_session_token: SecretStr | None = Field(None, description="Write ${AWS_SESSION_TOKEN} (temporary credentials).")
    max_tokens: int | None = Field(None, ge=1, description="inferenceConfig.maxTokens: most tokens of one reply.")
    temperature: float | None = Field(None, ge=0, le=1, description="inferenceConfig.temperature.")
    top_p: float | None = Field(None, ge=0, le=1, description="inferenceConfig.topP.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_api_key(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "bedrock signs requests with AWS credentials: set aws_access_key_id and aws_secret_access_key"
            )
        return None


@functools.cache
def _service_class() -> type:
    from pipecat.adapters.llm.services.bedrock_adapter import AWSBedrockLLMInvocationParams
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.services.aws.llm import AWSBedrockLLMService
    from pipecat.utils.errors import ErrorCategory

    from voxpipe.providers.cloud import CloudService

    class BedrockLLM(CloudService, AWSBedrockLLMService):
        """pipecat's Bedrock LLM on one shared client per process, reporting read timeouts."""

        def __init__(self, *, endpoint_url: str | None, client_key: tuple[Any, ...], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._aws_params["endpoint_url"] = endpoint_url
            self._aws_session = SharedClientSession(self._aws_session, client_key)
            self.add_event_handler("on_completion_timeout", self._timed_out)

        async def _get_llm_invocation_params(self, context: LLMContext) -> AWSBedrockLLMInvocationParams:
            """Converse requires the user to speak first; on a call the agent may have (its greeting)."""
            params = await super()._get_llm_invocation_params(context)
            if params["messages"] and params["messages"][0]["role"] == "assistant":
                params["messages"].insert(0, CALL_CONNECTED)
            return params

        async def _timed_out(self, _: Any) -> None:
            message = f"no reply within {self.watchdog.timeout_secs:g} s (response_timeout_secs)"
            await self.push_error(message, category=ErrorCategory.CONNECTIVITY)

    return BedrockLLM


def build(request: ServiceRequest[BedrockOptions]) -> Any:
    from botocore.config import Config
    from pipecat.services.aws.llm import AWSBedrockLLMService

    options = request.options
    endpoint = options.endpoint_url or None  # ${VAR:-} leaves an empty string
    secrets = [s.get_secret_value() if s else None for s in (options.aws_access_key_id, options.aws_secret_access_key)]
    token = options.aws_session_token.get_secret_value() if options.aws_session_token else None
    connect, read = timeouts(options)
    attempts = 1 + options.max_retries
    inference = options.model_dump(include={"max_tokens", "temperature", "top_p"}, exclude_none=True)
    return _service_class()(
        aws_access_key=secrets[0],
        aws_secret_key=secrets[1],
        aws_session_token=token,
        aws_region=options.region,
        endpoint_url=endpoint,
        client_config=Config(connect_timeout=connect, read_timeout=read, retries={"total_max_attempts": attempts}),
        client_key=("bedrock", options.region, endpoint, *secrets, token, connect, read, attempts),
        response_timeout_secs=read,
        settings=AWSBedrockLLMService.Settings(
            model=request.model, system_instruction=request.agent.instructions, **inference
        ),
    )


def _nova(input_: float, output: float) -> Prices:
    """Nova list prices; cached input reads cost 75% less."""
    return token_prices("https://aws.amazon.com/bedrock/pricing/", date(2025, 10, 1), input_, input_ / 4, output)


NOVA = {"micro": _nova(0.035, 0.14), "lite": _nova(0.06, 0.24), "pro": _nova(0.80, 3.20)}

PROVIDER = Provider(
    name="bedrock",
    kind="llm",
    options=BedrockOptions,
    build=build,
    default_model="amazon.nova-lite-v1:0",
    prices={
        f"{scope}amazon.nova-{size}-v1:0": prices
        for size, prices in NOVA.items()
        for scope in ("", "us.", "eu.", "apac.")  # in-region model ids and cross-region inference profiles
    },
    description="Amazon Bedrock converse_stream (Nova Micro/Lite/Pro, ...): tools, one shared client per process.",
    prompt_tokens_include_cached=False,
)


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [PROVIDER]
