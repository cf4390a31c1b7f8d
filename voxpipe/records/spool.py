"""Call records the store could not take when their call ended, kept on local disk until it can.

A call's record is written as the call ends. If the store fails then (PostgreSQL restarting or out of reach, a
locked, full or corrupt SQLite file), ``RecordKeeper.keep`` tries again a few times (``RETRY_DELAYS_SECS``), and
then appends the record to a spool: a JSON-lines file on the server's own disk (``spool_path``), with a warning
that names it. The spool goes to the store, oldest record first, after the next record the store takes and when
``voxpipe serve`` or the bridge worker starts, so a record outlives an outage of its store and a restart of the
server. Only when the spool cannot be written either is the record logged whole, at error level, the last place it
can go.

Several processes may share one spool (the workers of a host): each append and each drain holds an exclusive
lock on the file. Saving a record twice is harmless: a record replaces the one of the same call id (``save``
joins it to the same call's earlier connections first, as it would have on time).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from pydantic import ValidationError

from voxpipe.records.model import CallRecord
from voxpipe.records.store import RecordStore, RecordStoreError
from voxpipe.retrying import succeeds_within

RETRY_DELAYS_SECS = (0.5, 2.0)  # the waits between a record's attempts, before it is spooled
SPOOL_VARIABLE = "VOXPIPE_RECORDS_SPOOL"
DEFAULT_SPOOL = "voxpipe-records-spool.jsonl"

Save = Callable[[CallRecord], None]


def spool_path(store: RecordStore) -> Path:
    """Where records wait for ``store``: ``$VOXPIPE_RECORDS_SPOOL``, else beside a SQLite file, else (PostgreSQL)
    in the working directory (the Docker image's writable data folder)."""
    if os.environ.get(SPOOL_VARIABLE):
        return Path(os.environ[SPOOL_VARIABLE])
    if store.path is not None:
        return store.path.with_name(store.path.name + ".spool.jsonl")
    return Path(DEFAULT_SPOOL)


class RecordSpool:
    """A JSON-lines file of records waiting for their store, shared safely by the processes of one host."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # (releases the lock)

    def add(self, record: CallRecord) -> None:
        """Append ``record`` (``OSError`` if the file cannot be written)."""
        line = record.model_dump_json().encode() + b"\n"
        with self._locked() as fd:
            os.write(fd, line)

    def _empty(self) -> bool:
        """Nothing waits (read without the lock: a record added meanwhile waits for the next drain)."""
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def waiting(self) -> int:
        """How many records wait in the spool."""
        if self._empty():
            return 0
        with self._locked() as fd, os.fdopen(os.dup(fd), "rb") as spooled:
            return sum(1 for line in spooled if line.strip())

    def drain(self, save: Save) -> int:
        """Save the spooled records, oldest first, until the store refuses one: that one and those after it stay
        (``RecordStoreError`` is not raised). A line that is not a record is logged and dropped. Returns how
        many were saved."""
        if self._empty():
            return 0
        with self._locked() as fd:
            with os.fdopen(os.dup(fd), "rb") as spooled:
                lines = [line for line in spooled.read().splitlines() if line.strip()]
            saved = 0
            for line in lines:
                try:
                    record = CallRecord.model_validate_json(line)
                except ValidationError as exc:
                    logger.error(f"record spool {self.path}: a line that is not a call record was dropped: {exc}")
                    saved += 1
                    continue
                try:
                    save(record)
                except RecordStoreError as exc:
                    logger.warning(f"record spool {self.path}: {len(lines) - saved} records still wait: {exc}")
                    break
                saved += 1
            os.ftruncate(fd, 0)  # (appends go to the new end: O_APPEND)
            os.write(fd, b"".join(line + b"\n" for line in lines[saved:]))
        if saved:
            logger.info(f"record spool {self.path}: {saved} waiting records saved to the store")
        return saved


@dataclass(frozen=True)
class RecordKeeper:
    """Saves records with ``save``, and spools in ``spool`` those the store cannot take."""

    save: Save
    spool: RecordSpool

    async def keep(self, record: CallRecord) -> None:
        """Save ``record`` (off the event loop, which carries every other call's audio), retrying while the store
        fails, then spooling it; once the store takes it, the spool's waiting records follow. Never raises."""
        problems: list[RecordStoreError] = []

        async def attempt() -> bool:
            try:
                await asyncio.to_thread(self.save, record)
            except RecordStoreError as exc:
                problems.append(exc)
                return False
            return True

        def retrying(delay: float) -> None:
            logger.warning(f"call {record.call_id}: its record not saved ({problems[-1]}); trying again in {delay:g}s")

        if await succeeds_within(attempt, RETRY_DELAYS_SECS, retrying):
            await self.save_spooled()
        else:
            await asyncio.to_thread(_spool, self.spool, record, problems[-1])

    async def save_spooled(self) -> None:
        """Save what waits in the spool, oldest first, while the store takes it (``voxpipe serve`` does at start:
        records of calls that ended while the store was down). Never raises: a spool that cannot be read or
        rewritten is logged, and what it holds waits there."""
        try:
            await asyncio.to_thread(self.spool.drain, self.save)
        except OSError as exc:
            logger.error(f"record spool {self.spool.path} could not be saved to the store: {exc}")


def _spool(spool: RecordSpool, record: CallRecord, problem: RecordStoreError) -> None:
    try:
        spool.add(record)
    except OSError as exc:
        logger.error(
            f"call {record.call_id}: its record could be neither saved ({problem}) nor spooled ({exc}); "
            f"here it is: {record.model_dump_json()}"
        )
        return
    logger.warning(
        f"call {record.call_id}: the record store failed ({problem}); the record waits in {spool.path} and is "
        "saved once the store takes a record again"
    )
