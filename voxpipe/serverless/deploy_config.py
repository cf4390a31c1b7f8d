"""What ``voxpipe deploy sam`` writes for the Lambda handlers: the handler configuration of a deployment.

The handlers import neither pydantic nor the plugin registry, so the deployment is validated here, at deploy time,
and reduced to plain JSON (read back by ``voxpipe.serverless.HandlerConfig``): the LLM chain the handlers can
stream, each tool with its options validated and the import path of its handler builder, the Twilio and relay
settings. Every value the YAML wrote as ``${VAR}`` is put back as its template, so no secret is written to disk:
the function's environment fills it in at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from ruamel.yaml import YAML

from voxpipe.config.call_flow import tool_filler
from voxpipe.config.loader import parse_deployment
from voxpipe.config.models import Deployment
from voxpipe.providers.registry import Registry
from voxpipe.serverless import CONFIG_FORMAT, referenced_variables
from voxpipe.serverless.text_llm import STREAMERS


class SamError(ValueError):
    """The deployment cannot be deployed this way (e.g. ConversationRelay without a supported LLM)."""


def load_for_deploy(path: Path, environ: Mapping[str, str], registry: Registry) -> tuple[Deployment, Any]:
    """The validated deployment and the raw (un-interpolated) YAML data of ``path``.

    Variables the deployment references but this shell does not set get a placeholder for validation: the
    secrets of a production deployment need not be on the machine that builds it.
    """
    text = path.read_text(encoding="utf-8")
    raw = YAML(typ="safe", pure=True).load(text)
    placeholders = {name: f"deploy-placeholder-{name}" for name in referenced_variables(raw)}
    deployment = parse_deployment(text, str(path), {**placeholders, **environ}, registry)
    return deployment, raw


def _templates(resolved: Any, raw: Any) -> Any:
    """``resolved`` with every value the YAML wrote with ``${VAR}`` put back as its template."""
    if isinstance(raw, str) and "${" in raw:  # a template (or an escaped one): resolved again at run time
        return raw
    if isinstance(resolved, dict):
        raw_map = raw if isinstance(raw, dict) else {}
        return {key: _templates(value, raw_map.get(key)) for key, value in resolved.items()}
    if isinstance(resolved, list):
        raw_list = raw if isinstance(raw, list) else [raw] * len(resolved) if isinstance(raw, dict) else []
        return [_templates(value, raw_list[i] if i < len(raw_list) else None) for i, value in enumerate(resolved)]
    return resolved


def _plain(value: Any) -> Any:
    """Python-mode model data made JSON-ready (secrets as their values; templates replace them later)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def handler_config(deployment: Deployment, raw: Any, registry: Registry) -> dict[str, Any]:
    """The handler configuration (JSON-ready) of a validated deployment; ``raw`` is its un-interpolated YAML."""
    llm = []
    for service in deployment.services("llm"):
        if service.provider not in STREAMERS:
            continue
        provider = registry.get("llm", service.provider)
        assert provider is not None  # the loader validated the name  # noqa: S101 — narrows the type: the loader refused unknown providers
        options = provider.provider.options.model_validate(service.options).model_dump()
        llm.append(
            {
                "provider": service.provider,
                "model": service.model or provider.provider.default_model,
                "options": options,
            }
        )
    tools = []
    for tool in deployment.agent.tools:
        kind = registry.tool_kinds[tool.kind].tool_kind
        tools.append(
            {
                "name": tool.function_name,
                "kind": tool.kind,
                "description": tool.description or kind.description,
                "parameters": dict(tool.parameters or kind.parameters or {"type": "object", "properties": {}}),
                "timeout_secs": tool.timeout_secs,
                "options": kind.options.model_validate(tool.options).model_dump(),
                "effect": kind.effect,
                "builder": _builder_path(tool.kind, kind.build),
                **_filler(deployment, tool),
                "sensitive": tool.sensitive,
            }
        )
    sensitive = any(tool.sensitive for tool in deployment.agent.tools)
    transport = deployment.transport
    origins = list(transport.browser.allowed_origins) + ([transport.public_url] if transport.public_url else [])
    resolved = {
        "format": CONFIG_FORMAT,
        "name": deployment.name,
        "agent": {"instructions": deployment.agent.instructions, "greeting": deployment.agent.greeting, "tools": tools},
        "llm": llm,
        "twilio": {
            "account_sid": transport.twilio.account_sid,
            "auth_token": transport.twilio.auth_token,
            "validate_signatures": transport.twilio.validate_signatures,
            "insecure": deployment.insecure,  # the handlers refuse to run unsigned without it
        },
        "conversation_relay": transport.conversation_relay.model_dump(),
        "allowed_origins": origins,
        "session_token_secs": transport.browser.session_token_secs,
        "ttl_secs": deployment.sessions.ttl_secs,
        "on_failure": {"say": deployment.on_failure.say, "transfer_to": deployment.on_failure.transfer_to},
        "redact": deployment.redact.model_dump() if deployment.redact else _SENSITIVE_ONLY if sensitive else None,
        "silence": deployment.silence.model_dump() if deployment.silence else None,
        "twilio_recording": deployment.recording.enabled,  # a relay call's recording is Twilio's
    }
    raw = raw if isinstance(raw, dict) else {}
    raw_agent, raw_transport = raw.get("agent") or {}, raw.get("transport") or {}
    shadow = {  # the raw YAML in the shape of ``resolved``, where the shapes match
        "agent": raw_agent,
        "llm": [s for s in _as_list(raw.get("llm")) if isinstance(s, dict) and s.get("provider") in STREAMERS],
        "twilio": raw_transport.get("twilio") or {},
        "allowed_origins": list((raw_transport.get("browser") or {}).get("allowed_origins") or [])
        + ([raw_transport["public_url"]] if "public_url" in raw_transport else []),
    }
    return _templates(_plain(resolved), shadow)


#: ``redact:`` of a deployment that wrote none but has a ``sensitive`` tool: only the tool's arguments are masked.
_SENSITIVE_ONLY = {"entities": [], "patterns": [], "before_llm": False}


def _filler(deployment: Deployment, tool: Any) -> dict[str, Any]:
    filler = tool_filler(tool, deployment.fillers)
    return {"filler": filler[0], "filler_after_secs": filler[1]} if filler else {}


def without_llm(config: dict[str, Any]) -> dict[str, Any]:
    """The handler configuration of the TwiML and bridge functions: no LLM and no tools, so none of their keys."""
    return {**config, "llm": [], "agent": {**config["agent"], "tools": []}}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _builder_path(kind: str, build: Any) -> str:
    """Where the Lambda imports a tool kind's handler builder from (``module:function``), without the registry."""
    path = f"{build.__module__}:{build.__qualname__}"
    if "<" in path:
        raise SamError(f"tool kind {kind} cannot run on Lambda: its build function {path} is not importable")
    return path
