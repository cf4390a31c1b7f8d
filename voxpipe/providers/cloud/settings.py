"""What a pipecat LLM or realtime service is constructed with: ``llm_settings`` and ``agent_tools``.

pipecat's ``LLMSettings`` has a dozen fields, and in "store mode" (a service's initial settings) every one
must be given a real value, ``None`` where the service does not support it. A plugin knows the model, the
system instruction and perhaps a few sampling values; the rest is filled in here, from the dataclass's own
field list, so a field added by a pipecat release does not break plugins.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipecat.adapters.schemas.tools_schema import ToolsSchema
    from pipecat.services.settings import LLMSettings

    from voxpipe.config.models import AgentConfig

#: Fields whose "unsupported" value is ``False``, not ``None``.
_FLAGS = {"filter_incomplete_user_turns": False, "use_provider_thinking_default": False}


def llm_settings(model: str | None, instructions: str | None, **values: Any) -> LLMSettings:
    """``LLMSettings`` for ``model`` with ``instructions`` as the system instruction; ``values`` sets any other
    field (``temperature=0.3``), every field not given is ``None`` (or ``False`` for the on/off ones)."""
    from pipecat.services.settings import LLMSettings

    names = {field.name for field in dataclasses.fields(LLMSettings)} - {"extra"}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f"llm_settings: unknown field(s) {sorted(unknown)} (allowed: {sorted(names)})")
    given = {"model": model, "system_instruction": instructions, **values}
    return LLMSettings(**{name: given.get(name, _FLAGS.get(name)) for name in names})


def agent_tools(agent: AgentConfig) -> ToolsSchema | None:
    """The deployment's tools as pipecat's ``ToolsSchema`` (``None`` without tools), for a service that must
    declare them itself, as a realtime session does in its session update. (A cascade LLM gets them in the
    context; voxpipe runs the handlers either way.)"""
    from voxpipe.pipeline.tools import tools_schema
    from voxpipe.providers.registry import default_registry

    return tools_schema(agent, default_registry())
