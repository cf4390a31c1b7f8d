"""Which tools a browser page may run itself: only those the deployment marks ``client_callable: true``.

On a WebRTC realtime call the model talks to the page, and the page asks the server to run the tool. A page
is anyone's script, so its requests are treated as coming from the internet: the routes call
``client_tool`` before running anything, and the arguments are then checked like any other (``run_tool``).
"""

from __future__ import annotations

from voxpipe.config.models import AgentConfig, ToolConfig


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
