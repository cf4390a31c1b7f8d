"""The plugin contract: what a provider or tool kind declares, and the pluggy hooks that deliver them.

A plugin module exposes functions marked with ``hookimpl`` and is named in the ``voxpipe`` entry-point
group of its distribution. voxpipe's own providers are plugins of exactly this kind.

Plugin modules must stay cheap to import: ``voxpipe validate`` and ``voxpipe providers`` load every
plugin, so pipecat and vendor SDKs are imported inside ``build``, never at module level.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import pluggy
from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    from voxpipe.config.models import AgentConfig, VADSettings

PROJECT = "voxpipe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Kind = Literal["stt", "llm", "tts", "realtime", "vad"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "tts", "realtime", "vad")


class ProviderOptions(BaseModel):
    """Base of every provider's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class CloudOptions(ProviderOptions):
    """Options every network provider shares. Secrets are ``SecretStr`` and must come from ``${VAR}``."""

    api_key: SecretStr | None = Field(None, description="API key; write it as ${ENV_VAR}, never inline.")
    connect_timeout_secs: float = Field(10.0, gt=0, description="Seconds to open the connection.")
    response_timeout_secs: float = Field(
        15.0, gt=0, description="Seconds to wait for the first result of a request before failing over."
    )


class Prices(BaseModel):
    """List prices of one model, in US dollars, with where and when they were read.

    Only the units a provider bills in are set; the others stay ``None``.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the price was read (URL or document name).")
    as_of: date = Field(description="Date the price was read.")
    per_audio_minute: float | None = Field(None, ge=0, description="USD per minute of audio processed.")
    per_million_input_tokens: float | None = Field(None, ge=0, description="USD per 1M (text) input tokens.")
    per_million_cached_input_tokens: float | None = Field(None, ge=0, description="USD per 1M cached input tokens.")
    per_million_output_tokens: float | None = Field(None, ge=0, description="USD per 1M (text) output tokens.")
    per_million_audio_input_tokens: float | None = Field(None, ge=0, description="USD per 1M audio input tokens.")
    per_million_cached_audio_input_tokens: float | None = Field(
        None, ge=0, description="USD per 1M cached audio input tokens."
    )
    per_million_audio_output_tokens: float | None = Field(None, ge=0, description="USD per 1M audio output tokens.")
    per_thousand_characters: float | None = Field(None, ge=0, description="USD per 1K characters synthesized.")


FREE = Prices(source="runs locally", as_of=date(2026, 11, 1))

OptionsT = TypeVar("OptionsT", bound=ProviderOptions)


@dataclass(frozen=True)
class AudioFormat:
    """The audio a service receives and should produce for one call.

    ``encoding`` is ``"mulaw"`` on telephone calls (8 kHz G.711): providers that speak mu-law natively
    ask for it so nothing is transcoded.
    """

    sample_rate_in: int = 16000
    sample_rate_out: int = 24000
    encoding: Literal["pcm16", "mulaw"] = "pcm16"


@dataclass(frozen=True)
class ServiceRequest(Generic[OptionsT]):
    """Everything a provider's ``build`` gets to make the pipecat service of one call."""

    call_id: str
    model: str | None
    options: OptionsT
    agent: AgentConfig
    vad: VADSettings
    audio: AudioFormat = field(default_factory=AudioFormat)
    #: Whether the caller's speech may cut the bot off (``interruptions.enabled``); a realtime provider whose
    #: server VAD cancels replies on speech turns that off when ``False``.
    barge_in: bool = True


@dataclass(frozen=True)
class Provider(Generic[OptionsT]):
    """A provider plugin: a name, a role, its options, a factory, and its list prices.

    ``build`` returns a pipecat ``FrameProcessor`` (for ``vad``: a pipecat ``VADAnalyzer``).
    ``prices`` maps model name to prices; the key ``"*"`` covers any model not listed.
    ``prompt_tokens_include_cached`` says how the service reports LLM usage: OpenAI-style services count
    cached tokens inside ``prompt_tokens`` (gross); Bedrock and Anthropic report them beside it (net).
    """

    name: str
    kind: Kind
    options: type[OptionsT]
    build: Callable[[ServiceRequest[OptionsT]], Any]
    prices: Mapping[str, Prices] = field(default_factory=dict)
    default_model: str | None = None
    description: str = ""
    prompt_tokens_include_cached: bool = True

    def prices_for(self, model: str | None) -> Prices | None:
        """The prices of ``model``, falling back to the ``"*"`` entry."""
        return self.prices.get(model or "", self.prices.get("*"))


ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class ToolKind(Generic[OptionsT]):
    """A kind of tool (``http``, ``python``, ...): validates its options and makes the handler.

    ``build(name, options)`` returns an async callable taking the model's arguments and returning a
    JSON-serialisable result. ``effect`` names a call-level effect (``end_call``, ``transfer``) that the
    transport carries out after the tool ran; plain tools leave it ``None``.
    """

    name: str
    options: type[OptionsT]
    build: Callable[[str, OptionsT], ToolHandler]
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    effect: str | None = None


class Hooks:
    """Hook specifications: a plugin implements any of them with ``@hookimpl``."""

    @hookspec
    def voxpipe_providers(self) -> Sequence[Provider]:  # type: ignore[empty-body]
        """Return the providers this plugin adds."""

    @hookspec
    def voxpipe_tool_kinds(self) -> Sequence[ToolKind]:  # type: ignore[empty-body]
        """Return the tool kinds this plugin adds."""
