"""The process's OpenTelemetry tracer, made from the standard ``OTEL_*`` variables, and voxpipe's vendor names.

Tracing is on when the standard ``OTEL_*`` variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` wins).
Then spans go to an OTLP/HTTP exporter that reads the rest of ``OTEL_*`` itself (headers, timeouts,
``OTEL_SERVICE_NAME``). With none set, ``tracer()`` is ``None`` and no SDK is imported. Stdlib only at import
time, so the Lambda relay (``voxpipe.serverless.relay_tracing``) shares it with the pipeline's call traces
(``voxpipe.pipeline.tracing``).
"""

from __future__ import annotations

import os
from typing import Any

_provider: Any = None  # the process's TracerProvider, once made (or installed by ``use_tracer_provider``)


def tracing_configured(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or any(
        environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def use_tracer_provider(provider: Any) -> None:
    """Send voxpipe's traces to ``provider`` (an SDK ``TracerProvider``; ``None`` goes back to ``OTEL_*``)."""
    global _provider
    _provider = provider


def tracer() -> Any:
    """voxpipe's tracer, or ``None`` when tracing is off."""
    global _provider
    if _provider is None:
        if not tracing_configured():
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _provider = TracerProvider(resource=Resource.create({"service.name": "voxpipe"}))
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return _provider.get_tracer("voxpipe")


def vendor(provider: str) -> str:
    """The ``gen_ai.system`` value of a voxpipe provider name (``openai_llm`` -> ``openai``)."""
    head = provider.split("_")[0]
    return "aws.bedrock" if head == "bedrock" else head


def flush() -> None:
    """Export the spans still batched (a Lambda may be frozen as soon as its invocation returns)."""
    if _provider is not None:
        _provider.force_flush()


def tool_span(otel: Any, context: Any, name: str, call_id: str, start_ns: int, end_ns: int, failed: bool) -> None:
    """An ``execute_tool {name}`` span, ended (times: epoch nanoseconds); never the tool's arguments."""
    from opentelemetry.trace import Status, StatusCode

    span = otel.start_span(
        f"execute_tool {name}",
        context=context,
        start_time=start_ns,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id},
    )
    if failed:
        span.set_status(Status(StatusCode.ERROR, "the tool returned an error"))
    span.end(end_time=end_ns)
