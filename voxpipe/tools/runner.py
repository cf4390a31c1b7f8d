"""Running one tool call: arguments checked, failures and timeouts become an error result, never an exception.

This is the one place every tool call goes through: the pipeline's function calling, the browser page's
tools endpoint and the serverless relay. Pipecat-, pydantic- and pluggy-free, so the Lambda handlers (which
must start fast) share it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voxpipe.tools.arguments import InvalidArguments, check_arguments

if TYPE_CHECKING:
    from voxpipe.providers.spec import ToolHandler

log = logging.getLogger("voxpipe.tools")


class ToolCallFailed(Exception):
    """The tool ran but failed; its message is returned to the model."""


def tool_error(name: str, problem: str) -> dict[str, str]:
    return {"error": f"the tool {name} {problem}"}


async def run_tool(
    name: str,
    handler: ToolHandler,
    arguments: Any,
    timeout_secs: float,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """Run one tool call, turning bad arguments, failures and timeouts into an error result for the model.

    ``parameters`` is the tool's JSON Schema (``ToolConfig.parameters`` or its kind's); the arguments must
    match it, strictly (see ``voxpipe.tools.arguments``), or the handler is never called. Without a schema
    the arguments must still be a JSON object.
    """
    try:
        if parameters is None:
            if not isinstance(arguments, dict):
                raise InvalidArguments("the arguments must be a JSON object")
        else:
            check_arguments(parameters, arguments)
    except ValueError as exc:  # InvalidArguments, or a schema that does not compile: never run blind
        log.warning("tool %s refused its arguments: %s", name, exc)
        return tool_error(name, f"was not run: {exc}")
    try:
        return await asyncio.wait_for(handler(arguments), timeout_secs)
    except TimeoutError:
        log.warning("tool %s timed out after %gs", name, timeout_secs)
        return tool_error(name, f"did not answer within {timeout_secs:g} seconds")
    except Exception as exc:
        log.warning("tool %s failed: %r", name, exc)
        return tool_error(name, f"failed: {exc}")
