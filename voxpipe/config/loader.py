"""YAML file -> validated ``Deployment``, with every error naming file, line, key path and what is allowed.

Steps: parse with ruamel.yaml (which keeps line numbers), substitute ``${VAR}`` / ``${VAR:-default}``,
validate the document with pydantic, then validate what only the plugin registry knows: provider names,
each provider's own options, tool kinds, and that secrets came from the environment.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from voxpipe.config import secrets
from voxpipe.config.errors import ConfigError, ConfigProblem
from voxpipe.config.models import RESERVED_SECTIONS, Deployment, ToolConfig
from voxpipe.config.turns import realtime_refusals
from voxpipe.envvars import substitute
from voxpipe.providers.registry import Registry, default_registry
from voxpipe.tools.arguments import compile_schema

Loc = tuple[str | int, ...]
INLINE_SECRET = "a secret must come from the environment: write it as ${ENV_VAR}, not inline"  # noqa: S105 — an error message, not a password
ROLES = set(secrets.ROLES)
UNSIGNED = "false (unsigned requests) is allowed only with `insecure: true` at the top of the file"


class Document:
    """A parsed YAML document: plain data, the line of every key, and every string as written (before ``${VAR}``)."""

    def __init__(self, source: str, tree: Any, environ: Mapping[str, str]):
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.raw: dict[Loc, str] = {}
        self.problems: list[ConfigProblem] = []
        self.data = self._convert(tree, (), environ)

    def _convert(self, node: Any, loc: Loc, environ: Mapping[str, str]) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                if hasattr(node, "lc"):
                    self.lines[(*loc, str(key))] = node.lc.key(key)[0] + 1
                out[str(key)] = self._convert(value, (*loc, str(key)), environ)
            return out
        if isinstance(node, list):
            for index in range(len(node)):
                if hasattr(node, "lc"):
                    self.lines[(*loc, index)] = node.lc.item(index)[0] + 1
            return [self._convert(item, (*loc, i), environ) for i, item in enumerate(node)]
        if isinstance(node, str):
            return self._interpolate(str(node), loc, environ)
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    def _interpolate(self, text: str, loc: Loc, environ: Mapping[str, str]) -> str:
        self.raw[loc] = text

        def missing(name: str) -> str:
            self.problems.append(self.problem(loc, f"environment variable {name} is not set"))
            return ""

        return substitute(text, environ, missing)[0]

    def role_loc(self, role: str, index: int) -> Loc:
        """Where the ``index``-th provider of ``role`` is written: ``stt`` (one mapping) or ``stt[1]`` (a list)."""
        return (role, index) if isinstance(self.data.get(role), list) else (role,)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest key of ``loc`` that exists in the file."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1 if self.lines else None

    def problem(self, loc: Loc, message: str) -> ConfigProblem:
        return ConfigProblem(self.source, self.line_of(loc), _format_path(loc), message)


def _format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_deployment(
    path: str | Path, environ: Mapping[str, str] | None = None, registry: Registry | None = None
) -> Deployment:
    """Read, interpolate and validate one deployment file. Raises ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"cannot read file: {exc.strerror}")]) from None
    return parse_deployment(text, str(path), environ, registry)


def parse_deployment(
    text: str, source: str = "<string>", environ: Mapping[str, str] | None = None, registry: Registry | None = None
) -> Deployment:
    """Validate deployment YAML given as text. ``source`` names it in errors."""
    document = parse_document(text, source, environ)
    if not isinstance(document.data, Mapping):
        raise ConfigError([ConfigProblem(source, 1, "", "a deployment file must be a mapping of sections")])
    return validate_document(document, registry or default_registry())


def parse_document(text: str, source: str, environ: Mapping[str, str] | None = None) -> Document:
    """Parse YAML keeping each key's line and substituting ``${VAR}``; other voxpipe files (bench scenarios)
    are read with it too, so their errors name file, line and key the same way. Raises ``ConfigError``."""
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigProblem(source, line, "", f"invalid YAML: {exc.problem or exc}")]) from None
    return Document(source, tree, os.environ if environ is None else environ)


def apply_overrides(deployment: Deployment, overrides: Mapping[str, Any], source: str = "<override>") -> Deployment:
    """A copy of ``deployment`` with sections replaced or deep-merged (mappings merge, the rest replace).

    Used for per-call overrides and experiment variants; the result is validated like a file.
    """
    document = Document(source, {}, {})
    document.data = _merged(deployment, overrides)
    return validate_document(document, default_registry(), allow_secrets=True)


def _merged(deployment: Deployment, overrides: Mapping[str, Any]) -> dict[str, Any]:
    # Python mode keeps SecretStr values whole (JSON mode would mask them as '**********').
    base = deployment.model_dump(exclude_none=True)
    merged = _deep_merge(base, {k: v for k, v in overrides.items() if k not in ROLES})
    for role in ROLES & overrides.keys():
        merged[role] = _merge_role(base.get(role), overrides[role])
    return merged


def _merge_role(chain: list[dict[str, Any]] | None, override: Any) -> Any:
    """A mapping overriding a one-provider role merges into it when it keeps (or omits) the provider."""
    keeps_provider = isinstance(override, Mapping) and chain and len(chain) == 1
    if keeps_provider and override.get("provider", chain[0]["provider"]) == chain[0]["provider"]:
        return [_deep_merge(chain[0], override)]
    return override


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        return {**base, **{k: _deep_merge(base.get(k), v) for k, v in override.items()}}
    return override


def validate_document(document: Document, registry: Registry, allow_secrets: bool = False) -> Deployment:
    problems = list(document.problems)
    data = document.data
    for section in RESERVED_SECTIONS:
        if section in data:
            problems.append(document.problem((section,), "reserved for a later voxpipe release and not supported yet"))
            data = {k: v for k, v in data.items() if k != section}
    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        problems += [pydantic_problem(document, Deployment, (), data, err) for err in exc.errors()]
        raise ConfigError(problems) from None
    problems += _registry_problems(deployment, document, registry)
    if deployment.mode == "realtime":
        refused = realtime_refusals(deployment.turn, deployment.interruptions)
        problems += [document.problem(loc, f"cascade only, not for mode: realtime: {why}") for loc, why in refused]
    if not deployment.transport.twilio.validate_signatures and not deployment.insecure:
        problems.append(document.problem(("transport", "twilio", "validate_signatures"), UNSIGNED))
    if not allow_secrets:
        problems += _inline_secret_problems(document, deployment, registry)
    if problems:
        raise ConfigError(problems)
    return deployment


def _inline_secret_problems(document: Document, deployment: Deployment, registry: Registry) -> list[ConfigProblem]:
    """Every credential the file writes out (see ``voxpipe.config.secrets``), variant overrides included."""
    locs = set(secrets.credential_locs(document.data))
    locs |= {secrets.written_loc(document.data, loc) or loc for loc in secrets.typed_secret_locs(deployment, registry)}
    for name, variant in deployment.experiment.variants.items() if deployment.experiment else ():
        try:
            merged = Deployment.model_validate(_merged(deployment, {**variant.overrides, "experiment": None}))
        except ValidationError:
            continue  # the variant's own errors are reported when it is built
        for loc in secrets.typed_secret_locs(merged, registry):
            found = secrets.written_loc(variant.overrides, loc)
            if found is not None:
                locs.add(("experiment", "variants", name, "overrides", *found))
    written_out = [loc for loc in sorted(locs, key=str) if secrets.written_out(document.raw.get(loc))]
    return [document.problem(loc, INLINE_SECRET) for loc in written_out]


def _registry_problems(deployment: Deployment, document: Document, registry: Registry) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for role in deployment.roles():
        if not deployment.services(role):
            problems.append(document.problem((role,), f"required in {deployment.mode} mode (a provider)"))
    for role in ("stt", "llm", "tts", "realtime"):
        for index, service in enumerate(deployment.services(role)):
            loc = document.role_loc(role, index)
            problems += provider_problems(document, registry, role, service.provider, service.options, loc)
    vad = deployment.vad
    problems += provider_problems(document, registry, "vad", vad.provider, vad.options, ("vad",))
    return problems + tool_problems(document, registry, deployment.agent.tools, ("agent", "tools"))


def tool_problems(document: Document, registry: Registry, tools: list[ToolConfig], base: Loc) -> list[ConfigProblem]:
    """Unknown tool kinds, invalid tool options and argument schemas of ``tools`` (written at ``base``)."""
    problems: list[ConfigProblem] = []
    for index, tool in enumerate(tools):
        loc: Loc = (*base, index)
        registered = registry.tool_kinds.get(tool.kind)
        if registered is None:
            known = ", ".join(sorted(registry.tool_kinds)) or "none installed"
            problems.append(document.problem((*loc, "kind"), f"unknown tool kind '{tool.kind}' (known: {known})"))
            continue
        problems += _options_problems(document, registered.tool_kind.options, tool.options, loc)
        if tool.parameters is None and registered.tool_kind.parameters is None:
            problems.append(document.problem(loc, "a JSON Schema of the arguments is required (parameters:)"))
        elif tool.parameters is not None:
            try:
                compile_schema(tool.parameters)
            except ValueError as exc:
                problems.append(document.problem((*loc, "parameters"), str(exc)))
    return problems


def provider_problems(
    document: Document,
    registry: Registry,
    kind: str,
    name: str,
    options: dict[str, Any],
    loc: Loc,
) -> list[ConfigProblem]:
    registered = registry.get(kind, name)
    if registered is None:
        known = ", ".join(registry.names(kind)) or "none installed"
        # A plugin that failed to load is the likely reason: say so rather than just "unknown".
        why = "".join(f"; {problem}" for problem in registry.problems_naming(name))
        return [document.problem((*loc, "provider"), f"unknown provider '{name}' (known: {known}){why}")]
    return _options_problems(document, registered.provider.options, options, loc)


def _options_problems(
    document: Document, model: type[BaseModel], options: dict[str, Any], loc: Loc
) -> list[ConfigProblem]:
    base = (*loc, "options")
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return [pydantic_problem(document, model, base, options, err) for err in exc.errors()]
    return []


def pydantic_problem(document: Document, model: type[BaseModel], base: Loc, data: Any, err: Any) -> ConfigProblem:
    loc, owner = _resolve_loc(model, err["loc"], data)
    full = (*base, *loc)
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = ", ".join(owner.model_fields) if owner else "see `voxpipe schema`"
        message = f"unknown key '{loc[-1]}' (allowed: {allowed})"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("literal_error", "enum"):
        message = f"{err['input']!r} is not allowed (allowed: {_alternatives(ctx.get('expected', ''))})"
    elif kind == "union_tag_invalid":
        message = f"{ctx.get('tag')!r} is not allowed (allowed: {_alternatives(ctx.get('expected_tags', ''))})"
    elif kind == "union_tag_not_found":
        message = f"'{ctx.get('discriminator', '').strip(chr(39))}' is required"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
    return document.problem(full, message)


def _alternatives(expected: str) -> str:
    return ", ".join(part.strip().strip("'") for part in re.split(r",| or ", expected) if part.strip())


def _resolve_loc(model: type[BaseModel], loc: Loc, data: Any) -> tuple[Loc, type[BaseModel] | None]:
    """Map pydantic's error location onto the file's key path, and find the model owning the last key.

    Pydantic adds union tags to locations (``turn.silence.timeout_secs``) and sees a role written as one
    mapping as a one-item list (``stt[0]``); the file has neither.
    """
    out: list[str | int] = []
    annotation: Any = model
    owner: type[BaseModel] | None = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        candidates = _flatten(annotation)
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        alternatives = [c for c in candidates if c is not type(None)]
        if isinstance(part, str) and len(alternatives) > 1 and models and parts:
            annotation = next((m for m in models if _tag_of(m) == part), models[0])
            continue  # a union tag: not a key in the file
        if isinstance(part, int):
            element = next((typing.get_args(c)[0] for c in candidates if typing.get_origin(c) is list), Any)
            annotation = element
            if isinstance(data, Mapping):
                continue  # one mapping standing for a list of one
            out.append(part)
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        owner = models[0] if models else None
        out.append(part)
        field = owner.model_fields.get(part) if owner else None
        annotation = field.annotation if field else Any
        data = data.get(part) if isinstance(data, Mapping) else None
    return tuple(out), owner


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("strategy")
    return typing.get_args(field.annotation)[0] if field and typing.get_args(field.annotation) else None


def _flatten(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, looking through ``Annotated``, ``Optional`` and unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _flatten(arg)]
    return [annotation]
