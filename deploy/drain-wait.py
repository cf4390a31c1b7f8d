#!/usr/bin/env python3
"""Wait until a ``voxpipe serve`` has no live call, or a deadline passes: a Kubernetes preStop drain.

When a pod is deleted (rolling update, scale-in, node drain), Kubernetes takes it out of the Service's
endpoints, so no new call reaches it, and runs the preStop hook before sending SIGTERM. This hook holds
SIGTERM back until the calls already on the pod have ended. It first waits ``--settle`` seconds, the time
the endpoint change takes to reach every router (a call placed meanwhile still lands here and is waited
for), then polls the pod's own ``/metrics`` and returns
when the ``voxpipe_active_calls`` gauge (summed over deployments) reads 0, or when ``--deadline`` seconds
have passed (exit 1: the remaining calls are then cut by SIGTERM). A server that does not answer has
nothing to drain (exit 0). ``terminationGracePeriodSeconds`` must exceed the deadline, or the kubelet kills
the pod first.

Standard library only: it runs in the image with the server's Python, next to nothing else.

    voxpipe-drain-wait --url http://127.0.0.1:8000/metrics --deadline 600 --settle 5
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

GAUGE = "voxpipe_active_calls"


def active_calls(metrics_text: str) -> int:
    """The sum of every ``voxpipe_active_calls`` sample in a Prometheus text exposition."""
    total = 0.0
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == GAUGE:
            total += float(line.rsplit(" ", 1)[1])
    return round(total)


def wait_for_calls(url: str, deadline_secs: float, poll_secs: float, settle_secs: float) -> int:
    """Poll until no call is live (0), the deadline passes (1), or the server is gone (0)."""
    give_up = time.monotonic() + deadline_secs
    time.sleep(min(settle_secs, deadline_secs))
    while True:
        try:
            with urllib.request.urlopen(url, timeout=poll_secs + 2) as reply:  # noqa: S310 (http(s) checked in main)
                live = active_calls(reply.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            print(f"drain: {url} does not answer ({exc}); nothing to drain", flush=True)
            return 0
        if live == 0:
            print("drain: no live call", flush=True)
            return 0
        if time.monotonic() >= give_up:
            print(f"drain: deadline of {deadline_secs:g} s reached with {live} live call(s)", flush=True)
            return 1
        time.sleep(poll_secs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/metrics", help="the server's /metrics")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait at most")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before the first poll")
    args = parser.parse_args()
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must be an http:// or https:// address, not {args.url!r}")
    return wait_for_calls(args.url, args.deadline, args.poll, args.settle)


if __name__ == "__main__":
    sys.exit(main())
