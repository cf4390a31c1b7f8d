"""OpenTelemetry traces of calls: one trace per call, spans call -> turn -> stt / llm / tts / tool.

Tracing is on when the standard ``OTEL_*`` variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` wins).
Then spans go to an OTLP/HTTP exporter that reads the rest of ``OTEL_*`` itself (headers, timeouts,
``OTEL_SERVICE_NAME``). With none set, ``tracer()`` is ``None``: no SDK is imported and a call pays nothing.

The trace is written when the call ends, from what the call measured (``TurnMeter``'s turns, the meter's
usage, tool calls and errors with their times), so the hot path carries no span bookkeeping. Span times are
the measured moments: a turn span runs from the end of the caller's speech to the first audible sample of
the reply (its length is the voice-to-voice latency), and its children show where that time went. A text
call's turn (ConversationRelay: Twilio does the speech) runs from the prompt to the reply's last token, with
an LLM span up to its first token.
Attributes follow the OpenTelemetry GenAI conventions (``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens`` ...) plus ``voxpipe.*`` (deployment, variant, voice-to-voice, cost). Texts come
from the redacted ``CallRecord``; tool arguments are never exported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voxpipe.pipeline.latency import MeasuredTurn
from voxpipe.records.model import CallRecord
from voxpipe.telemetry import (  # noqa: F401 — re-exported: tests and benchmarks install providers through here
    tool_span,
    tracer,
    tracing_configured,
    use_tracer_provider,
    vendor,
)


@dataclass(frozen=True)
class ToolCall:
    """A tool the model called, with its ``time.monotonic()`` start and end (``None`` while running)."""

    call_id: str
    name: str
    started: float
    ended: float | None = None
    failed: bool = False


@dataclass(frozen=True)
class StageService:
    """Which provider and model served a stage (the one that reported usage, else the role's primary)."""

    role: str
    provider: str
    model: str | None


@dataclass
class CallTrace:
    """Everything the trace of one call is made from. Times are ``time.monotonic()`` seconds."""

    record: CallRecord
    started: float
    ended: float
    turns: Sequence[MeasuredTurn]
    services: dict[str, StageService]  # by role: the call's primary provider
    usage: list[tuple[float, StageService, dict[str, Any]]] = field(default_factory=list)  # (at, service, counts)
    tools: list[ToolCall] = field(default_factory=list)
    text: bool = False  # a text call: its turns have only an LLM stage


def _ns(at: float) -> int:
    """``time.monotonic()`` seconds -> epoch nanoseconds (OpenTelemetry's span times)."""
    return int((at + time.time() - time.monotonic()) * 1e9)


def _service_attributes(service: StageService) -> dict[str, Any]:
    return {
        "gen_ai.system": vendor(service.provider),
        "gen_ai.provider.name": vendor(service.provider),
        "gen_ai.request.model": service.model or "",
        "voxpipe.provider": service.provider,
    }


def export(trace: CallTrace) -> None:
    """Write the spans of one finished call to the configured tracer (nothing when tracing is off)."""
    otel = tracer()
    if otel is None:
        return
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Status, StatusCode

    record = trace.record
    call = otel.start_span(
        f"call {record.deployment}",
        start_time=_ns(trace.started),
        attributes={
            "voxpipe.call_id": record.call_id,
            "voxpipe.deployment": record.deployment,
            "voxpipe.mode": record.mode,
            "voxpipe.experiment": record.experiment or "",
            "voxpipe.variant": record.variant or "",
            "voxpipe.turns": len(record.turns),
            "voxpipe.cost_usd": record.cost_usd,
            "voxpipe.recording": record.recordings[-1].location if record.recordings else "",  # this connection's
            "gen_ai.conversation.id": record.call_id,
        },
    )
    for fallback in record.fallbacks:
        call.add_event(
            "voxpipe.fallback",
            {
                "role": fallback.role,
                "from": fallback.from_provider,
                "to": fallback.to_provider,
                "reason": fallback.reason,
            },
            timestamp=_ns(trace.started + fallback.at_secs),
        )
    for error in record.errors:  # the record's messages are redacted
        attributes = {"exception.type": error.kind, "exception.message": error.message, "voxpipe.fatal": error.fatal}
        attributes |= {"voxpipe.role": error.role or "", "voxpipe.provider": error.provider or ""}
        at = None if error.at_secs is None else _ns(trace.started + error.at_secs)
        call.add_event("exception", attributes, timestamp=at)
    if record.errors:
        call.set_status(Status(StatusCode.ERROR, record.errors[0].summary()))
    context = otel_trace.set_span_in_context(call)
    bounds = [turn.user_speech_end for turn in trace.turns[1:]] + [float("inf")]
    for index, (turn, until) in enumerate(zip(trace.turns, bounds, strict=True)):
        _turn_spans(otel, context, trace, index, turn, until)
    call.end(end_time=_ns(trace.ended))


def _turn_spans(otel: Any, context: Any, trace: CallTrace, index: int, turn: MeasuredTurn, until: float) -> None:
    from opentelemetry import trace as otel_trace

    record = trace.record.turns[index]
    tools = [t for t in trace.tools if turn.user_speech_end <= t.started < until]
    # (a turn the call ended before answering has no reply: it ends with its last tool, or where it began)
    moments = (turn.user_speech_end, turn.audio_out_first, *(t.ended or t.started for t in tools))
    end = max(m for m in moments if m is not None)
    span = otel.start_span(
        f"turn {index + 1}",
        context=context,
        start_time=_ns(turn.user_speech_end),
        attributes={
            "voxpipe.turn.index": index + 1,
            "voxpipe.voice_to_voice_ms": record.voice_to_voice_ms or 0.0,
            "voxpipe.turn.heard": record.heard,
            "voxpipe.turn.reply": record.reply,
            **({"voxpipe.reply_complete_ms": record.reply_complete_ms} if record.reply_complete_ms else {}),
        },
    )
    inner = otel_trace.set_span_in_context(span)
    usage = [(service, counts) for at, service, counts in trace.usage if turn.user_speech_end <= at < until]
    stages = (
        [("llm", turn.user_speech_end, turn.llm_first_token)]
        if trace.text
        else [("realtime", turn.user_speech_end, turn.audio_out_first)]
        if "realtime" in trace.services
        else [
            ("stt", turn.user_speech_end, turn.stt_final),
            ("llm", turn.stt_final, turn.llm_first_token),
            ("tts", turn.llm_first_token, turn.tts_first_audio),
        ]
    )
    for role, start, stop in stages:
        if start is None or stop is None:
            continue
        used = [(s, c) for s, c in usage if s.role == role]
        service = used[-1][0] if used else trace.services[role]
        attributes = _service_attributes(service) | {"voxpipe.stage": role}
        if role in ("llm", "realtime"):
            attributes["gen_ai.operation.name"] = "chat"
        for name in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "voxpipe.usage.characters"):
            total = sum(c.get(name, 0) for _, c in used)
            if total:
                attributes[name] = total
        title = (
            f"chat {service.model}" if role in ("llm", "realtime") else f"{role} {service.model or service.provider}"
        )
        otel.start_span(title, context=inner, start_time=_ns(start), attributes=attributes).end(end_time=_ns(stop))
    for tool in tools:
        tool_span(otel, inner, tool.name, tool.call_id, _ns(tool.started), _ns(tool.ended or tool.started), tool.failed)
    span.end(end_time=_ns(end))
