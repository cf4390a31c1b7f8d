"""Calls per core, side by side: `voxpipe serve` against a plain pipecat-ai Twilio bot, over real sockets.

For each server and each N, a fresh server process is started pinned to one core (``--server-core``),
warmed up with one call, and then N concurrent Twilio Media Streams callers (benchmarks/twilio_callers.py,
pinned to ``--load-core``) each play ``--turns`` turns of a real recorded utterance. Both servers run the
same deterministic in-process STT, LLM and TTS (the voxpipe-testkit plugin's pipecat services), Silero VAD
and the same turn settings (``SETTINGS``); the plain bot is benchmarks/pipecat_twilio_bot.py, written as
pipecat's Twilio example is.

Printed per N:
- turn gap p50/p90/p99 (ms): end of the caller's speech to the first audible bot audio, on the caller's side;
- missed turns: no reply within the timeout;
- server CPU: share of its one core over the run;
- idle MB: the server's RSS after the warm-up call, with no call;
- RSS per call (MB): the server's peak RSS during the run above that idle RSS, / N;
- load p99 (ms): how late the generator's own 20 ms frames left; a run above 5 ms is invalid;
- load CPU: the generator's own share of its core (near 100% it, not the server, is the bottleneck).
First it checks the machine: eight bare 20 ms asyncio timers on the load core, with no work at all; if
they are already late by more than 5 ms at p99, the machine is too busy for valid runs.
Capacity is the largest N whose gap p90 stays within +100 ms of N=1 with no missed turn (valid runs only);
the last line is the ratio of the two capacities.

    python benchmarks/capacity.py            # N = 1,4,8,12,16,24,32,40,48,64 for both servers, 4 turns: ~15 min
    python benchmarks/capacity.py --quick    # N = 1,8,16,32,48 and 2 turns per call: ~6 min
    python benchmarks/capacity.py --calls 1,2 --turns 2 --servers voxpipe

A server's run stops after two valid N in a row past its capacity (larger N only degrade further), so the
plain bot, whose capacity is reached early, takes a few minutes of the total.

On a machine shared with other work, ``--nice -10`` (as root) gives both servers and the load generator
the same head start over everything else, so that fewer runs are invalid; say so when quoting numbers.

Needs the voxpipe-testkit plugin (pip install -e tests/plugins/voxpipe-testkit) and the server and dev
extras. Numbers depend on the machine and on whatever else runs on it: say so when quoting them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

HERE = Path(__file__).resolve().parent
SPEECH = HERE / "corpus" / "heart" / "tune-up-price.wav"
MAX_LATENESS_MS = 5.0
GAP_SLACK_MS = 100.0
PUBLIC_HOST = "capacity.invalid"
AUTH_TOKEN = "capacity-benchmark-token"  # noqa: S105 — a made-up credential for a local test server; nothing real
# Binds each stream to its webhook (voxpipe.security.call_binding); the callers mint what /twiml would give them.
SIGNING_SECRET = "capacity-benchmark-signing-secret-" + "x" * 16  # made up, local only

# The turn settings and reply both servers use.
SETTINGS: dict[str, Any] = {
    "reply": "We are open nine to six, Monday to Saturday.",
    "vad": {"confidence": 0.7, "start_secs": 0.2, "stop_secs": 0.2, "min_volume": 0.6},
    "turn_timeout_secs": 0.6,
}

DEPLOYMENT = """
name: capacity
agent: {{instructions: You answer briefly.}}
vad: {vad}
turn: {{strategy: silence, timeout_secs: {turn_timeout_secs}}}
stt: {{provider: testkit_stt}}
llm: {{provider: testkit_llm, options: {{default_reply: "{reply}"}}}}
tts: {{provider: testkit_tts}}
transport:
  public_url: https://{host}
  twilio: {{auth_token: "${{TWILIO_AUTH_TOKEN}}"}}
sessions: {{store: memory}}
limits: {{concurrent_calls: 1000, calls_per_minute_per_client: 100000, max_loop_load: {max_loop_load}}}
"""  # every caller is 127.0.0.1 here; max_loop_load 1 (never turn a call away): capacity is the loop's own knee


@dataclass
class Run:
    """One server kind at one N: what the callers measured and what the server cost."""

    server: str
    calls: int
    gaps_ms: list[float]
    missed: int
    failed_calls: list[str]
    lateness_p99_ms: float
    load_cpu_percent: float
    cpu_percent: float
    idle_rss_mb: float
    rss_per_call_mb: float

    @property
    def valid(self) -> bool:
        return self.lateness_p99_ms <= MAX_LATENESS_MS

    def gap(self, q: float) -> float:
        return float(np.percentile(self.gaps_ms, q)) if self.gaps_ms else float("nan")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pinned(core: int, niceness: int) -> Any:
    """What a child process does before it starts: stay on ``core``, at ``niceness``."""

    def pin() -> None:
        os.sched_setaffinity(0, {core})
        if niceness:
            os.nice(niceness)

    return pin


def _server_command(
    kind: str, port: int, workdir: Path, runner: list[str], max_loop_load: float = 1.0
) -> tuple[list[str], str]:
    """The command line of a server and the WebSocket URL its callers open; ``runner``: what runs voxpipe's
    command line (``-m voxpipe.cli``, or benchmarks/loop_probe.py's watched server)."""
    if kind == "voxpipe":
        config = workdir / "capacity.yaml"
        settings = {**SETTINGS, "vad": json.dumps(SETTINGS["vad"]), "max_loop_load": max_loop_load}
        config.write_text(DEPLOYMENT.format(host=PUBLIC_HOST, **settings))
        command = [sys.executable, *runner, "serve", str(config), "--port", str(port), "--workers", "1"]
        return command, f"ws://127.0.0.1:{port}/capacity/media"
    bot = [sys.executable, str(HERE / "pipecat_twilio_bot.py"), "--port", str(port)]
    return [*bot, "--settings", json.dumps(SETTINGS)], f"ws://127.0.0.1:{port}/ws"


@contextlib.contextmanager
def running_server(
    kind: str,
    core: int,
    niceness: int,
    workdir: Path,
    runner: tuple[str, ...] = ("-m", "voxpipe.cli"),
    max_loop_load: float = 1.0,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    command, url = _server_command(kind, port, workdir, list(runner), max_loop_load)
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "VOXPIPE_SIGNING_SECRET": SIGNING_SECRET,
        "VOXPIPE_RECORDS": str(workdir / "calls.db"),
        "VOXPIPE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
        command, env=env, preexec_fn=_pinned(core, niceness), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_ready(server, port, kind)
        yield server, url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_ready(server: subprocess.Popen[bytes], port: int, kind: str) -> None:
    """voxpipe: /readyz answers 200 (models loaded). The plain bot has no such endpoint: its port accepts."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {server.returncode}")
        try:
            if kind == "voxpipe":
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the {kind} server did not become ready")


class ProcessSampler:
    """CPU time and peak RSS of a process (all its threads), read from /proc while a run lasts."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def cpu_secs(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

    def __enter__(self) -> ProcessSampler:
        self.peak_rss_mb = self.rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


IDLE_TIMERS = """
import asyncio, random, sys, time
import numpy as np
async def tick(late):
    next_at = time.monotonic() + random.random() * 0.02
    for _ in range(250):
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        late.append((time.monotonic() - next_at) * 1000)
        next_at += 0.02
async def main():
    late = []
    await asyncio.gather(*(tick(late) for _ in range(8)))
    print(float(np.percentile(late, 99)))
asyncio.run(main())
"""


def machine_lateness_ms(core: int, niceness: int) -> float:
    """p99 lateness of 8 bare 20 ms asyncio timers on ``core`` for 5 s: what the machine alone adds."""
    command = [sys.executable, "-c", IDLE_TIMERS]
    out = subprocess.run(command, preexec_fn=_pinned(core, niceness), capture_output=True, text=True, check=True)  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
    return float(out.stdout.strip())


def _callers(url: str, calls: int, turns: int, core: int, niceness: int, more: Sequence[str] = ()) -> dict[str, Any]:
    """Run the load generator (``more``: further options of benchmarks/twilio_callers.py)."""
    command = [sys.executable, str(HERE / "twilio_callers.py"), "--url", url, "--calls", str(calls), *more]
    command += ["--turns", str(turns), "--speech", str(SPEECH), "--auth-token", AUTH_TOKEN]
    command += ["--signed-url", f"wss://{PUBLIC_HOST}{urlsplit(url).path}"]  # the URL Twilio would sign
    env = {**os.environ, "VOXPIPE_SIGNING_SECRET": SIGNING_SECRET}
    pinned = _pinned(core, niceness)
    out = subprocess.run(command, env=env, preexec_fn=pinned, capture_output=True, text=True, check=True)  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
    return json.loads(out.stdout)


def measure(
    kind: str,
    calls: int,
    args: argparse.Namespace,
    workdir: Path,
    runner: tuple[str, ...] = ("-m", "voxpipe.cli"),
    warmed_up: Callable[[subprocess.Popen[bytes]], None] = lambda server: None,
) -> Run:
    """One server kind at one N (``runner`` and ``warmed_up``: benchmarks/loop_lag.py's watched server)."""
    with running_server(kind, args.server_core, args.nice, workdir, runner) as (server, url):
        _callers(url, 1, 1, args.load_core, args.nice)  # warm-up: first-call imports, model sessions, caches
        time.sleep(1.0)
        warmed_up(server)
        sampler = ProcessSampler(server.pid)
        idle_rss = sampler.rss_mb()
        with sampler:
            cpu_before, wall_before = sampler.cpu_secs(), time.monotonic()
            result = _callers(url, calls, args.turns, args.load_core, args.nice)
            cpu = (sampler.cpu_secs() - cpu_before) / (time.monotonic() - wall_before) * 100
    return Run(
        server=kind,
        calls=calls,
        gaps_ms=result["gaps_ms"],
        missed=result["missed"],
        failed_calls=result["failed_calls"],
        lateness_p99_ms=result["lateness_ms"]["p99"] or 0.0,
        load_cpu_percent=result["generator_cpu_percent"],
        cpu_percent=cpu,
        idle_rss_mb=idle_rss,
        rss_per_call_mb=(sampler.peak_rss_mb - idle_rss) / calls,
    )


def capacity(runs: list[Run], *, valid_only: bool = True) -> int:
    """The largest N whose gap p90 is within +100 ms of N=1's, with no missed turn (valid runs only)."""
    baseline = next((r.gap(90) for r in runs if r.calls == 1), None)
    if baseline is None:
        return 0
    counted = [r for r in runs if r.valid or not valid_only]
    fits = [r.calls for r in counted if r.missed == 0 and r.gap(90) <= baseline + GAP_SLACK_MS]
    return max(fits, default=0)


def print_table(runs: list[Run]) -> None:
    print(
        f"{'server':8} {'N':>3} {'gap p50':>8} {'p90':>6} {'p99':>6} {'missed':>6} {'CPU %':>6} "
        f"{'idle MB':>7} {'MB/call':>7} {'load p99':>8} {'load CPU':>8}  valid"
    )
    for r in runs:
        print(
            f"{r.server:8} {r.calls:3d} {r.gap(50):8.0f} {r.gap(90):6.0f} {r.gap(99):6.0f} {r.missed:6d} "
            f"{r.cpu_percent:6.1f} {r.idle_rss_mb:7.0f} {r.rss_per_call_mb:7.2f} {r.lateness_p99_ms:8.2f} "
            f"{r.load_cpu_percent:8.1f}  {'yes' if r.valid else 'NO'}"
        )
        for failure in r.failed_calls[:3]:
            print(f"         failed call: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,4,8,12,16,24,32,40,48,64", help="comma-separated N (1 always runs)")
    parser.add_argument("--turns", type=int, default=4, help="turns per call")
    parser.add_argument("--quick", action="store_true", help="N = 1,8,16,32,48 and 2 turns (overrides both)")
    parser.add_argument("--servers", default="voxpipe,pipecat", help="voxpipe, pipecat or both")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every run (gaps included) to this file")
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of servers and load generator (negative: root only)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the running server is stopped too
    if args.quick:
        args.calls, args.turns = "1,8,16,32,48", 2
    counts = sorted({1, *(int(n) for n in args.calls.split(","))})
    os.sched_setaffinity(0, {args.load_core})
    idle_late = machine_lateness_ms(args.load_core, args.nice)
    verdict = "quiet enough" if idle_late <= MAX_LATENESS_MS else "too busy: expect invalid runs"
    print(f"machine check: bare 20 ms timers on core {args.load_core}: {idle_late:.1f} ms late at p99 ({verdict})")
    by_server: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="voxpipe-capacity-") as tmp:
        for kind in args.servers.split(","):
            runs = by_server.setdefault(kind, [])
            for n in counts:
                runs.append(measure(kind, n, args, Path(tmp)))
                print_table(runs[-1:])
                if len(runs) >= 3 and all(r.valid and capacity(runs) < r.calls for r in runs[-2:]):
                    break  # two valid N in a row past capacity: larger N only degrade further
    print()
    print_table([r for runs in by_server.values() for r in runs])
    if not all(r.valid for runs in by_server.values() for r in runs):
        print("some runs are invalid (the load generator was late): the machine is too busy to measure;")
        print("counting them anyway, for an indication only:")
    valid_only = all(r.valid for runs in by_server.values() for r in runs)
    capacities = {kind: capacity(runs, valid_only=valid_only) for kind, runs in by_server.items()}
    for kind, value in capacities.items():
        print(f"capacity {kind}: {value} calls per core")
    if capacities.get("pipecat"):
        print(f"ratio voxpipe / pipecat: {capacities.get('voxpipe', 0) / capacities['pipecat']:.2f}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for runs in by_server.values() for r in runs], indent=1))


if __name__ == "__main__":
    main()
