"""``voxpipe serve CONFIG... [--host] [--port] [--workers N]``: load the deployment files and run the app.

One event loop carries every call of a process, so one process uses one core. ``--workers N`` (default: one
per core this process may run on) starts N worker processes under uvicorn's supervisor, all accepting on the
same listening socket; the kernel spreads new connections across them. A call belongs to the worker that
accepted its WebSocket; what must be seen by all workers lives outside them:

- sessions in the deployment's store (``sessions: {store: redis}`` for a fleet; the SQLite default file is
  shared by the workers of one host), so a call that reconnects resumes on whichever worker accepts it;
- ``/metrics`` in prometheus_client's multiprocess mode: every worker writes its numbers under one folder
  (``$PROMETHEUS_MULTIPROC_DIR``, made here unless given) and a scrape of any worker reads them all;
- a failing provider's cooldown in the session store's Redis, when there is one (``pipeline.fallback``).

A worker is a fresh interpreter (spawned): it gets the configuration files through ``VOXPIPE_SERVE_CONFIGS``
and builds its own app (``worker_app``). SIGTERM to the supervisor reaches every worker, each of which drains
its calls (``voxpipe.web.drain``) before it exits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from fastapi import FastAPI
from loguru import logger

from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import load_deployment
from voxpipe.config.models import Deployment
from voxpipe.records.prometheus import MULTIPROCESS_DIR_VARIABLE
from voxpipe.security.tokens import SECRET_VARIABLE

CONFIGS_VARIABLE = "VOXPIPE_SERVE_CONFIGS"
ORIGINS_VARIABLE = "VOXPIPE_SERVE_PAGE_ORIGINS"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_workers() -> int:
    """One worker per core this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_all(config_paths: Sequence[str | Path]) -> list[Deployment]:
    """Every deployment file, or one ``ConfigError`` with all their problems."""
    deployments, problems = [], []
    for path in config_paths:
        try:
            deployments.append(load_deployment(path))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return deployments


def loopback_origins(host: str, port: int) -> list[str]:
    """The page origins of a server listening on loopback only (``http://localhost:8000``...): only a browser
    on this machine reaches it there, so its pages may get session tokens without listing them. Nothing when
    it listens on another address: list the page origins in ``transport.browser.allowed_origins``."""
    if host not in LOOPBACK_HOSTS:
        return []
    return [f"http://{name}:{port}" for name in ("localhost", "127.0.0.1", "[::1]")]


def local_signing_secret(host: str, environ: MutableMapping[str, str]) -> bool:
    """A server on loopback without ``VOXPIPE_SIGNING_SECRET`` makes a throw-away one for this run (its workers
    inherit it), so the page at ``http://localhost:8000/`` gets its session tokens with nothing to set up.
    Anywhere else the secret must be given (every server of a deployment shares it). Whether one was made."""
    if host not in LOOPBACK_HOSTS or environ.get(SECRET_VARIABLE):
        return False
    environ[SECRET_VARIABLE] = secrets.token_urlsafe(48)
    logger.warning(f"{SECRET_VARIABLE} is not set: this loopback server signs tokens with a throw-away secret")
    return True


def build_app(deployments: Sequence[Deployment], page_origins: Sequence[str] = ()) -> FastAPI:
    """The app, each deployment's calls recorded where its ``records:`` section says (else ``$VOXPIPE_RECORDS``
    or the default file: what ``voxpipe calls`` and ``report`` read); deployments naming one place share it."""
    from voxpipe.records.store import RecordStore
    from voxpipe.web.app import create_app

    opened: dict[str | None, RecordStore] = {}

    def records_of(deployment: Deployment) -> RecordStore:
        target = deployment.records.target()
        return opened.get(target) or opened.setdefault(target, RecordStore(target))

    return create_app(deployments, records=records_of, page_origins=page_origins)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's factory), from the files the supervisor validated."""
    origins = os.environ.get(ORIGINS_VARIABLE, "").split()
    return build_app(load_all(os.environ[CONFIGS_VARIABLE].split(os.pathsep)), origins)


def serve(
    config_paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, workers: int | None = None
) -> None:
    """Validate every file first (all problems at once, as ``ConfigError``), then serve until stopped."""
    deployments = load_all(config_paths)
    workers = workers or default_workers()
    import uvicorn

    from voxpipe.transports.json_socket import MAX_FRAME_BYTES

    # The app closes larger frames itself under any server (json_socket); uvicorn refuses them before
    # buffering them, so one client cannot make the server hold more than this (1009). WebSocket compression
    # is declined: a call's messages are base64 audio, 50 a second each way, which deflate shrinks little for
    # a sixth of the server's CPU per call (benchmarks/call_cpu.py).
    options = {
        "host": host,
        "port": port,
        "ws_max_size": MAX_FRAME_BYTES,
        "ws_per_message_deflate": False,
        "log_level": "info",
    }
    origins = loopback_origins(host, port)
    local_signing_secret(host, os.environ)
    if workers == 1:
        uvicorn.run(build_app(deployments, origins), **options)
        return
    os.environ[ORIGINS_VARIABLE] = " ".join(origins)
    os.environ[CONFIGS_VARIABLE] = os.pathsep.join(str(Path(p).resolve()) for p in config_paths)
    made_metrics_dir = MULTIPROCESS_DIR_VARIABLE not in os.environ
    metrics_dir = os.environ.setdefault(MULTIPROCESS_DIR_VARIABLE, tempfile.mkdtemp(prefix="voxpipe-metrics-"))
    for stale in Path(metrics_dir).glob("*.db"):  # a previous run's numbers are not this one's
        stale.unlink()
    try:
        uvicorn.run("voxpipe.web.serve:worker_app", factory=True, workers=workers, **options)
    finally:
        if made_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
