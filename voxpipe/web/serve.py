"""``voxpipe serve CONFIG... [--host] [--port]``: load the deployment files and run the app under uvicorn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import load_deployment


def serve(config_paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000) -> None:
    """Validate every file first (all problems at once, as ``ConfigError``), then serve until interrupted."""
    deployments, problems = [], []
    for path in config_paths:
        try:
            deployments.append(load_deployment(path))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)

    import uvicorn

    from voxpipe.records.store import RecordStore
    from voxpipe.transports.json_socket import MAX_FRAME_BYTES
    from voxpipe.web.app import create_app

    app = create_app(deployments, records=RecordStore())  # the store `voxpipe calls` and `report` read
    # The app closes larger frames itself under any server (json_socket); uvicorn refuses them before
    # buffering them, so one client cannot make the server hold more than this (1009).
    uvicorn.run(app, host=host, port=port, ws_max_size=MAX_FRAME_BYTES, log_level="info")
