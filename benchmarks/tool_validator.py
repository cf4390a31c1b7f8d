"""Choosing the JSON Schema validator of tool arguments: import time in a fresh interpreter, and per-call cost.

Every tool call's arguments are checked against the tool's schema (``voxpipe.tools.arguments``), on the
pipeline, the browser tools endpoint and the ConversationRelay Lambda, where import time adds to a cold start
(budget in ``benchmarks/lambda_cold_start.py``). For each candidate this prints the median import time over
fresh interpreters (as a new Lambda container would pay it), the time to prepare one schema, and the time to
check one call's arguments::

    python benchmarks/tool_validator.py [--runs 7]

Needs: fastjsonschema (a dependency of voxpipe) and jsonschema (in the dev extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

SCHEMA = {
    "type": "object",
    "properties": {"date": {"type": "string"}, "party": {"type": "integer", "minimum": 1}},
    "required": ["date"],
    "additionalProperties": False,
}
ARGUMENTS = {"date": "2026-12-24", "party": 4}

PROBES = {
    "fastjsonschema": (
        "import fastjsonschema",
        "validate = fastjsonschema.compile(SCHEMA, use_default=False)",
        "validate(ARGUMENTS)",
    ),
    "jsonschema": (
        "import jsonschema",
        "validator = jsonschema.Draft7Validator(SCHEMA)",
        "validator.validate(ARGUMENTS)",
    ),
}

PROBE = """
import json, sys, time
SCHEMA, ARGUMENTS = json.loads(sys.argv[1]), json.loads(sys.argv[2])
started = time.perf_counter(); exec(sys.argv[3]); imported = time.perf_counter()
exec(sys.argv[4]); check = compile(sys.argv[5], "<check>", "exec"); prepared = time.perf_counter()
for _ in range(1000):
    exec(check)
checked = time.perf_counter()
print(json.dumps([imported - started, prepared - imported, (checked - prepared) / 1000]))
"""


def measure(name: str, runs: int) -> tuple[float, float, float]:
    """Medians of (import s, prepare s, check s) for one candidate over ``runs`` fresh interpreters."""
    samples = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 — fixed argv: this interpreter or a tool of the dev install, no caller input
            [sys.executable, "-c", PROBE, json.dumps(SCHEMA), json.dumps(ARGUMENTS), *PROBES[name]],
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(done.stdout))
    imported, prepared, checked = (statistics.median(column) for column in zip(*samples, strict=True))
    return imported, prepared, checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per candidate")
    args = parser.parse_args()
    print(f"{'validator':16} {'import ms':>10} {'prepare ms':>11} {'check us':>9}")
    for name in PROBES:
        imported, prepared, checked = measure(name, args.runs)
        print(f"{name:16} {imported * 1e3:10.1f} {prepared * 1e3:11.2f} {checked * 1e6:9.1f}")


if __name__ == "__main__":
    main()
