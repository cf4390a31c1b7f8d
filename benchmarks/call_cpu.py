"""CPU one call costs the server, per second of call: `voxpipe serve` against a plain pipecat-ai Twilio bot.

The same servers, callers and settings as benchmarks/capacity.py (its ``running_server`` and load generator),
but what is measured is the server process's own CPU time (user + system, all threads, from /proc), not the
wall clock or the latency the callers hear. CPU time a process used does not depend on how busy the rest of
the machine is, so this number stays meaningful on a loaded machine where capacity.py's runs are invalid
(a busy machine makes the server late, which batches work and so lowers it a little: quote it as measured).

For each server: start it pinned to one core, warm it up with one call, read its CPU time, run ``--calls``
concurrent calls of ``--turns`` turns, read it again. Printed per server:
- ms of CPU per caller second: the server's CPU time over the run / (calls x the run's length);
- % of a core per call: the same, as a share of one core;
- idle: ms of CPU per second the server spends with no call (subtracted from neither figure);
- missed: turns with no reply. A server that missed turns did less work (no reply spoken) because it was
  starved of CPU: its figure reads low, and the run is marked so;
and last the ratio plain pipecat / voxpipe (how many of voxpipe's calls fit in the CPU of one pipecat call).

    python benchmarks/call_cpu.py                       # 8 calls of 3 turns on each server, ~1 min
    python benchmarks/call_cpu.py --calls 16 --turns 4 --rounds 2

Needs what capacity.py needs (the voxpipe-testkit plugin, the server and dev extras).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from capacity import ProcessSampler, _callers, running_server


@dataclass
class CallCpu:
    """One server's CPU over one run of ``calls`` concurrent calls."""

    server: str
    calls: int
    cpu_secs: float
    wall_secs: float
    idle_ms_per_sec: float
    missed: int

    @property
    def ms_per_caller_sec(self) -> float:
        return self.cpu_secs * 1000 / (self.calls * self.wall_secs)


def measure(kind: str, args: argparse.Namespace, workdir: Path) -> CallCpu:
    with running_server(kind, args.server_core, 0, workdir) as (server, url):
        _callers(url, 1, 1, args.load_core, 0)  # warm-up: first-call imports, model sessions, caches
        sampler = ProcessSampler(server.pid)
        idle_started, idle_cpu = time.monotonic(), sampler.cpu_secs()
        time.sleep(2.0)
        idle = (sampler.cpu_secs() - idle_cpu) * 1000 / (time.monotonic() - idle_started)
        cpu_before, wall_before = sampler.cpu_secs(), time.monotonic()
        result = _callers(url, args.calls, args.turns, args.load_core, 0)
        cpu, wall = sampler.cpu_secs() - cpu_before, time.monotonic() - wall_before
    return CallCpu(kind, args.calls, cpu, wall, idle, result["missed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls per run")
    parser.add_argument("--turns", type=int, default=3, help="turns per call")
    parser.add_argument("--rounds", type=int, default=1, help="runs per server (alternating); the lowest counts")
    parser.add_argument("--servers", default="voxpipe,pipecat")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    args = parser.parse_args()
    kinds = args.servers.split(",")
    best: dict[str, CallCpu] = {}
    print(f"{'server':8} {'calls':>5} {'ms CPU/caller s':>15} {'% core/call':>11} {'idle ms/s':>9} {'missed':>6}")
    with tempfile.TemporaryDirectory(prefix="voxpipe-call-cpu-") as tmp:
        for _ in range(args.rounds):
            for kind in kinds:
                run = measure(kind, args, Path(tmp))
                print(
                    f"{run.server:8} {run.calls:5d} {run.ms_per_caller_sec:15.2f} {run.ms_per_caller_sec / 10:11.2f} "
                    f"{run.idle_ms_per_sec:9.2f} {run.missed:6d}{'  (starved: reads low)' if run.missed else ''}"
                )
                if kind not in best or run.ms_per_caller_sec < best[kind].ms_per_caller_sec:
                    best[kind] = run
    if "voxpipe" in best and "pipecat" in best:
        ratio = best["pipecat"].ms_per_caller_sec / best["voxpipe"].ms_per_caller_sec
        print(f"ratio pipecat / voxpipe CPU per call: {ratio:.2f}")


if __name__ == "__main__":
    main()
