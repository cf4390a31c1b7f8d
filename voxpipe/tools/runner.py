"""Running one tool call: failures and timeouts become an error result for the model, never an exception.

Pipecat-free, so the serverless relay (which must not import pipecat) and the pipeline share it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voxpipe.providers.spec import ToolHandler

log = logging.getLogger("voxpipe.tools")


def tool_error(name: str, problem: str) -> dict[str, str]:
    return {"error": f"the tool {name} {problem}"}


async def run_tool(name: str, handler: ToolHandler, arguments: dict[str, Any], timeout_secs: float) -> Any:
    """Run one tool call, turning failures and timeouts into an error result for the model."""
    try:
        return await asyncio.wait_for(handler(arguments), timeout_secs)
    except TimeoutError:
        log.warning("tool %s timed out after %gs", name, timeout_secs)
        return tool_error(name, f"did not answer within {timeout_secs:g} seconds")
    except Exception as exc:
        log.warning("tool %s failed: %r", name, exc)
        return tool_error(name, f"failed: {exc}")
