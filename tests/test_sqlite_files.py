"""Processes opening one new SQLite file at the same moment (``voxpipe serve --workers N`` starting) all get it.

SQLite refuses a WAL switch with "database is locked" at once, without waiting out the busy timeout, while
another connection is making it: with a bare ``PRAGMA journal_mode=WAL``, 14 of 300 such races failed on a
loaded 2-core machine (a record store's replicas test failed CI that way). ``connect_wal`` tries again.
"""

from __future__ import annotations

import threading
from pathlib import Path

from voxpipe.sqlite_files import connect_wal


def test_eight_openers_of_a_new_file_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for trial in range(100):
        path = tmp_path / f"shared-{trial}.db"
        barrier = threading.Barrier(8)
        modes: list[str] = []

        def opener(path: Path = path, barrier: threading.Barrier = barrier, modes: list[str] = modes) -> None:
            try:
                barrier.wait()
                db = connect_wal(path, timeout=10)
                modes.append(db.execute("PRAGMA journal_mode").fetchone()[0])
                db.execute("CREATE TABLE IF NOT EXISTS t (x)")
                db.close()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert modes == ["wal"] * 8 or failures
    assert failures == []
