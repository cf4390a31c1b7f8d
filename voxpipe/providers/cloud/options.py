"""Options models and price helpers shared by network providers (part of the public provider SDK).

``CloudOptions`` (in ``voxpipe.providers.spec``) gives every network provider its key and its connect and
response timeouts; the models here add what a family of providers has in common, so a plugin's options
model declares only what is its own.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field, SecretStr

from voxpipe.providers.spec import CloudOptions, Prices

OPENAI_URL = "https://api.openai.com/v1"


class RetryOptions(CloudOptions):
    """Options of a provider whose SDK retries a failed request itself (request/response APIs)."""

    max_retries: int = Field(
        0,
        ge=0,
        le=5,
        description="Times a failed request (connection, 429, 5xx) is retried before it counts as failed; each "
        "retry adds its back-off to the turn, so keep 0 when the role has a fallback provider.",
    )


class ApiKeyOptions(CloudOptions):
    """Options of a provider that authenticates with one API key (required, unlike ``CloudOptions``'s)."""

    api_key: SecretStr = Field(description="API key; write it as ${ENV_VAR}, never inline.")


class OpenAIOptions(ApiKeyOptions, RetryOptions):
    """Options of the OpenAI HTTP providers (chat, transcription, speech) and OpenAI-compatible endpoints."""

    base_url: str = Field(OPENAI_URL, description="API base URL: OpenAI's, or an OpenAI-compatible endpoint.")


def timeouts(options: CloudOptions) -> tuple[float, float]:
    """``(connect, response)`` timeouts in seconds."""
    return options.connect_timeout_secs, options.response_timeout_secs


def token_prices(
    source: str,
    as_of: date,
    input_: float,
    cached: float,
    output: float,
    audio: tuple[float, float, float] | None = None,
) -> Prices:
    """USD per million tokens: text input, cached input and output, and ``audio`` input, cached and output."""
    audio_in, audio_cached, audio_out = audio or (None, None, None)
    return Prices(
        source=source,
        as_of=as_of,
        per_million_input_tokens=input_,
        per_million_cached_input_tokens=cached,
        per_million_output_tokens=output,
        per_million_audio_input_tokens=audio_in,
        per_million_cached_audio_input_tokens=audio_cached,
        per_million_audio_output_tokens=audio_out,
    )
