"""``voxpipe serve CONFIG... [--host] [--port]``: load the deployment files and run the app under uvicorn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voxpipe.config.errors import ConfigError
from voxpipe.config.loader import load_deployment

WS_MAX_BYTES = 1 << 20


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
    from voxpipe.web.app import create_app

    app = create_app(deployments, records=RecordStore())  # the store `voxpipe calls` and `report` read
    # Twilio's and the page's messages are a few hundred bytes: a megabyte is plenty, and bounds what one
    # client can make the server buffer (larger frames close that connection with 1009).
    uvicorn.run(app, host=host, port=port, ws_max_size=WS_MAX_BYTES, log_level="info")
