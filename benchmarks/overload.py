"""More callers than one core carries, with and without load shedding (a deployment's ``limits.max_loop_load``).

``--calls`` Twilio callers dial one after another (one every ``--arrive-every`` s), each through the voice
webhook first as Twilio does, then hold a Media Streams call of ``--turns`` turns: the capacity benchmark's
server, cascade, callers and cores (benchmarks/capacity.py), started fresh for each run. One run lets every
call in (``max_loop_load: 1``); the others turn new calls away above each ``--max-loop-load``. Printed per run:
- calls admitted and turned away (the webhook answered the busy message instead of a stream);
- the admitted calls' turn gap p50/p90/p99 (ms) and missed turns;
- the server's CPU share of its core over the run, and the generator's lateness (above 5 ms p99: invalid);
- for reference, the same server's gap p90 with one call, measured before the surge.

    python benchmarks/overload.py                              # 96 callers, one every 0.3 s: ~4 min
    python benchmarks/overload.py --max-loop-load 0.6,0.7 --calls 120
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from capacity import MAX_LATENESS_MS, PUBLIC_HOST, ProcessSampler, _callers, running_server


def run(max_loop_load: float, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with running_server("voxpipe", args.server_core, 0, workdir, max_loop_load=max_loop_load) as (server, url):
        _callers(url, 1, 1, args.load_core, 0)  # warm-up: first-call imports, model sessions, caches
        one = _callers(url, 1, args.turns, args.load_core, 0)
        webhook = url.replace("ws://", "http://").replace("/media", "/twiml")
        signed = f"https://{PUBLIC_HOST}/capacity/twiml"
        more = ["--arrive-every", str(args.arrive_every), "--webhook", webhook, "--signed-webhook", signed]
        time.sleep(6)  # the warm-up's load leaves the loop's 5 s average
        sampler = ProcessSampler(server.pid)
        cpu, wall = sampler.cpu_secs(), time.monotonic()
        result = _callers(url, args.calls, args.turns, args.load_core, 0, more)
        result["server_cpu"] = (sampler.cpu_secs() - cpu) / (time.monotonic() - wall) * 100
        result["one_call_gap_p90"] = float(np.percentile(one["gaps_ms"], 90))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=96)
    parser.add_argument("--arrive-every", type=float, default=0.3, help="seconds between callers dialling")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-loop-load", default="0.75", help="comma-separated limits to compare with none")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    args = parser.parse_args()
    limits = [1.0, *(float(limit) for limit in args.max_loop_load.split(","))]
    print(f"{args.calls} callers, one every {args.arrive_every:g} s, {args.turns} turns each; server on one core")
    print("max_loop_load | admitted | turned away | gap p50 / p90 / p99 (ms) | missed | server CPU | load p99")
    for limit in limits:
        with tempfile.TemporaryDirectory() as workdir:
            result = run(limit, args, Path(workdir))
        gaps = result["gaps_ms"]
        p50, p90, p99 = np.percentile(gaps, [50, 90, 99]) if gaps else (float("nan"),) * 3
        late = result["lateness_ms"]["p99"]
        valid = "" if late is not None and late <= MAX_LATENESS_MS else " (invalid: the generator was late)"
        name = "1 (never)" if limit == 1.0 else f"{limit:g}"
        admitted = args.calls - result["turned_away"]
        print(
            f"{name} | {admitted} | {result['turned_away']} | {p50:.0f} / {p90:.0f} / {p99:.0f} | "
            f"{result['missed']} | {result['server_cpu']:.0f}% | {late:.1f} ms{valid}"
            f"   (one call alone: gap p90 {result['one_call_gap_p90']:.0f} ms)",
            flush=True,
        )


if __name__ == "__main__":
    main()
