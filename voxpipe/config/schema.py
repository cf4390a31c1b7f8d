"""JSON Schema of a deployment file, with each installed provider's and tool kind's options, for editors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from voxpipe.config.models import Deployment
from voxpipe.providers.registry import Registry, default_registry


def _options_by_name(schemas: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``if <key> is X then options follow X's schema``, one clause per plugin."""
    return [
        {"if": {"properties": {key: {"const": name}}, "required": [key]}, "then": {"properties": {"options": schema}}}
        for name, schema in sorted(schemas.items())
    ]


def _hoisted(model: type[BaseModel], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``model``'s schema with its definitions moved to the root ``$defs`` under ``prefix`` (refs rewritten)."""
    schema = model.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}")
    defs.update({prefix + name: definition for name, definition in schema.pop("$defs", {}).items()})
    return schema


def _provider_options(registry: Registry, kind: str, defs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    providers = (registry.providers[(kind, name)].provider for name in registry.names(kind))
    return {p.name: _hoisted(p.options, f"{kind}.{p.name}.", defs) for p in providers}


def _role_schema(registry: Registry, role: str, defs: dict[str, Any]) -> dict[str, Any]:
    options = _provider_options(registry, role, defs)
    service = {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider"],
        "properties": {
            "provider": {"enum": registry.names(role), "description": f"The {role} provider."},
            "model": {"type": "string"},
            "options": {"type": "object"},
        },
        "allOf": _options_by_name(options, "provider"),
    }
    return {"anyOf": [service, {"type": "array", "items": service, "minItems": 1}]}


def deployment_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or default_registry()
    schema = Deployment.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    for role in ("stt", "llm", "tts", "realtime"):
        schema["properties"][role] = _role_schema(registry, role, defs)
    vad = schema["$defs"]["VADConfig"]["properties"]
    vad["provider"] = {"enum": registry.names("vad"), "default": "silero"}
    schema["$defs"]["VADConfig"]["allOf"] = _options_by_name(_provider_options(registry, "vad", defs), "provider")
    tool = schema["$defs"]["ToolConfig"]
    tool["properties"]["kind"] = {"enum": sorted(registry.tool_kinds)}
    tool_options = {
        name: _hoisted(t.tool_kind.options, f"tool.{name}.", defs) for name, t in registry.tool_kinds.items()
    }
    tool["allOf"] = _options_by_name(tool_options, "kind")
    return schema
