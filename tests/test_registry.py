"""Plugin discovery: the voxpipe-testkit distribution is found through its entry point, broken plugins are
reported without stopping the others, and ``voxpipe providers`` shows all of it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from voxpipe.config.loader import parse_deployment
from voxpipe.providers.registry import Registry, discover
from voxpipe.providers.spec import AudioFormat, Provider, ServiceRequest, hookimpl

BROKEN_DIR = Path(__file__).resolve().parent / "plugins" / "voxpipe-broken"
TESTKIT = {
    ("stt", "testkit_stt"),
    ("llm", "testkit_llm"),
    ("tts", "testkit_tts"),
    ("realtime", "testkit_realtime"),
    ("vad", "testkit_vad"),
}
IMPORT_PROBLEM = (
    "plugin broken = voxpipe_broken.fails_on_import (voxpipe-broken) failed to import: "
    "RuntimeError('voxpipe-broken fails on import on purpose')"
)
# The entry point sorts after voxpipe-testkit's ("testkit"), so the testkit keeps its names: earlier wins.
DUPLICATE_PROBLEM = (
    "plugin zz-duplicate = voxpipe_broken.duplicate (voxpipe-broken): llm provider 'testkit_llm' is already "
    "registered by voxpipe-testkit; ignored"
)


@pytest.fixture(scope="module")
def discovered(registry: Registry) -> Registry:
    """A fresh discovery of the installed plugins (independent of the cached process registry)."""
    return discover()


# --------------------------------------------------------------------------------------------- the testkit


def test_testkit_is_discovered_with_its_distribution_name_and_version(discovered: Registry) -> None:
    found = {key: r for key, r in discovered.providers.items() if r.package == "voxpipe-testkit"}

    assert set(found) == TESTKIT
    assert {r.version for r in found.values()} == {version("voxpipe-testkit")} == {"0.1.0"}
    assert all(r.provider.description for r in found.values())


def test_builtin_providers_are_still_voxpipes(discovered: Registry) -> None:
    silero = discovered.get("vad", "silero")

    assert silero is not None and silero.package == "voxpipe"
    assert {name for name, t in discovered.tool_kinds.items() if t.package == "voxpipe"} >= {"http", "python"}


@pytest.mark.parametrize("kind", ["stt", "llm", "tts", "realtime"])
def test_testkit_declares_dated_nonzero_prices(discovered: Registry, kind: str) -> None:
    registered = discovered.get(kind, f"testkit_{kind}")
    assert registered is not None

    prices = registered.provider.prices_for("some-model-nobody-listed")

    assert prices is not None and prices == registered.provider.prices_for(None)
    assert prices.source == "voxpipe-testkit fixture" and prices.as_of == date(2026, 11, 1)
    amounts = [v for k, v in prices.model_dump().items() if k.startswith("per_") and v is not None]
    assert amounts and all(amount > 0 for amount in amounts)


def test_plugin_module_is_cheap_to_import() -> None:
    """The plugin contract: importing a plugin module must not import pipecat (``voxpipe validate`` stays light)."""
    code = "import sys, voxpipe_testkit.plugin; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipecat'))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input

    assert result.stdout.strip() == "[]"


TESTKIT_CASCADE = """\
name: testkit-cascade
agent:
  instructions: Only say scripted things.
vad: {provider: testkit_vad, options: {energy_threshold_dbfs: -35}}
stt: {provider: testkit_stt, options: {transcripts: [hello]}}
llm:
  provider: testkit_llm
  options:
    replies: [{when: hello, say: Hi there}]
tts: {provider: testkit_tts, options: {secs_per_char: 0.01}}
"""

TESTKIT_REALTIME = """\
name: testkit-realtime
mode: realtime
agent:
  instructions: Only say scripted things.
realtime:
  provider: testkit_realtime
  model: scripted-realtime-2
  options: {transcripts: [hello], replies: [{when: "*", say: Hi}]}
"""


@pytest.mark.parametrize("text", [TESTKIT_CASCADE, TESTKIT_REALTIME], ids=["cascade", "realtime"])
def test_testkit_providers_are_usable_from_yaml(text: str, registry: Registry) -> None:
    deployment = parse_deployment(text, "testkit.yaml", environ={})

    names = {(role, s.provider) for role in (*deployment.roles(), "vad") for s in _services(deployment, role)}
    assert names <= TESTKIT | {("vad", "silero")}


def _services(deployment: Any, role: str) -> list[Any]:
    return [deployment.vad] if role == "vad" else deployment.services(role)


def _request(registry: Registry, role: str, text: str) -> tuple[Provider, ServiceRequest[Any]]:
    deployment = parse_deployment(text, "testkit.yaml", environ={})
    config = deployment.vad if role == "vad" else deployment.services(role)[0]
    registered = registry.get(role, config.provider)
    assert registered is not None
    provider = registered.provider
    model = getattr(config, "model", None) or provider.default_model
    request = ServiceRequest(
        call_id="test-call",
        model=model,
        options=provider.options.model_validate(config.options),
        agent=deployment.agent,
        vad=deployment.vad.resolved(),
        audio=AudioFormat(),
    )
    return provider, request


@pytest.mark.parametrize(
    ("role", "text", "base"),
    [
        ("stt", TESTKIT_CASCADE, STTService),
        ("llm", TESTKIT_CASCADE, LLMService),
        ("tts", TESTKIT_CASCADE, TTSService),
        ("vad", TESTKIT_CASCADE, VADAnalyzer),
        ("realtime", TESTKIT_REALTIME, LLMService),
    ],
    ids=["stt", "llm", "tts", "vad", "realtime"],
)
def test_testkit_builds_real_pipecat_services(registry: Registry, role: str, text: str, base: type) -> None:
    provider, request = _request(registry, role, text)

    service = provider.build(request)

    assert isinstance(service, base)
    if isinstance(service, LLMService):
        assert service.system_instruction == "Only say scripted things."  # type: ignore[attr-defined]
        assert service.settings.model == request.model
    if role == "realtime":
        assert service.settings.model == "scripted-realtime-2"
        assert service.service_metadata_frame().is_realtime_service


# --------------------------------------------------------------------------------------------- broken plugins


@pytest.fixture
def broken_modules(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Make the ``voxpipe_broken`` modules importable for one test (and forget them afterwards).

    Depends on ``registry`` so the cached process registry was discovered before this path is active.
    """
    monkeypatch.syspath_prepend(str(BROKEN_DIR))
    yield BROKEN_DIR
    for name in [m for m in sys.modules if m.split(".")[0] == "voxpipe_broken"]:
        del sys.modules[name]


def test_duplicate_name_is_reported_and_the_rest_of_the_plugin_still_registers(broken_modules: Path) -> None:
    duplicate = importlib.import_module("voxpipe_broken.duplicate")
    registry = discover()

    registry.add_plugin(duplicate, "voxpipe-broken", "0.1.0")

    assert registry.problems[-1] == (
        "plugin voxpipe_broken.duplicate (voxpipe-broken): llm provider 'testkit_llm' is already registered "
        "by voxpipe-testkit; ignored"
    )
    kept = registry.get("llm", "testkit_llm")
    assert kept is not None and kept.package == "voxpipe-testkit"
    fresh = registry.get("stt", "broken_echo_stt")
    assert fresh is not None and (fresh.package, fresh.version) == ("voxpipe-broken", "0.1.0")


class _RaisingHook:
    @hookimpl
    def voxpipe_providers(self) -> list[Provider]:
        raise ValueError("cannot list providers today")


class _NotAProvider:
    @hookimpl
    def voxpipe_providers(self) -> list[Any]:
        return [{"name": "dict_stt", "kind": "stt"}]


class _UnknownHook:
    @hookimpl
    def voxpipe_voices(self) -> list[Any]:
        return []


def test_plugins_that_raise_or_return_garbage_are_reported(discovered: Registry) -> None:
    registry = discover()
    before = dict(registry.providers)

    registry.add_plugin(_RaisingHook(), "pkg-raises", "1", label="raises")
    registry.add_plugin(_NotAProvider(), "pkg-garbage", "1", label="garbage")
    registry.add_plugin(_UnknownHook(), "pkg-unknown", "1", label="unknown")

    assert registry.problems[-3] == (
        "plugin raises (pkg-raises) failed while registering: ValueError('cannot list providers today')"
    )
    assert registry.problems[-2] == (
        "plugin garbage (pkg-garbage) returned {'name': 'dict_stt', 'kind': 'stt'}, not a voxpipe Provider"
    )
    assert registry.problems[-1].startswith("plugin unknown (pkg-unknown): ")
    assert "voxpipe_voices" in registry.problems[-1]
    assert registry.providers == before


@dataclass(frozen=True)
class BrokenDistribution:
    """A throw-away ``voxpipe-broken`` distribution: its ``sys.path`` entries while active."""

    site: Path
    paths: list[str]

    @property
    def pythonpath(self) -> str:
        return ":".join(self.paths)


@pytest.fixture
def broken_distribution(broken_modules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BrokenDistribution:
    """``voxpipe-broken`` made discoverable for one test: a ``.dist-info`` with the two faulty entry points."""
    site = tmp_path / "site"
    dist_info = site / "voxpipe_broken-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxpipe-broken\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[voxpipe]\nbroken = voxpipe_broken.fails_on_import\nzz-duplicate = voxpipe_broken.duplicate\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return BrokenDistribution(site, [str(site), str(broken_modules)])


def test_discovery_reports_import_failure_and_duplicate_and_keeps_the_rest(
    broken_distribution: BrokenDistribution, discovered: Registry
) -> None:
    registry = discover()

    assert IMPORT_PROBLEM in registry.problems
    assert DUPLICATE_PROBLEM in registry.problems
    for kind, name in TESTKIT:
        found = registry.get(kind, name)
        assert found is not None and found.package == "voxpipe-testkit"
    echo = registry.get("stt", "broken_echo_stt")
    assert echo is not None and echo.package == "voxpipe-broken"
    # Everything the clean discovery found is still there.
    assert set(discovered.providers) <= set(registry.providers)
    assert set(discovered.tool_kinds) == set(registry.tool_kinds)


def test_deployment_still_validates_with_a_broken_plugin_installed(broken_distribution: BrokenDistribution) -> None:
    registry = discover()

    deployment = parse_deployment(TESTKIT_CASCADE, "testkit.yaml", environ={}, registry=registry)

    assert deployment.services("llm")[0].provider == "testkit_llm"


def test_a_deployment_naming_a_plugin_that_failed_to_import_gets_the_import_error(
    broken_distribution: BrokenDistribution, write_yaml: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    """Finding 4: ``validate``, ``call`` and ``serve`` said only "unknown provider"; the import error was hidden."""
    path = write_yaml(TESTKIT_CASCADE.replace("provider: testkit_stt", "provider: broken"))
    env = {"PYTHONPATH": broken_distribution.pythonpath}

    for command in (["validate", str(path)], ["call", str(path), "--say", "hi"], ["serve", str(path)]):
        result = run_cli(*command, env=env)
        assert result.returncode == 2, (command, result.stderr)
        assert "stt.provider: unknown provider 'broken'" in result.stderr
        assert IMPORT_PROBLEM in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------- CLI


def test_cli_providers_table_lists_the_testkit_package(run_cli: Callable[..., Any]) -> None:
    result = run_cli("providers", env={"COLUMNS": "200"})

    assert result.returncode == 0, result.stderr
    rows = {tuple(cell.strip() for cell in line.split("│")[1:4]) for line in result.stdout.splitlines() if "│" in line}
    for kind, name in TESTKIT:
        assert (name, kind, "voxpipe-testkit") in rows


def test_cli_providers_json_has_option_schemas_and_problems(
    broken_distribution: BrokenDistribution, run_cli: Callable[..., Any]
) -> None:
    result = run_cli("providers", "--json", env={"PYTHONPATH": broken_distribution.pythonpath})

    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    providers = {(p["kind"], p["name"]): p for p in listing["providers"]}
    llm = providers[("llm", "testkit_llm")]
    assert (llm["package"], llm["version"], llm["default_model"]) == ("voxpipe-testkit", "0.1.0", "scripted-llm-1")
    assert set(llm["options_schema"]["properties"]) == {"replies", "default_reply", "latency_secs", "tokens_per_sec"}
    assert llm["options_schema"]["additionalProperties"] is False
    assert providers[("stt", "broken_echo_stt")]["package"] == "voxpipe-broken"
    assert {t["name"] for t in listing["tools"]} >= {"http", "python", "end_call", "transfer"}
    assert IMPORT_PROBLEM in listing["problems"]
    assert DUPLICATE_PROBLEM in listing["problems"]
    warnings = result.stderr.splitlines()
    assert f"warning: {IMPORT_PROBLEM}" in warnings
    assert f"warning: {DUPLICATE_PROBLEM}" in warnings
    assert "Traceback" not in result.stderr
