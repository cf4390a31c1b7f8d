"""OpenTelemetry traces of the Lambda relay's calls, when the standard ``OTEL_*`` variables ask for them.

A Lambda sees a call as separate invocations and never its end, so each reply turn is exported by the invocation
that answered it, before it returns (a Lambda may be frozen as soon as it has): a ``turn`` span (the prompt
received -> the reply's last text sent) with a ``chat {model}`` span per LLM request of the reply (``gen_ai.*``
attributes as on the server, with the tokens the vendor reported, and the time to the first piece; a request the
chain fell back from carries its error) and an ``execute_tool {name}`` span per tool call; fillers are events of
the turn. All turns of a call share one trace: its id is derived from the CallSid (SHA-256), and so is their
parent, the call's span id (that call span itself is not exported: no invocation knows when the call ends). Texts
are the caller's words and the reply as heard, masked by the deployment's ``redact:``; tool arguments are never
exported. With no ``OTEL_*`` set, nothing is imported and a turn costs one check.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

from voxpipe.telemetry import flush, tool_span, tracer, vendor

if TYPE_CHECKING:
    from voxpipe.redaction import Redactor
    from voxpipe.serverless import HandlerConfig
    from voxpipe.serverless.text_llm import Reply

logger = logging.getLogger(__name__)


def call_ids(call_id: str) -> tuple[int, int]:
    """The trace id and the call span id of a call: the same in every invocation."""
    digest = hashlib.sha256(call_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def export_turn(
    config: HandlerConfig, call_id: str, started: float, said: str, reply: Reply, heard: str, redactor: Redactor | None
) -> None:
    """Export one reply turn (times: epoch seconds); a failure is logged, never raised into the call."""
    otel = tracer()
    if otel is None:
        return
    try:
        _export(otel, config, call_id, started, said, reply, heard, redactor)
        flush()
    except Exception:
        logger.exception("call %s: the turn's trace could not be exported", call_id)


def _export(
    otel: object,
    config: HandlerConfig,
    call_id: str,
    started: float,
    said: str,
    reply: Reply,
    heard: str,
    redactor: Redactor | None,
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

    mask = redactor.text if redactor is not None else str
    trace_id, call_span = call_ids(call_id)
    call = SpanContext(trace_id, call_span, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    turn = otel.start_span(  # type: ignore[attr-defined]
        "turn",
        context=trace.set_span_in_context(NonRecordingSpan(call)),
        start_time=_ns(started),
        attributes={
            "voxpipe.deployment": config.name,
            "voxpipe.call_id": call_id,
            "gen_ai.conversation.id": call_id,
            "voxpipe.transport": "conversation_relay",
            "voxpipe.turn.heard": mask(said),
            "voxpipe.turn.reply": mask(heard),
        },
    )
    inner = trace.set_span_in_context(turn)
    for request in reply.requests:
        system = vendor(request.name)
        span = otel.start_span(  # type: ignore[attr-defined]
            f"chat {request.detail}",
            context=inner,
            start_time=_ns(request.started),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": system,
                "gen_ai.provider.name": system,
                "gen_ai.request.model": request.detail,
                "voxpipe.stage": "llm",
            },
        )
        if request.first is not None:
            span.set_attribute("voxpipe.first_piece_ms", round((request.first - request.started) * 1000, 1))
        if request.usage is not None:  # as the server's spans count them (cached tokens among the input)
            span.set_attribute("gen_ai.usage.input_tokens", request.usage.input)
            span.set_attribute("gen_ai.usage.output_tokens", request.usage.output)
            if request.usage.cached_input:
                span.set_attribute("voxpipe.usage.cached_input_tokens", request.usage.cached_input)
        if request.error:
            span.set_status(Status(StatusCode.ERROR, mask(request.error)))
        span.end(end_time=_ns(request.ended or request.started))
    for run in reply.tool_runs:
        ended = _ns(run.ended or run.started)
        tool_span(otel, inner, run.name, run.detail, _ns(run.started), ended, run.error is not None)
    for filler in reply.fillers:
        turn.add_event("filler", {"voxpipe.tool": filler["tool"], "voxpipe.delay_secs": filler["delay_secs"]})
    turn.end(end_time=_ns(time.time()))


def _ns(at: float) -> int:
    return int(at * 1e9)
