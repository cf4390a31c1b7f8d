"""How long saving a call's record takes, SQLite against PostgreSQL, and listing them back.

A served call saves its ``CallRecord`` once, when it ends, on the server's event loop: this is how long
that blocks every other call of the process (``RecordStore.save``, one typical 6-turn record), and how long
``voxpipe calls`` / ``report`` wait to read ``--records`` of them. Each store starts empty.

    python benchmarks/record_store.py [--records 500] [--postgres postgresql://user:pw@127.0.0.1:5432/db]

The PostgreSQL database should be a throw-away one: the ``calls`` table is emptied first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from voxpipe.records.model import CallRecord, TurnRecord, Usage
from voxpipe.records.store import RecordStore


def _record(started: datetime) -> CallRecord:
    reply = "A basic tune-up is 45 dollars."
    turns = [TurnRecord(index=i, heard="how much is a tune-up", reply=reply, voice_to_voice_ms=850) for i in range(6)]
    usage = [Usage(role="llm", provider="openai", model="gpt-4.1-mini", text_input_tokens=900, cost_usd=0.0004)]
    return CallRecord(
        call_id=uuid.uuid4().hex,
        deployment="front-desk",
        mode="cascade",
        started_at=started,
        duration_secs=95,
        experiment="e",
        variant="a",
        turns=turns,
        usage=usage,
    )


def measure(target: str, count: int) -> tuple[float, float, float]:
    """(save p50 ms, save p99 ms, list-all ms) for ``count`` records."""
    store = RecordStore(target)
    now = datetime.now(UTC)
    saves = []
    for i in range(count):
        record = _record(now + timedelta(seconds=i))
        started = time.perf_counter()
        store.save(record)
        saves.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    if len(store.list(experiment="e")) != count:
        raise SystemExit(f"{target}: listed a different number of records than were saved")
    listed = (time.perf_counter() - started) * 1000
    p50, p99 = np.percentile(saves, [50, 99])
    return float(p50), float(p99), listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--postgres", help="a throw-away database's postgresql:// URL")
    args = parser.parse_args()
    targets = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets["sqlite"] = str(Path(tmp) / "calls.db")
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS calls")
            targets["postgres"] = args.postgres
        print(f"{args.records} records of 6 turns; save: one record, as a call ends")
        for name, target in targets.items():
            p50, p99, listed = measure(target, args.records)
            print(f"{name:9} save p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   list all {listed:7.1f} ms")


if __name__ == "__main__":
    main()
