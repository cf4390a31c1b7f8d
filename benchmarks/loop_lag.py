"""Where a turn's extra wait under load comes from: capacity runs of `voxpipe serve` with its event loop watched.

For each N it runs benchmarks/capacity.py's measurement (N Twilio callers over real sockets, server pinned
to one core, same deployment) with the server started by benchmarks/loop_probe.py, and prints:

- the callers' turn gap p50/p90 and the server's CPU share (as capacity.py does);
- the stages of the server's own records, p50/p90 from the caller's end of speech: final transcript, LLM
  first token, TTS first audio, heard (voice-to-voice);
- the loop: how late 5 ms timers fired and how long a yielded task waited for its turn (p50/p90/p99/max),
  and GC pauses by generation (count, total and longest).

    python benchmarks/loop_lag.py --calls 1,48,56 --nice -10     # ~1 min per N
    python benchmarks/loop_lag.py --calls 48,56 --freeze-after-warm-up   # the same, heap frozen after call 1

Run it on a quiet machine (load average below 1), as capacity.py: the numbers are the loop's, on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import capacity  # noqa: E402 — the benchmark next to this one
import loop_probe  # noqa: E402

STAGES = ("stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "voice_to_voice_ms")


def _quantiles(values: list[float], qs: tuple[float, ...] = (50, 90, 99)) -> str:
    if not values:
        return "-"
    return " / ".join(f"{np.percentile(values, q):.1f}" for q in qs) + f" / max {max(values):.1f}"


def stage_figures(records_db: Path) -> dict[str, list[float]]:
    """Every turn's stage timings from the server's record store (SQLite)."""
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with sqlite3.connect(records_db) as db:
        for (record,) in db.execute("select record from calls"):  # the warm-up call's one turn too
            for turn in json.loads(record).get("turns", []):
                for stage in STAGES:
                    if turn.get(stage) is not None:
                        stages[stage].append(turn[stage])
    return stages


def report(n: int, run: capacity.Run, probe: dict[str, Any], stages: dict[str, list[float]]) -> None:
    print(
        f"N={n}: gap p50 {run.gap(50):.0f} p90 {run.gap(90):.0f} ms, missed {run.missed}, "
        f"server CPU {run.cpu_percent:.0f}%, load p99 {run.lateness_p99_ms:.1f} ms ({probe['loop']})"
    )
    for stage, values in stages.items():
        if values:
            print(f"  {stage:20} p50 {np.percentile(values, 50):6.0f}  p90 {np.percentile(values, 90):6.0f}")
    print(f"  timer lateness ms (p50/p90/p99)  {_quantiles(probe['timer_late_ms'])}")
    print(f"  ready-queue wait ms (p50/p90/p99) {_quantiles(probe['ready_wait_ms'])}")
    for generation, pauses in probe["gc_pauses_ms"].items():
        if pauses:
            print(
                f"  GC gen {generation}: {len(pauses)} runs in {probe['secs']:.0f} s, "
                f"{sum(pauses):.0f} ms in all, longest {max(pauses):.1f} ms"
            )


def measure(n: int, args: argparse.Namespace) -> tuple[capacity.Run, dict[str, Any], dict[str, list[float]]]:
    """One capacity run of N calls against the watched server: the callers' run, the probe's, the stages."""
    with tempfile.TemporaryDirectory(prefix="voxpipe-loop-lag-") as tmp:
        workdir, out = Path(tmp), Path(tmp) / "probe.json"
        runner = (str(HERE / "loop_probe.py"), str(out))
        run = capacity.measure("voxpipe", n, args, workdir, runner, lambda server: server.send_signal(signal.SIGUSR1))
        return run, json.loads(out.read_text()), stage_figures(workdir / "calls.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,48,56", help="comma-separated N")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--nice", type=int, default=0, help="as capacity.py's (negative: root only)")
    parser.add_argument(
        "--freeze-after-warm-up", action="store_true", help="experiment: gc.freeze() the server after its first call"
    )
    args = parser.parse_args()
    if args.freeze_after_warm_up:
        os.environ[loop_probe.FREEZE_VARIABLE] = "1"
    os.sched_setaffinity(0, {args.load_core})
    for n in (int(x) for x in args.calls.split(",")):
        report(n, *measure(n, args))


if __name__ == "__main__":
    main()
