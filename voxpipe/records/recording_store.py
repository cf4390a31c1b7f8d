"""Where recordings go, and how they get there without touching the call: a bounded queue and a retrying worker.

``open_recording_store`` reads ``recording.store``: ``file://DIR`` (a folder; ``sweep`` deletes files past
``retention_days``) or ``s3://BUCKET/PREFIX`` (botocore; the endpoint follows the standard ``AWS_ENDPOINT_URL_S3``;
expiry is the bucket's lifecycle rule that ``voxpipe deploy sam`` writes).

Each connection of a call has a recording of its own, named by the call and the connection's start
(``recording_name``): a call that reconnects keeps the first connection's file beside the next one's.

A call hands its recording to the process's ``RecordingUploader`` and returns at once. One worker thread
builds each WAV and stores it, retrying with backoff; when the queue is full, or a store keeps failing, the
recording is dropped, logged and counted (``stats``, and ``voxpipe_recordings_total{outcome}`` on /metrics),
and no call ever waits for or fails because of it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from loguru import logger
from prometheus_client import Counter as PrometheusCounter

SWEEP_EVERY_SECS = 3600.0
OUTCOMES = ("stored", "retried", "failed", "dropped")
S3_TIMEOUT_SECS = 10.0  # connect and read: a hung store fails over to the next attempt instead of stalling


def recording_name(call_id: str, connection_started_at: datetime) -> str:
    """The name of one connection's recording: the call id, then when the connection started (UTC, to the
    microsecond), so names sort in call order and a reconnect never overwrites the earlier connection's file."""
    stamp = connection_started_at.astimezone(UTC) if connection_started_at.tzinfo else connection_started_at
    return f"{call_id}-{stamp:%Y%m%dT%H%M%S.%f}Z"


class RecordingStore(Protocol):
    def location(self, name: str) -> str:
        """Where the recording ``name`` (``recording_name``) will be (a URI shown in records and reports)."""
        ...

    def put(self, name: str, wav: bytes) -> None:
        """Store one recording; raises on failure (the uploader retries)."""
        ...

    def get(self, location: str) -> bytes:
        """Read a stored recording back (``voxpipe calls --verify``)."""
        ...


class FileStore:
    """Recordings as ``DIR/<name>.wav``."""

    def __init__(self, folder: str | Path, retention_days: int | None = None):
        self.folder = Path(folder).resolve()
        self.retention_days = retention_days
        self._swept_at = float("-inf")

    def location(self, name: str) -> str:
        return (self.folder / f"{name}.wav").as_uri()

    def put(self, name: str, wav: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.wav.part"
        partial.write_bytes(wav)
        partial.replace(self.folder / f"{name}.wav")  # a reader never sees half a file
        if time.monotonic() - self._swept_at > SWEEP_EVERY_SECS:
            self.sweep()

    def get(self, location: str) -> bytes:
        return Path(location.removeprefix("file://")).read_bytes()

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete recordings older than ``retention_days`` (every connection's file is a ``.wav`` of the
        folder, each aged by its own time); returns what was deleted."""
        self._swept_at = time.monotonic()
        if self.retention_days is None or not self.folder.is_dir():
            return []
        cutoff = (now or time.time()) - self.retention_days * 86400
        expired = [path for path in self.folder.glob("*.wav") if path.stat().st_mtime < cutoff]
        for path in expired:
            path.unlink(missing_ok=True)
        return expired


class S3Store:
    """Recordings as ``s3://BUCKET/PREFIX/<name>.wav``, with short timeouts so a hung store fails fast."""

    def __init__(self, bucket: str, prefix: str = "", timeout_secs: float | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.timeout_secs = timeout_secs or S3_TIMEOUT_SECS
        self._client = None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}.wav" if self.prefix else f"{name}.wav"

    def _s3(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            config = Config(
                connect_timeout=self.timeout_secs,
                read_timeout=self.timeout_secs,
                retries={"mode": "standard", "total_max_attempts": 1},  # the uploader owns retries
            )
            # what boto3.client("s3") makes, without boto3 (region and endpoint from the environment or config)
            self._client = botocore.session.get_session().create_client("s3", config=config)
        return self._client

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def put(self, name: str, wav: bytes) -> None:
        self._s3().put_object(Bucket=self.bucket, Key=self._key(name), Body=wav, ContentType="audio/wav")

    def get(self, location: str) -> bytes:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        return self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def open_recording_store(uri: str, retention_days: int | None = None) -> RecordingStore:
    """The store a ``recording.store`` URI names."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix)
    if uri.startswith("file://"):
        return FileStore(uri.removeprefix("file://"), retention_days)
    raise ValueError(f"recording store must be file://DIR or s3://BUCKET/PREFIX, not {uri!r}")


@dataclass(frozen=True)
class _Job:
    store: RecordingStore
    name: str
    build: Callable[[], bytes]


class RecordingUploader:
    """One worker thread storing recordings from a bounded queue, with retries. Never raises to a caller."""

    def __init__(self, max_queued: int = 64, attempts: int = 4, backoff_secs: float = 0.5):
        self.attempts = attempts
        self.backoff_secs = backoff_secs
        self.stats: Counter[str] = Counter()  # stored, retried, failed, dropped
        # The same counts for /metrics; a prometheus counter (not a collector reading ``stats``) so that with
        # ``voxpipe serve --workers N`` each worker writes them where the multiprocess scrape sums them.
        self.exported = PrometheusCounter(
            "voxpipe_recordings", "Call recordings by upload outcome.", ["outcome"], registry=None
        )
        for outcome in OUTCOMES:
            self.exported.labels(outcome)  # every outcome shows from the start, at 0
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, store: RecordingStore, name: str, build: Callable[[], bytes]) -> bool:
        """Queue the recording ``name`` (``build`` makes its WAV, on the worker). ``False`` if dropped: the queue
        is full."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="voxpipe-recordings", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(_Job(store, name, build))
        except queue.Full:
            self._count("dropped")
            logger.error(f"recording {name} dropped: {self._queue.maxsize} recordings already queued")
            return False
        return True

    def drain(self, timeout_secs: float = 60.0) -> bool:
        """Wait until every queued recording is stored or given up; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_secs
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._store(job)
            finally:
                self._queue.task_done()

    def _store(self, job: _Job) -> None:
        try:
            wav = job.build()
        except Exception as exc:  # a bad recording must not stop the worker
            self._count("failed")
            logger.error(f"recording {job.name} could not be built: {exc!r}")
            return
        for attempt in range(1, self.attempts + 1):
            try:
                job.store.put(job.name, wav)
            except Exception as exc:
                if attempt == self.attempts:
                    self._count("failed")
                    logger.error(f"recording {job.name} not stored after {attempt} attempts: {exc!r}")
                    return
                self._count("retried")
                logger.warning(f"recording {job.name}: store failed ({exc!r}), retrying")
                time.sleep(self.backoff_secs * 2 ** (attempt - 1))
            else:
                self._count("stored")
                return

    def _count(self, outcome: str) -> None:
        self.stats[outcome] += 1
        self.exported.labels(outcome).inc()


uploader = RecordingUploader()
"""The process's uploader: every call's recording goes through it."""
