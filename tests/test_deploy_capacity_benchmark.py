"""benchmarks/capacity.py keeps working: one call of two turns against each server, through the same code
the benchmark runs (pinned server process, warm-up, the Twilio load generator in its own process).

Only that both servers answer every turn over the real Twilio protocol and that the numbers are filled
in; how fast is the benchmark's business, not a test's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import capacity  # noqa: E402 (benchmarks/ is a folder of scripts, not a package)

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("server", ["voxpipe", "pipecat"])
def test_each_server_answers_every_turn_of_the_load_generator(server: str, tmp_path: Path, registry: object) -> None:
    cores = sorted(os.sched_getaffinity(0))
    args = argparse.Namespace(turns=2, server_core=cores[0], load_core=cores[-1], nice=0)
    run = capacity.measure(server, 1, args, tmp_path)
    assert run.failed_calls == [] and run.missed == 0
    assert len(run.gaps_ms) == 2 and all(gap > 0 for gap in run.gaps_ms)
    assert run.cpu_percent > 0 and run.lateness_p99_ms >= 0


def test_call_cpu_reads_the_servers_own_cpu_time(tmp_path: Path, registry: object) -> None:
    import call_cpu

    cores = sorted(os.sched_getaffinity(0))
    args = argparse.Namespace(calls=2, turns=1, server_core=cores[0], load_core=cores[-1])
    run = call_cpu.measure("voxpipe", args, tmp_path)
    assert run.missed == 0 and run.calls == 2
    assert run.cpu_secs > 0 and run.wall_secs > 1 and 0 < run.ms_per_caller_sec < 1000


def test_loop_lag_watches_the_servers_loop(tmp_path: Path, registry: object) -> None:
    import loop_lag

    cores = sorted(os.sched_getaffinity(0))
    args = argparse.Namespace(turns=2, server_core=cores[0], load_core=cores[-1], nice=0)
    run, probe, stages = loop_lag.measure(1, args)
    assert run.missed == 0 and len(run.gaps_ms) == 2
    # The probe ran inside the server's loop for the whole measured run (cleared after the warm-up call).
    assert probe["secs"] > 2 and len(probe["timer_late_ms"]) > probe["secs"] * 50
    assert all(late > -2 for late in probe["timer_late_ms"]) and probe["ready_wait_ms"]
    assert len(stages["voice_to_voice_ms"]) == 3  # the warm-up call's turn and this run's two
