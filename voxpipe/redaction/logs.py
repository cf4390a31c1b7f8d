"""Log lines pass through every active call's ``Redactor`` before any sink sees them (a loguru patcher).

pipecat logs transcripts and LLM text at DEBUG; voxpipe logs errors that may quote the caller. A call with
``redact:`` registers its redactor for its lifetime (``redacting_logs``); the patcher, installed once per
process, masks each record's message with all of them. With no active call it returns at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from voxpipe.redaction import Redactor

_active: weakref.WeakSet[Redactor] = weakref.WeakSet()
_installed = False


def _patch(record: Any) -> None:
    for redactor in list(_active):
        record["message"] = redactor.text(record["message"])


@contextmanager
def redacting_logs(redactor: Redactor) -> Iterator[None]:
    """Mask ``redactor``'s data in every log line while the block runs."""
    global _installed
    if not _installed:
        logger.configure(patcher=_patch)
        _installed = True
    _active.add(redactor)
    try:
        yield
    finally:
        _active.discard(redactor)
