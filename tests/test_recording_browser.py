"""A browser call that reconnects keeps each connection's recording, as a Twilio call does.

The page is played by ``Page`` below over the real socket, in the browser dialect the page's app.js speaks:
its session token as a subprotocol, ``start``, 16 kHz PCM16 ``media`` in 20 ms frames at real time (the
microphone never stops: silence between words), each ``mark`` echoed when the audio before it has played.
A reload of the tab is a new socket with the same token, so the same session id: the call resumes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from tests.simulators import page_subprotocols, page_token
from tests.simulators.server import RunningServer
from tests.test_recording_twilio import audible_stretches, phone_app, recorded_to
from voxpipe.records.recording import AUDIBLE, read_stereo
from voxpipe.records.recording_store import uploader
from voxpipe.records.store import RecordStore

ORIGIN = "https://app.example.com"
RATE = 16000
FRAME = RATE // 50  # 20 ms


def speech(secs: float) -> bytes:
    """The caller's 'speech': a 300 Hz tone at 16 kHz."""
    t = np.arange(int(secs * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


class Page:
    """One connection of the browser page (``async with``); ``heard``: the bot's audible PCM, in order."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.heard: list[bytes] = []
        self._speech: deque[bytes] = deque()
        self._played_until = 0.0  # when the page's playback buffer runs dry (monotonic)
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Page:
        self.socket = await websockets.connect(self.url, origin=ORIGIN, subprotocols=page_subprotocols(self.token))
        await self.socket.send(json.dumps({"event": "start", "start": {"sampleRate": RATE}}))
        self._tasks = [asyncio.create_task(self._microphone()), asyncio.create_task(self._receive())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.socket.transport.abort()  # the tab reloads: the socket is gone, no stop event

    def say(self, pcm: bytes) -> None:
        self._speech.extend(pcm[i : i + 2 * FRAME].ljust(2 * FRAME, b"\0") for i in range(0, len(pcm), 2 * FRAME))

    async def _microphone(self) -> None:
        next_at = time.monotonic()
        while True:
            frame = self._speech.popleft() if self._speech else bytes(2 * FRAME)
            await self.socket.send(
                json.dumps({"event": "media", "media": {"payload": base64.b64encode(frame).decode()}})
            )
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _receive(self) -> None:
        async for message in self.socket:
            event = json.loads(message)
            if event["event"] == "media":
                pcm = base64.b64decode(event["media"]["payload"])
                self._played_until = max(self._played_until, time.monotonic()) + len(pcm) / 2 / RATE
                if np.abs(np.frombuffer(pcm, dtype="<i2")).max(initial=0) > AUDIBLE:
                    self.heard.append(pcm)
            elif event["event"] == "mark":
                self._tasks.append(asyncio.create_task(self._echo(event["mark"]["name"], self._played_until)))

    async def _echo(self, name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        await self.socket.send(json.dumps({"event": "mark", "mark": {"name": name}}))

    @property
    def heard_secs(self) -> float:
        return sum(len(pcm) for pcm in self.heard) / 2 / RATE

    async def turn(self, secs: float) -> None:
        """Say ``secs`` of speech and wait until the answer has played (nothing new heard for 0.6 s)."""
        before = len(self.heard)
        self.say(speech(secs))
        deadline = time.monotonic() + 30
        while len(self.heard) == before:
            assert time.monotonic() < deadline, "no answer"
            await asyncio.sleep(0.05)
        heard = -1
        while heard != len(self.heard):
            heard = len(self.heard)
            await asyncio.sleep(0.6)


async def test_a_reloaded_page_keeps_each_connections_recording(tmp_path: Path, registry: object) -> None:
    """The page greets and answers a 0.5 s question, the tab reloads (socket cut), the resumed call answers a
    1.2 s question: two WAVs on the call's one record, each with its own connection's audio."""
    page_allowed = {"transport": {"browser": {"allowed_origins": [ORIGIN]}}}
    app = phone_app(tmp_path, ["what are your hours"], recorded_to(tmp_path) | page_allowed)
    with RunningServer(app) as running:
        with httpx.Client(base_url=running.url) as client:
            token = page_token(client, "phone", ORIGIN)
        url = f"{running.ws_url}/phone/ws"
        async with Page(url, token) as page:
            await asyncio.sleep(2.0)  # the greeting plays
            await page.turn(0.5)
        await asyncio.sleep(1.0)
        assert uploader.drain(30)
        [first_wav] = (tmp_path / "rec").glob("*.wav")
        first_bytes = first_wav.read_bytes()
        async with Page(url, token) as again:
            await asyncio.sleep(1.0)
            assert not again.heard  # resumed, not greeted
            await again.turn(1.2)
        await asyncio.sleep(1.0)
    assert uploader.drain(30)

    [record] = RecordStore(tmp_path / "calls.db").list()
    wavs = sorted((tmp_path / "rec").glob("*.wav"))
    assert len(wavs) == 2 and wavs[0] == first_wav and first_wav.read_bytes() == first_bytes
    assert [r.location for r in record.recordings] == [w.as_uri() for w in wavs]
    assert [r.turns for r in record.recordings] == [[1], [2]]
    (first_caller, first_bot, rate), (second_caller, second_bot, _) = (read_stereo(w.read_bytes()) for w in wavs)
    greeting, answer = audible_stretches(first_bot, rate)
    [answer_again] = audible_stretches(second_bot, rate)
    assert abs(greeting + answer - page.heard_secs) < 0.1 and abs(answer_again - again.heard_secs) < 0.1
    [asked], [asked_again] = audible_stretches(first_caller, rate), audible_stretches(second_caller, rate)
    assert abs(asked - 0.5) < 0.05 and abs(asked_again - 1.2) < 0.05
