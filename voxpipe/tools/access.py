"""Which tools a browser page may run itself: only those the deployment marks ``client_callable: true``.

On a WebRTC realtime call the model talks to the page, and the page asks the server to run the tool. A page
is anyone's script, so its requests are treated as coming from the internet: a route calls
``run_client_tool``, which refuses a tool not marked, then runs it through ``run_tool`` (strict arguments,
timeout) like any other call.
"""

from __future__ import annotations

from typing import Any

from voxpipe.config.models import AgentConfig, ToolConfig
from voxpipe.providers.registry import Registry
from voxpipe.tools.runner import run_tool


class ToolNotCallable(LookupError):
    """A page asked for a tool it may not run; ``status`` is the HTTP answer (404 unknown, 403 not allowed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def client_tool(agent: AgentConfig, name: str) -> ToolConfig:
    """The tool named ``name`` if a browser may call it; raises ``ToolNotCallable`` otherwise."""
    tool = next((t for t in agent.tools if t.function_name == name), None)
    if tool is None:
        raise ToolNotCallable(404, f"no tool {name}")
    if not tool.client_callable:
        raise ToolNotCallable(403, f"the tool {name} is not client-callable")
    return tool


async def run_client_tool(agent: AgentConfig, registry: Registry, name: str, arguments: Any) -> tuple[Any, str | None]:
    """Run the tool a page asked for: ``(result, effect)``, or ``ToolNotCallable`` before anything runs.

    The result is the tool's, or ``{"error": ...}`` for arguments that do not match its schema, a failure or a
    timeout (see ``run_tool``); ``effect`` is the kind's call-level effect (``end_call``, ``transfer``) or None.
    """
    tool = client_tool(agent, name)
    kind = registry.tool_kinds[tool.kind].tool_kind
    handler = kind.build(tool.function_name, kind.options.model_validate(tool.options))
    parameters = tool.parameters or kind.parameters
    return await run_tool(tool.function_name, handler, arguments, tool.timeout_secs, parameters), kind.effect
