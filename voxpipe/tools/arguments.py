"""A tool call's arguments, checked against the tool's JSON Schema before the tool runs.

The arguments come from a language model (which a caller can talk into anything) or from a browser page
(which anyone can script), so they are untrusted input aimed at code holding the server's credentials. Every
path that runs a tool goes through ``voxpipe.tools.runner.run_tool``, which calls ``check_arguments`` here.

Strictness: an object schema that does not say otherwise gets ``additionalProperties: false``, at every
level, so an argument nobody declared (``to`` on ``transfer``, ``__class__`` on a python function) is refused
instead of passed through.

The validator is fastjsonschema: it imports in ~5 ms against jsonschema's ~55-85 ms, which matters on a
Lambda cold start (the relay runs tools too), and it must not pull in pydantic. Each schema is compiled once
and cached. Schemas come from the deployment file (trusted, and checked at load), never from a caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import fastjsonschema

#: What a tool without a schema accepts: no arguments at all.
NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SUBSCHEMAS = ("items", "additionalItems", "not", "if", "then", "else")


class InvalidArguments(ValueError):
    """The arguments do not match the tool's schema; the message says how, for the model or the page."""


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object schema that does not set it."""
    out = dict(schema)
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: _strict_any(sub) for name, sub in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_strict_any(sub) for sub in out[key]]
    for key in _SUBSCHEMAS:
        if key in out:
            out[key] = _strict_any(out[key])
    return out


def _strict_any(schema: Any) -> Any:
    return strict_schema(schema) if isinstance(schema, Mapping) else schema


def compile_schema(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The validator of ``schema`` made strict; raises ``ValueError`` for a schema that is not valid."""
    try:
        return _compiled(json.dumps(strict_schema(schema), sort_keys=True))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ValueError(f"invalid JSON Schema: {exc}") from None


def _no_remote_ref(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(f"remote $ref {uri} is not allowed (no network at run time)")


@lru_cache(maxsize=512)
def _compiled(schema_json: str) -> Callable[[Any], Any]:
    # Arguments are checked, never changed: no schema defaults filled in. Remote $refs would be fetched: refused.
    return fastjsonschema.compile(
        json.loads(schema_json), handlers={"http": _no_remote_ref, "https": _no_remote_ref}, use_default=False
    )


def check_arguments(parameters: Mapping[str, Any] | None, arguments: Any) -> dict[str, Any]:
    """``arguments`` if they are a JSON object matching ``parameters`` (strict); else ``InvalidArguments``."""
    if not isinstance(arguments, dict):
        raise InvalidArguments("the arguments must be a JSON object")
    validate = compile_schema(parameters if parameters is not None else NO_ARGUMENTS)
    try:
        validate(arguments)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidArguments(exc.message.replace("data", "arguments", 1)) from None
    return arguments
