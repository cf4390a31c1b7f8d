"""Where a deployment holds a credential, and whether the file writes it out instead of reading the environment.

A credential is any of:

- a field typed ``SecretStr`` (``api_key`` of every cloud provider, ``transport.twilio.auth_token``), in the
  deployment, a provider's options or a tool's options;
- a value under a key that names a credential, whatever its type (``headers: {Authorization: ...}`` of an
  http tool, ``x-api-key``, ``password``, ``client_secret``, ``aws_session_token``, ...);
- the password of a URL (``redis://:hunter2@host``), and a value shaped like a well-known key (``sk-...``,
  ``AKIA...``) wherever it is.

It must come from ``${VAR}``: written out, or as the default of ``${VAR:-default}`` (which ends up in the
file, in git and in the container image all the same), it is refused. Experiment variant overrides are
checked like the rest of the file: a variant is a way to ship a second key, not a way round the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationError

from voxpipe.envvars import has_inline_default, names_in

if TYPE_CHECKING:
    from voxpipe.config.models import Deployment
    from voxpipe.providers.registry import Registry

Loc = tuple[str | int, ...]
ROLES = ("stt", "llm", "tts", "realtime")

CREDENTIAL_KEY = re.compile(
    r"(?:^|[-_])(?:authorization|api[-_]?key|apikey|token|secret|password|passwd|cookie|credentials?"
    r"|private[-_]?key|access[-_]?key|secret[-_]?key)$",
    re.IGNORECASE,
)
KNOWN_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16})\b")


def typed_secret_locs(deployment: Deployment, registry: Registry) -> list[Loc]:
    """Every ``SecretStr`` that was set, in the deployment and in the options its plugins validate.

    Locations are canonical: a role's providers are always indexed (``("stt", 0, "options", "api_key")``).
    """
    found = _model_secret_locs(deployment)
    for role in ROLES:
        for index, service in enumerate(deployment.services(role)):
            registered = registry.get(role, service.provider)
            if registered is not None:
                found += _options_secret_locs(registered.provider.options, service.options, (role, index, "options"))
    vad = registry.get("vad", deployment.vad.provider)
    if vad is not None:
        found += _options_secret_locs(vad.provider.options, deployment.vad.options, ("vad", "options"))
    for index, tool in enumerate(deployment.agent.tools):
        kind = registry.tool_kinds.get(tool.kind)
        if kind is not None:
            found += _options_secret_locs(kind.tool_kind.options, tool.options, ("agent", "tools", index, "options"))
    return found


def _options_secret_locs(model: type[BaseModel], options: dict[str, Any], loc: Loc) -> list[Loc]:
    try:
        return _model_secret_locs(model.model_validate(options), loc)
    except ValidationError:
        return []  # reported by the options check


def _model_secret_locs(model: BaseModel, loc: Loc = ()) -> list[Loc]:
    found: list[Loc] = []
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append((*loc, name))
        elif isinstance(value, BaseModel):
            found += _model_secret_locs(value, (*loc, name))
    return found


def credential_locs(data: Any, loc: Loc = ()) -> Iterator[Loc]:
    """String values of ``data`` that carry a credential by their key, a URL password or their shape."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if isinstance(value, str) and value and CREDENTIAL_KEY.search(str(key)):
                yield (*loc, key)
            else:
                yield from credential_locs(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from credential_locs(value, (*loc, index))
    elif isinstance(data, str) and (_url_password(data) or KNOWN_KEY_SHAPES.search(data)):
        yield loc


def _url_password(text: str) -> str | None:
    if "://" not in text:
        return None
    try:
        return urlsplit(text).password
    except ValueError:
        return None


def written_out(raw: str | None) -> bool:
    """Whether the file's text ``raw`` holds the credential itself rather than a ``${VAR}`` reading it.

    For a URL only its password counts (``redis://:${REDIS_PASSWORD}@${REDIS_HOST}`` is fine).
    """
    if raw is None:
        return True
    text = _url_password(raw) or raw
    return not names_in(text) or has_inline_default(text)


def written_loc(data: Mapping[str, Any], loc: Loc) -> Loc | None:
    """Where, in raw ``data`` (a file, a variant's overrides), the value at canonical ``loc`` is (None: not there).

    A role written as one mapping (``llm: {options: ...}``) has no index in the file.
    """
    node: Any = data
    out: list[str | int] = []
    for position, part in enumerate(loc):
        if position == 1 and loc[0] in ROLES and isinstance(node, Mapping) and isinstance(part, int):
            continue
        present = part in node if isinstance(node, Mapping) else isinstance(part, int) and part < len(node)
        if not isinstance(node, Mapping | list) or not present:
            return None
        node = node[part]
        out.append(part)
    return tuple(out)


def secret_variables(deployment: Deployment, raw: Any, registry: Registry) -> set[str]:
    """The ``${VAR}`` names the file ``raw`` (its un-interpolated YAML data) reads into credentials.

    ``voxpipe deploy sam`` keeps these in Secrets Manager and the other variables in Parameter Store.
    """
    raw = raw if isinstance(raw, Mapping) else {}
    locs = list(credential_locs(raw))
    locs += [loc for typed in typed_secret_locs(deployment, registry) if (loc := written_loc(raw, typed))]
    names: set[str] = set()
    for loc in locs:
        node: Any = raw
        for part in loc:
            node = node[part]
        if isinstance(node, str):
            names.update(names_in(node))
    return names
