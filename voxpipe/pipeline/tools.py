"""Turns ``agent.tools`` into pipecat function schemas and handlers for one call.

A tool that raises or times out returns ``{"error": ...}`` to the model: a failing tool never ends the call.
A tool with an ``effect`` (``end_call``, ``transfer``) reports it to the call once it succeeded. A slow tool
gets a filler, and a caller who speaks while it runs is heard (``voxpipe.pipeline.fillers``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.services.llm_service import FunctionCallFromLLM, FunctionCallParams, LLMService

from voxpipe.config.models import AgentConfig, ToolConfig
from voxpipe.pipeline.fillers import SlowToolFillers
from voxpipe.pipeline.transfer import EffectHandler, warm_details
from voxpipe.providers.registry import Registry
from voxpipe.providers.spec import ToolHandler, ToolKind
from voxpipe.tools.runner import run_tool

SensitiveHandler = Callable[[str, dict[str, Any]], None]  # (tool call id, arguments); idempotent per id


def _schema(tool: ToolConfig, kind: ToolKind) -> FunctionSchema:
    parameters = dict(tool.parameters or kind.parameters or {})
    return FunctionSchema(
        name=tool.function_name,
        description=tool.description or kind.description,
        properties=parameters.get("properties", {}),
        required=list(parameters.get("required", [])),
    )


def tools_schema(agent: AgentConfig, registry: Registry) -> ToolsSchema | None:
    """The functions the model is told about, or ``None`` when the agent has no tools."""
    if not agent.tools:
        return None
    return ToolsSchema(standard_tools=[_schema(tool, registry.tool_kinds[tool.kind].tool_kind) for tool in agent.tools])


def register_tools(
    llm: LLMService,
    agent: AgentConfig,
    registry: Registry,
    on_effect: EffectHandler,
    fillers: SlowToolFillers | None = None,
    on_sensitive: SensitiveHandler | None = None,
) -> None:
    """Register a handler on ``llm`` for every tool of ``agent`` (not cancelled when the caller speaks).

    A ``sensitive`` tool's arguments go to ``on_sensitive`` before the tool runs, so they are masked in
    whatever the call stores from then on.
    """
    fillers = fillers or SlowToolFillers(None, realtime=False)
    sensitive_names = {tool.function_name for tool in agent.tools if tool.sensitive}
    for tool in agent.tools:
        kind = registry.tool_kinds[tool.kind].tool_kind
        options = kind.options.model_validate(tool.options)
        sensitive = on_sensitive if tool.sensitive else None
        handle = _pipecat_handler(
            tool, kind, kind.build(tool.function_name, options), options, on_effect, fillers, sensitive
        )
        llm.register_function(tool.function_name, handle, cancel_on_interruption=False)
    if sensitive_names and on_sensitive is not None:
        # Also as soon as the model asks, before pipecat logs the call's arguments at DEBUG.
        async def calls_started(service: LLMService, calls: list[FunctionCallFromLLM]) -> None:
            for call in calls:
                if call.function_name in sensitive_names:
                    on_sensitive(call.tool_call_id, dict(call.arguments))

        llm.add_event_handler("on_function_calls_started", calls_started)


def _pipecat_handler(
    tool: ToolConfig,
    kind: ToolKind,
    handler: ToolHandler,
    options: Any,
    on_effect: EffectHandler,
    fillers: SlowToolFillers,
    on_sensitive: SensitiveHandler | None,
) -> Callable[[FunctionCallParams], Awaitable[None]]:
    async def handle(params: FunctionCallParams) -> None:
        if on_sensitive is not None:
            on_sensitive(params.tool_call_id, dict(params.arguments))
        parameters = tool.parameters or kind.parameters
        work = run_tool(tool.function_name, handler, dict(params.arguments), tool.timeout_secs, parameters)
        result = await fillers.run(tool, params, work)
        if kind.effect and not (isinstance(result, dict) and "error" in result):
            details = dict(params.arguments) | {"result": result}
            if kind.effect == "transfer" and getattr(options, "mode", "cold") == "warm":
                details["warm"] = await warm_details(options, params.llm, params.context)
            await on_effect(kind.effect, details)

    return handle
