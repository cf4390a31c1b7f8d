"""The validated shape of a deployment file.

A ``Deployment`` is plain typed data. Provider ``options`` stay dicts here and are validated against the
provider's own options model by :mod:`voxpipe.config.loader`, which knows the registry.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from voxpipe.config.call_flow import FillerConfig, SilenceConfig
from voxpipe.config.sections import RecordingConfig, RedactConfig
from voxpipe.config.strict import Strict
from voxpipe.config.turns import (  # noqa: F401 — re-exported: the turn sections are part of the deployment model
    DEFAULT_BACKCHANNELS,
    InterruptionsConfig,
    SilenceTurn,
    SmartTurn,
    TurnConfig,
    TurnTiming,
)
from voxpipe.providers.spec import Prices
from voxpipe.security.browser_access import origin_of

VADPreset = Literal["quiet_office", "noisy_call_center", "phone_line"]


class VADSettings(Strict):
    """Resolved voice-activity detection parameters (pipecat ``VADParams`` units)."""

    confidence: float = Field(ge=0, le=1, description="Minimum speech probability of a 32 ms window.")
    start_secs: float = Field(ge=0, description="Seconds of speech before the user counts as speaking.")
    stop_secs: float = Field(ge=0, description="Seconds of silence before the user counts as stopped.")
    min_volume: float = Field(ge=0, le=1, description="Minimum smoothed volume (0-1) counted as speech.")


VAD_PRESETS: dict[str | None, VADSettings] = {
    # pipecat's defaults: tuned for a headset in a quiet room.
    None: VADSettings(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6),
    "quiet_office": VADSettings(confidence=0.6, start_secs=0.2, stop_secs=0.2, min_volume=0.5),
    # Background talk: demand more confidence and longer speech before cutting the bot off.
    "noisy_call_center": VADSettings(confidence=0.85, start_secs=0.35, stop_secs=0.3, min_volume=0.7),
    # 8 kHz G.711 is quieter and band-limited: lower volume floor, slightly longer stop.
    "phone_line": VADSettings(confidence=0.65, start_secs=0.2, stop_secs=0.3, min_volume=0.4),
}


class VADConfig(Strict):
    """``vad:``: a preset sets every field; fields written explicitly override it."""

    provider: str = "silero"
    preset: VADPreset | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    start_secs: float | None = Field(None, ge=0)
    stop_secs: float | None = Field(None, ge=0)
    min_volume: float | None = Field(None, ge=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved(self) -> VADSettings:
        explicit = self.model_dump(include=set(VADSettings.model_fields), exclude_none=True)
        return VAD_PRESETS[self.preset].model_copy(update=explicit)


class ServiceConfig(Strict):
    """One provider for one role: ``{provider, model, options}``."""

    provider: str
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ToolConfig(Strict):
    """A function the agent may call. ``kind`` picks the tool-kind plugin (http, python, end_call, ...)."""

    kind: str
    name: str | None = Field(None, description="Function name the model sees; defaults to the kind.")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")
    timeout_secs: float = Field(10.0, gt=0)
    sensitive: bool = Field(
        False,
        description="The arguments (a PIN, a card) reach the tool but are never stored: masked in records, "
        "history, logs and traces, and the caller's audio is silenced in the recording while they were said.",
    )
    filler: str | None = Field(
        None, description="Spoken if the tool has not answered after filler_after_secs (default: the deployment's)."
    )
    filler_after_secs: float | None = Field(None, gt=0, description="Default: the deployment's fillers.after_secs.")
    options: dict[str, Any] = Field(default_factory=dict)
    client_callable: bool = Field(
        False,
        description="A browser page may run this tool through the tools endpoint (WebRTC realtime). Off by "
        "default: whoever holds a page's token can script it, so only tools safe for anyone to call are marked.",
    )

    @property
    def function_name(self) -> str:
        return self.name or self.kind


class AgentConfig(Strict):
    """What the agent is: its instructions, what it says first, and the tools it may call."""

    instructions: str
    greeting: str | None = None
    tools: list[ToolConfig] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, tools: list[ToolConfig]) -> list[ToolConfig]:
        names = [t.function_name for t in tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        return tools


class TwilioConfig(Strict):
    """Twilio credentials and Media Streams settings. Secrets come from ``${VAR}``."""

    auth_token: SecretStr | None = Field(None, description="Validates X-Twilio-Signature; write ${TWILIO_AUTH_TOKEN}.")
    account_sid: str | None = Field(None, description="With auth_token, lets voxpipe hang up through the REST API.")
    validate_signatures: bool = Field(
        True, description="Reject unsigned webhooks and WebSockets (403). Turning it off is logged loudly."
    )
    stream_parameters: dict[str, str] = Field(
        default_factory=dict, description="<Parameter>s added to <Stream>, seen in start.customParameters."
    )
    connect: Literal["stream", "conversation_relay"] = Field(
        "stream",
        description="What the voice webhook (POST /{name}/twiml) connects a call to: a Media Stream (voxpipe runs "
        "STT and TTS) or ConversationRelay (Twilio runs them; only the llm role is used).",
    )


class ConversationRelayConfig(Strict):
    """Attributes of the ``<ConversationRelay>`` noun (Twilio does STT and TTS; voxpipe streams text)."""

    language: str = "en-US"
    tts_provider: str | None = Field(None, description="ttsProvider, e.g. ElevenLabs, Google, Amazon.")
    voice: str | None = None
    transcription_provider: str | None = Field(None, description="transcriptionProvider, e.g. Deepgram, Google.")
    interruptible: bool = True
    dtmf_detection: bool = True


class BrowserConfig(Strict):
    """Who may use the browser page's routes: pages of these origins, with a signed session token."""

    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Page origins (scheme://host[:port]) that may get a session token; public_url's always may.",
    )
    session_token_secs: int = Field(
        600, ge=10, le=3600, description="How long a page's session token opens calls (a reload within it resumes)."
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if "*" in origin or origin_of(origin) != origin.lower().rstrip("/"):
                raise ValueError(
                    f"{origin!r} is not an origin: allowed values are http(s)://host[:port], with no path, "
                    "query or wildcard (e.g. https://app.example.com)"
                )
        return [origin.lower().rstrip("/") for origin in origins]


class TransportConfig(Strict):
    """How callers reach the deployment when served (``voxpipe serve``)."""

    public_url: str | None = Field(
        None,
        pattern=r"^https://",
        description="Public https base URL of the server; TwiML URLs and Twilio signatures are built from it.",
    )
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    conversation_relay: ConversationRelayConfig = Field(default_factory=ConversationRelayConfig)
    browser: BrowserConfig = Field(default_factory=BrowserConfig)


DEFAULT_FAILURE_SAY = (
    "I'm sorry, we're having technical difficulties and can't continue this call right now. Please call back later."
)


class TransferTarget(Strict):
    """Where a failed call is handed over: a phone number or SIP address Twilio can dial."""

    to: str = Field(min_length=1, description="E.164 number (+15550100) or sip: address.")


class TransferAction(Strict):
    transfer: TransferTarget


def _failure_action(value: Any) -> str:
    """``then:`` is the word ``hangup`` or a ``transfer:`` mapping; anything else is named in the error."""
    return "transfer" if isinstance(value, dict | TransferAction) else str(value)


FailureAction = Annotated[
    Annotated[Literal["hangup"], Tag("hangup")] | Annotated[TransferAction, Tag("transfer")],
    Discriminator(_failure_action),
]


class OnFailureConfig(Strict):
    """``on_failure:``: how a call ends when a provider cannot go on and no backup is left.

    The transport speaks ``say`` with a voice of its own where it has one (Twilio's ``<Say>``), so the caller
    hears it even when the deployment's TTS is what failed; ``then`` hangs up or transfers to a human.
    """

    say: str = Field(DEFAULT_FAILURE_SAY, min_length=1, description="What the caller hears.")
    then: FailureAction = Field(
        "hangup", description="hangup, or transfer: {to: NUMBER} to hand the caller to a human."
    )

    @property
    def transfer_to(self) -> str | None:
        return self.then.transfer.to if isinstance(self.then, TransferAction) else None


class DrainConfig(Strict):
    """``drain:``: what a served process does when told to stop (SIGTERM: a deploy, a scale-in).

    It stops taking calls at once (``/readyz`` 503) and lets live calls run to their end for up to
    ``deadline_secs``; calls still live then end through ``on_failure``. A Twilio call that reaches the
    stopping process is redirected to ``redirect_url`` (another instance's voice webhook) or told ``say``.
    Give the orchestrator's grace period more than ``deadline_secs`` (docs/deploy.md).
    """

    deadline_secs: float = Field(600.0, gt=0, description="Seconds live calls may go on after SIGTERM.")
    redirect_url: str | None = Field(
        None, pattern=r"^https://", description="Voice webhook a new Twilio call is redirected to while draining."
    )
    say: str = Field(
        "This line is restarting. Please call again in a minute.",
        min_length=1,
        description="What a new Twilio call hears while draining when there is no redirect_url.",
    )


class SessionsConfig(Strict):
    """Where conversations are kept, keyed by call id, so a reconnecting call resumes its context."""

    store: Literal["memory", "sqlite", "redis", "dynamodb"] = "sqlite"
    path: str = Field("voxpipe-sessions.db", description="SQLite file (store: sqlite).")
    url: str | None = Field(None, description="Redis URL (store: redis).")
    table: str | None = Field(None, description="DynamoDB table (store: dynamodb).")
    ttl_secs: int = Field(86400, gt=0, description="Seconds a finished conversation is kept.")
    max_history_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest stored conversation (UTF-8 JSON bytes); beyond it new turns are not stored and an error "
        "is logged (memory, sqlite, redis). History is never shortened to fit.",
    )
    max_sessions: int = Field(
        10_000, gt=0, description="Sessions the memory store keeps; the least recently written is evicted first."
    )


class LimitsConfig(Strict):
    """``limits:``: what one deployment accepts before it answers 429 or closes a WebSocket with the reason.

    The routes enforce them with ``voxpipe.security.limits``; refusals are counted in ``/metrics``.
    """

    concurrent_calls: int = Field(50, gt=0, description="Calls in progress at once, all transports together.")
    calls_per_minute_per_client: int = Field(
        10,
        gt=0,
        description="New calls per client address per sliding minute (the peer address: a forwarded-for "
        "header is only trusted from the deployment's own proxy).",
    )
    minted_secrets_per_minute: int = Field(
        30, gt=0, description="OpenAI Realtime client secrets minted per sliding minute (each one can spend money)."
    )
    max_loop_load: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of the serving process's time its event loop may be busy (mean of the last 5 s) "
        "before new calls are turned away: Twilio's webhook redirects to drain.redirect_url or says busy_say, "
        "a browser call's socket is closed with 1013, and /readyz answers 503. 1: never.",
    )
    busy_say: str = Field(
        "All our lines are busy right now. Please call again in a few minutes.",
        min_length=1,
        description="What a new Twilio call hears when max_loop_load turns it away and there is no drain.redirect_url.",
    )


class RecordsConfig(Strict):
    """Where this deployment's call records go (``voxpipe calls`` and ``report`` read them)."""

    store: Literal["sqlite", "postgres"] = "sqlite"
    path: str | None = Field(None, description="SQLite file (store: sqlite); else $VOXPIPE_RECORDS.")
    url: SecretStr | None = Field(None, description="postgresql:// URL (store: postgres), from the environment.")

    @model_validator(mode="after")
    def _url_for_postgres(self) -> RecordsConfig:
        url = self.url.get_secret_value() if self.url else ""
        if self.store == "postgres" and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("store: postgres needs url: a postgresql:// URL, e.g. ${DATABASE_URL}")
        if self.store == "sqlite" and self.url is not None:
            raise ValueError("url is for store: postgres; store: sqlite takes path")
        return self

    def target(self) -> str | None:
        """What ``RecordStore`` opens: the URL, the SQLite path, or ``None`` for the default."""
        return self.url.get_secret_value() if self.store == "postgres" and self.url else self.path


class PriceOverride(Prices):
    """A deployment's own price for a provider or ``provider/model`` (negotiated rates, new models)."""

    source: str = "deployment pricing section"
    as_of: date = Field(default_factory=date.today)


class Variant(Strict):
    """One arm of an experiment: its share of callers and the sections it overrides."""

    weight: float = Field(gt=0, description="Relative share of callers (weights need not sum to 100).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Sections replaced or deep-merged for this arm, e.g. {llm: {...}}."
    )


class ExperimentConfig(Strict):
    """A live A/B test: each caller is assigned one variant, sticky by a hash of the caller id."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    variants: dict[str, Variant] = Field(min_length=2)


ROLES_BY_MODE: dict[str, tuple[str, ...]] = {"cascade": ("stt", "llm", "tts"), "realtime": ("realtime",)}
RESERVED_SECTIONS: tuple[str, ...] = ()


class Deployment(Strict):
    """One deployment file: how every call of this agent is handled."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="URL-safe name (path prefix when served).")
    mode: Literal["cascade", "realtime"] = "cascade"
    agent: AgentConfig
    vad: VADConfig = Field(default_factory=VADConfig)
    turn: TurnConfig = Field(default_factory=SilenceTurn)
    interruptions: InterruptionsConfig = Field(default_factory=InterruptionsConfig)
    stt: list[ServiceConfig] | None = None
    llm: list[ServiceConfig] | None = None
    tts: list[ServiceConfig] | None = None
    realtime: list[ServiceConfig] | None = None
    transport: TransportConfig = Field(default_factory=TransportConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    on_failure: OnFailureConfig = Field(default_factory=OnFailureConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    drain: DrainConfig = Field(default_factory=DrainConfig)
    silence: SilenceConfig | None = Field(default_factory=SilenceConfig)
    fillers: FillerConfig | None = Field(default_factory=FillerConfig)
    pricing: dict[str, PriceOverride] = Field(
        default_factory=dict, description="Price overrides keyed by provider or provider/model."
    )
    experiment: ExperimentConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    insecure: bool = Field(
        False,
        description="The only way to run a handler unsigned (transport.twilio.validate_signatures: false): for local "
        "experiments; logged at every start.",
    )
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    redact: RedactConfig | None = Field(None, description="Personal data to mask; absent: nothing is masked.")

    @field_validator("silence", "fillers", mode="before")
    @classmethod
    def _off_is_none(cls, value: Any) -> Any:
        """``section: off`` (YAML reads it as ``false``) disables a section that is on by default."""
        return None if value is False or value == "off" else value

    @field_validator("stt", "llm", "tts", "realtime", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """A role takes one provider or a priority-ordered list of them (fallback)."""
        return value if value is None or isinstance(value, list) else [value]

    @model_validator(mode="after")
    def _before_llm_needs_transcripts(self) -> Deployment:
        if self.redact is not None and self.redact.before_llm and self.mode == "realtime":
            raise ValueError("redact.before_llm needs mode: cascade (a realtime model hears the caller's audio)")
        return self

    def roles(self) -> tuple[str, ...]:
        """The roles this deployment's mode needs."""
        return ROLES_BY_MODE[self.mode]

    def services(self, role: str) -> list[ServiceConfig]:
        """The provider chain of ``role`` (primary first)."""
        return getattr(self, role) or []
