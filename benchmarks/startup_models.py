"""What loading the shared VAD and turn models costs a server at start, by what its deployments use.

``voxpipe.pipeline.shared_models.warm_up`` loads the Silero VAD and the smart-turn v3 ONNX sessions once
per process, before the first call. Told the deployments, it loads only the models they use; not told, it
loads both. Each case runs in a fresh interpreter (the modules already imported, so only the model loading
is timed) and prints the RSS growth and the wall time of ``warm_up``, the minimum of ``--repeat`` runs.

    python benchmarks/startup_models.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from voxpipe.config.models import Deployment
from voxpipe.pipeline.shared_models import warm_up

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

turn = json.loads(sys.argv[1])
deployments = None if turn is None else [
    Deployment.model_validate({"name": "d", "agent": {"instructions": "x"}, "turn": turn})
]
before, started = rss_mb(), time.perf_counter()
warm_up(deployments)
print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "mb": rss_mb() - before}))
"""

CASES = {
    "not told (loads both)": None,
    "silence turns (Silero only)": {"strategy": "silence"},
    "smart_turn turns (both)": {"strategy": "smart_turn"},
}


def run(turn: object) -> dict[str, float]:
    out = subprocess.run(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
        [sys.executable, "-c", CHILD, json.dumps(turn)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"warm_up at server start, min of {repeat} fresh processes")
    for name, turn in CASES.items():
        runs = [run(turn) for _ in range(repeat)]
        print(f"{name:30} {min(r['ms'] for r in runs):7.0f} ms  {min(r['mb'] for r in runs):6.1f} MB")


if __name__ == "__main__":
    main()
