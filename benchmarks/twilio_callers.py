"""N concurrent Twilio Media Streams callers in one process: the load generator of benchmarks/capacity.py.

Each caller behaves as Twilio does on a real call (tests/simulators/twilio_media.py documents the protocol):
it opens the WebSocket (signed with ``X-Twilio-Signature`` when an auth token is given), sends ``connected``
and ``start``, then one ``media`` event of 160 mu-law bytes every 20 ms on an absolute schedule for the
whole call, the caller's speech when it speaks and line silence otherwise. Each call's 20 ms grid starts at
a random phase, and its first utterance after a random pause, so calls do not tick in lockstep. The bot's
audio is "played" at real time: each ``mark`` is echoed when the audio before it has played, and ``clear``
drops the unplayed audio and echoes the pending marks at once. Playout is computed (each chunk's start is
the end of the previous one), not polled, so the generator stays cheap.

A turn: the caller says the utterance, waits until the reply has played (or ``--reply-timeout`` passed),
pauses, and speaks again. Measured on this side of the socket:
- turn gap: from the end of the caller's speech (the send time of its last voiced frame, as Twilio sends a
  frame once its 20 ms were captured) to the arrival of the bot's first audible audio;
- missed turn: no audible reply within the timeout;
- lateness: how late each media event left against its schedule. Above 5 ms at p99 the generator itself was
  too busy and the run is invalid.

With ``--webhook``, each caller first asks the voice webhook (a signed POST, as Twilio does) and only dials
the stream if the TwiML says ``<Stream>``; otherwise it was turned away (a busy message, a redirect) and is
counted so. With ``--arrive-every``, callers dial one after another instead of all at once.

Writes one JSON object (gaps in ms, missed count, callers turned away, lateness quantiles, the generator's own
CPU share) to stdout.

    python benchmarks/twilio_callers.py --url ws://127.0.0.1:8000/capacity/media --calls 8 --turns 4 \
        --speech benchmarks/corpus/heart/open-sunday.wav [--signed-url wss://host/capacity/media --auth-token T]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr
import websockets
from twilio.request_validator import RequestValidator

from voxpipe.audio import g711
from voxpipe.security.call_binding import CallBinding
from voxpipe.security.tokens import SECRET_VARIABLE

RATE = 8000
FRAME_SECS = 0.02
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES
VOICED_DBFS = -45.0  # a frame louder than this is speech; quieter edges of the utterance are trimmed
AUDIBLE_PEAK = 500  # a bot chunk with a sample above this is audible (line silence and fades are not)


def utterance_frames(wav_path: Path) -> list[bytes]:
    """The utterance as 20 ms mu-law frames at 8 kHz, with its silent lead and tail trimmed."""
    with wave.open(str(wav_path)) as wav:
        rate, pcm = wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    pcm8k = soxr.resample(pcm.astype(np.float32), rate, RATE).clip(-32768, 32767).astype("<i2")
    frames = [pcm8k[i : i + FRAME_BYTES] for i in range(0, len(pcm8k) - FRAME_BYTES + 1, FRAME_BYTES)]
    levels_dbfs = [20 * np.log10(np.sqrt(np.mean(f.astype(float) ** 2)) / 32768 + 1e-9) for f in frames]
    loud = [i for i, level in enumerate(levels_dbfs) if level > VOICED_DBFS]
    return [g711.encode(f.tobytes()) for f in frames[loud[0] : loud[-1] + 1]]


@dataclass(frozen=True)
class Webhook:
    """Twilio's voice webhook: ``url`` to POST to, ``signed_url`` the public URL the signature covers. One HTTP
    client serves every caller (making one costs the generator tens of ms, which would make its frames late)."""

    client: httpx.AsyncClient
    url: str
    signed_url: str
    auth_token: str

    async def streams(self, call_sid: str, caller: str) -> bool:
        """Ask the webhook about a new call: whether its TwiML connects a stream (else it turned the call away)."""
        form = {"CallSid": call_sid, "From": caller, "To": "+15559990000"}
        signature = RequestValidator(self.auth_token).compute_signature(self.signed_url, form)
        answer = await self.client.post(self.url, data=form, headers={"X-Twilio-Signature": signature})
        return answer.status_code == 200 and "<Stream" in answer.text


@dataclass
class Caller:
    """One simulated Twilio call; ``run`` plays ``turns`` turns and fills ``gaps_ms`` / ``missed``."""

    url: str
    headers: dict[str, str]
    speech: list[bytes]
    turns: int
    reply_timeout: float
    rng: random.Random
    dials_after: float = 0.0  # seconds from the start of the run
    webhook: Webhook | None = None
    gaps_ms: list[float] = field(default_factory=list)
    missed: int = 0
    turned_away: bool = False
    lateness_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self._next_speech_frame: int | None = None  # index into ``speech`` while the caller speaks
        self._speech_ended: asyncio.Future[float] | None = None
        self._awaiting_reply = False
        self._first_audio: asyncio.Future[float] | None = None
        self._play_end = 0.0
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._socket: Any = None

    async def run(self) -> None:
        await asyncio.sleep(self.dials_after)
        call_sid, number = "CA" + uuid.uuid4().hex, f"+1555{self.rng.randrange(10**7):07d}"
        if self.webhook is not None and not await self.webhook.streams(call_sid, number):
            self.turned_away = True
            return
        async with websockets.connect(self.url, additional_headers=self.headers, max_size=None) as socket:
            self._socket = socket
            await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            parameters = {"from": number, "to": "+15559990000"}
            if os.environ.get(SECRET_VARIABLE):  # as the signed webhook's TwiML would have given it
                parameters |= CallBinding.for_deployment("twilio", signed=True).parameters(call_sid)
            start = {
                "accountSid": "AC" + "0" * 32,
                "callSid": call_sid,
                "streamSid": self.stream_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            }
            await self._send({"event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid, "start": start})
            line = asyncio.create_task(self._line(time.monotonic() + self.rng.uniform(0, FRAME_SECS)))
            receiver = asyncio.create_task(self._receive())
            try:
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))
                for _ in range(self.turns):
                    await self._turn()
                    await asyncio.sleep(self.rng.uniform(0.6, 1.2))
                await self._send({"event": "stop", "streamSid": self.stream_sid, "stop": {}})
            finally:
                line.cancel()
                receiver.cancel()

    async def _turn(self) -> None:
        loop = asyncio.get_running_loop()
        self._speech_ended, self._first_audio = loop.create_future(), loop.create_future()
        self._next_speech_frame = 0
        spoke_until = await self._speech_ended
        self._awaiting_reply = True
        try:
            heard_at = await asyncio.wait_for(self._first_audio, self.reply_timeout)
        except TimeoutError:
            self.missed += 1
            return
        finally:
            self._awaiting_reply = False
        self.gaps_ms.append((heard_at - spoke_until) * 1000)
        while (left := self._play_end + 0.3 - time.monotonic()) > 0:  # the reply plays to its end, then a breath
            await asyncio.sleep(left)

    async def _line(self, next_at: float) -> None:
        """A media event every 20 ms on the absolute grid from ``next_at``, speech or line silence."""
        chunk = 0
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent_at = time.monotonic()
            self.lateness_ms.append((sent_at - next_at) * 1000)
            payload, last_of_speech = SILENCE, False
            if self._next_speech_frame is not None:
                payload = self.speech[self._next_speech_frame]
                self._next_speech_frame += 1
                if self._next_speech_frame == len(self.speech):
                    self._next_speech_frame, last_of_speech = None, True
            chunk += 1
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            }
            await self._send({"event": "media", "streamSid": self.stream_sid, "media": media})
            if last_of_speech and self._speech_ended is not None:
                self._speech_ended.set_result(sent_at)
            next_at += FRAME_SECS

    async def _receive(self) -> None:
        async for message in self._socket:
            event = json.loads(message)
            kind = event.get("event")
            now = time.monotonic()
            if kind == "media":
                pcm = g711.decode(base64.b64decode(event["media"]["payload"]))
                self._play_end = max(now, self._play_end) + len(pcm) / 2 / RATE
                audible = np.abs(np.frombuffer(pcm, dtype="<i2")).max(initial=0) > AUDIBLE_PEAK
                if audible and self._awaiting_reply and self._first_audio and not self._first_audio.done():
                    self._first_audio.set_result(now)
            elif kind == "mark":  # echoed once the audio queued before it has played
                name = event["mark"]["name"]
                delay = max(0.0, self._play_end - now)
                self._pending_marks[name] = asyncio.get_running_loop().call_later(delay, self._echo, name)
            elif kind == "clear":  # unplayed audio is dropped; its marks come back at once
                self._play_end = now
                for name, handle in list(self._pending_marks.items()):
                    handle.cancel()
                    self._echo(name)

    def _echo(self, name: str) -> None:
        self._pending_marks.pop(name, None)
        mark = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
        asyncio.get_running_loop().create_task(self._send(mark))

    async def _send(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._socket.send(json.dumps(event))


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(max(values))}


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        webhook = Webhook(client, args.webhook, args.signed_webhook, args.auth_token) if args.webhook else None
        return await _run_calls(args, webhook)


async def _run_calls(args: argparse.Namespace, webhook: Webhook | None) -> dict[str, Any]:
    speech = utterance_frames(args.speech)
    headers = {}
    if args.auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(args.auth_token).compute_signature(args.signed_url, {})
    rng = random.Random(args.seed)  # noqa: S311 — call timing jitter for a benchmark, nothing secret
    cpu_started, wall_started = time.process_time(), time.monotonic()
    callers = [
        Caller(
            args.url,
            headers,
            speech,
            args.turns,
            args.reply_timeout,
            random.Random(rng.random()),  # noqa: S311 — call timing jitter for a benchmark, nothing secret
            dials_after=n * args.arrive_every,
            webhook=webhook,
        )
        for n in range(args.calls)
    ]
    results = await asyncio.gather(*(caller.run() for caller in callers), return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    turned_away = sum(caller.turned_away for caller in callers)
    return {
        "calls": args.calls,
        "turned_away": turned_away,
        "turns": (args.calls - turned_away) * args.turns,
        "gaps_ms": [gap for caller in callers for gap in caller.gaps_ms],
        "missed": sum(caller.missed for caller in callers) + args.turns * len(failed),
        "failed_calls": failed,
        "lateness_ms": _quantiles([late for caller in callers for late in caller.lateness_ms]),
        "generator_cpu_percent": (time.process_time() - cpu_started) / (time.monotonic() - wall_started) * 100,
        "speech_secs": len(speech) * FRAME_SECS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws:// URL of the Media Streams endpoint")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--speech", type=Path, required=True, help="the caller's utterance (WAV)")
    parser.add_argument("--reply-timeout", type=float, default=5.0, help="seconds before a turn counts as missed")
    parser.add_argument("--signed-url", help="the public wss:// URL the signature covers")
    parser.add_argument("--auth-token", help="sign the WebSocket request as Twilio would")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--arrive-every", type=float, default=0.0, help="seconds between callers dialling (0: all at once)"
    )
    parser.add_argument(
        "--webhook", help="http:// URL of the voice webhook each caller asks before it dials the stream"
    )
    parser.add_argument("--signed-webhook", help="the public https:// URL the webhook's signature covers")
    args = parser.parse_args()
    try:
        import uvloop  # uvicorn[standard]'s event loop: tighter timers for the 20 ms grid

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run_calls(args))))


if __name__ == "__main__":
    main()
