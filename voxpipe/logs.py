"""Where voxpipe's own log lines go when it runs as a command: standard error at the level VOXPIPE_LOG_LEVEL names.

The sink writes to ``sys.stderr`` as it is when a line is written, not as it was when the sink was added: a command
run in-process (tests, notebooks) may swap standard error and close the old stream, and loguru would then report
"I/O operation on closed file" for every later line.
"""

from __future__ import annotations

import os
import sys

from loguru import logger


def _write_to_stderr(message: str) -> None:
    sys.stderr.write(message)


def log_to_stderr(default_level: str = "WARNING") -> int:
    """Send loguru (and so pipecat's DEBUG frame chatter) to standard error at VOXPIPE_LOG_LEVEL or ``default_level``;
    returns the handler id."""
    return logger.add(_write_to_stderr, level=os.environ.get("VOXPIPE_LOG_LEVEL", default_level))
