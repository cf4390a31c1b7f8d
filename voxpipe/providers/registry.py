"""Discovers provider and tool-kind plugins from the ``voxpipe`` entry-point group.

Each entry point is loaded and called on its own, so a plugin that fails to import, raises, or claims a
name already taken is reported in ``problems`` and the rest keep working. Earlier registrations win; built-in
plugins are registered first (they are entry points of the ``voxpipe`` distribution itself).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import pluggy

from voxpipe.providers.spec import KINDS, PROJECT, Hooks, Kind, Provider, ToolKind


@dataclass(frozen=True)
class Registered:
    """A provider together with the distribution that shipped it."""

    provider: Provider
    package: str
    version: str


@dataclass(frozen=True)
class RegisteredTool:
    tool_kind: ToolKind
    package: str
    version: str


@dataclass
class Registry:
    """Every provider and tool kind this process knows, and what went wrong while loading them."""

    providers: dict[tuple[Kind, str], Registered] = field(default_factory=dict)
    tool_kinds: dict[str, RegisteredTool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> Registered | None:
        return self.providers.get((kind, name))  # type: ignore[arg-type]

    def problems_naming(self, name: str) -> list[str]:
        """The load problems of plugins that may be where provider ``name`` comes from: those whose entry point or
        module is named after it (``openai`` matches ``openai_llm = voxpipe.providers.builtin.openai_llm``)."""
        wanted = name.lower().split("_")
        found = []
        for problem in self.problems:
            words = re.split(r"[^a-z0-9]+", problem.split(" (", 1)[0].lower())
            if any(words[i : i + len(wanted)] == wanted for i in range(len(words))):
                found.append(problem)
        return found

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self.providers if k == kind)

    def add_plugin(self, plugin: object, package: str, version: str, label: str | None = None) -> None:
        """Register one plugin object (a module or any object with ``@hookimpl`` functions)."""
        label = label or getattr(plugin, "__name__", repr(plugin))
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(Hooks)
        try:
            manager.register(plugin, name=label)
            manager.check_pending()
        except Exception as exc:  # a plugin with unknown or malformed hooks
            self.problems.append(f"plugin {label} ({package}): {exc}")
            return
        for impl in manager.hook.voxpipe_providers.get_hookimpls():
            for provider in self._call(impl.function, label, package):
                self._add_provider(provider, label, package, version)
        for impl in manager.hook.voxpipe_tool_kinds.get_hookimpls():
            for tool_kind in self._call(impl.function, label, package):
                self._add_tool_kind(tool_kind, label, package, version)

    def _call(self, hook: object, label: str, package: str) -> Iterable:
        try:
            return list(hook() or [])  # type: ignore[operator]
        except Exception as exc:
            self.problems.append(f"plugin {label} ({package}) failed while registering: {exc!r}")
            return []

    def _add_provider(self, provider: object, label: str, package: str, version: str) -> None:
        if not isinstance(provider, Provider) or provider.kind not in KINDS:
            self.problems.append(f"plugin {label} ({package}) returned {provider!r}, not a voxpipe Provider")
            return
        key = (provider.kind, provider.name)
        if key in self.providers:
            taken = self.providers[key].package
            self.problems.append(
                f"plugin {label} ({package}): {provider.kind} provider '{provider.name}' is already "
                f"registered by {taken}; ignored"
            )
            return
        self.providers[key] = Registered(provider, package, version)

    def _add_tool_kind(self, tool_kind: object, label: str, package: str, version: str) -> None:
        if not isinstance(tool_kind, ToolKind):
            self.problems.append(f"plugin {label} ({package}) returned {tool_kind!r}, not a voxpipe ToolKind")
            return
        if tool_kind.name in self.tool_kinds:
            taken = self.tool_kinds[tool_kind.name].package
            self.problems.append(
                f"plugin {label} ({package}): tool kind '{tool_kind.name}' is already registered by {taken}; ignored"
            )
            return
        self.tool_kinds[tool_kind.name] = RegisteredTool(tool_kind, package, version)


def _package_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    return (dist.name, dist.version) if dist is not None else ("unknown", "?")


def discover(group: str = PROJECT) -> Registry:
    """Load every plugin of the entry-point group, voxpipe's own first."""
    registry = Registry()
    points = sorted(entry_points(group=group), key=lambda ep: (_package_of(ep)[0] != PROJECT, ep.name))
    for entry_point in points:
        package, version = _package_of(entry_point)
        label = f"{entry_point.name} = {entry_point.value}"
        try:
            plugin: ModuleType | object = entry_point.load()
        except Exception as exc:
            registry.problems.append(f"plugin {label} ({package}) failed to import: {exc!r}")
            continue
        registry.add_plugin(plugin, package, version, label)
    return registry


@functools.cache
def default_registry() -> Registry:
    """The process-wide registry, discovered once."""
    return discover()
