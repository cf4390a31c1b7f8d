"""Fixtures shared by the whole test suite. Keep them generic; document each one.

The deterministic providers used by the pipeline tests come from the ``voxpipe-testkit`` plugin package
(``tests/plugins/voxpipe-testkit``), installed like any third-party plugin::

    pip install -e tests/plugins/voxpipe-testkit
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from voxpipe.providers.registry import Registry, default_registry

# pipecat logs every frame decision at DEBUG through loguru; tests keep warnings and errors only.
logger.remove()
logger.add(lambda line: sys.stderr.write(line), level=os.environ.get("VOXPIPE_TEST_LOG_LEVEL", "WARNING"))

REPO_ROOT = Path(__file__).resolve().parent.parent

# Signed deployments bind each Twilio socket to its webhook with tokens keyed by this secret
# (voxpipe.security.call_binding); the simulators mint theirs with it, as the server's TwiML would give them.
os.environ.setdefault("VOXPIPE_SIGNING_SECRET", "test-signing-secret-" + "s" * 32)
TESTKIT_INSTALL = "pip install -e tests/plugins/voxpipe-testkit"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``pyproject.toml`` and ``configs/`` live)."""
    return REPO_ROOT


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    """``write_yaml(text, name="deployment.yaml") -> Path``: write dedented YAML under ``tmp_path``.

    The text is dedented and stripped of leading newlines, so a test can indent it with its code; line 1 of
    the file is the first line of ``text``.
    """

    def write(text: str, name: str = "deployment.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    """``env(NAME="value", OTHER=None)``: set (or, with ``None``, unset) environment variables for one test.

    Returns a copy of the resulting ``os.environ``, handy as the ``environ`` argument of
    ``parse_deployment`` / ``load_deployment``.
    """

    def apply(**variables: str | None) -> dict[str, str]:
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return dict(os.environ)

    return apply


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """The process-wide plugin registry; fails with the install command if voxpipe-testkit is missing."""
    registered = default_registry()
    if registered.get("llm", "testkit_llm") is None:
        pytest.fail(f"the voxpipe-testkit plugin is not installed; run `{TESTKIT_INSTALL}`", pytrace=False)
    yield registered


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env=None, cwd=None, timeout=60)``: run ``voxpipe ARGS`` in a fresh interpreter.

    Uses ``python -m voxpipe.cli`` of the running interpreter and returns the completed process (text
    stdout/stderr, never raises on a non-zero exit). ``env`` entries are added to the current environment.
    """

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
            [sys.executable, "-m", "voxpipe.cli", *args],
            capture_output=True,
            text=True,
            cwd=cwd or REPO_ROOT,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )

    return run
