"""``${VAR}``, ``${VAR:-default}`` and ``$${literal}`` in configuration strings: how secrets reach voxpipe.

Dependency-free, so the config loader and the Lambda handlers (which must start fast, without pydantic)
share one definition of the syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

PATTERN = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(text: str, environ: Mapping[str, str], missing: Callable[[str], str]) -> tuple[str, bool]:
    """``text`` with its variables filled from ``environ``, and whether it read any variable.

    An unset variable without a default is replaced by ``missing(name)`` (which may raise).
    """
    used = False

    def one(match: re.Match[str]) -> str:
        nonlocal used
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        used = True
        if name in environ:
            return environ[name]
        return default if default is not None else missing(name)

    return PATTERN.sub(one, text), used


def names_in(text: str) -> list[str]:
    """The variables ``text`` reads (escaped ``$${...}`` excluded), in order."""
    return [match.group(2) for match in PATTERN.finditer(text) if not match.group(1)]


def has_inline_default(text: str) -> bool:
    """Whether ``text`` writes a non-empty ``${VAR:-default}``: a value kept in the file, not the environment."""
    return any(match.group(3) for match in PATTERN.finditer(text) if not match.group(1))
