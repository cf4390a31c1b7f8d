"""The fault matrix's served transports: one call of a deployment over Twilio Media Streams or ConversationRelay.

Each driver serves the deployment with the web app (``voxpipe.web``) on 127.0.0.1, places one call through
the transport's simulator (real sockets, signed as Twilio signs them), says ``asked`` and reports what the
caller experienced (``Observed``):

- Twilio Media Streams: the caller's speech goes out as mu-law media; if the app ends the stream, Twilio
  posts the ``<Connect action>`` webhook at once, and the ``<Say>`` of the TwiML it answers is what the caller
  is told (Twilio's own voice), when that answer came back. A call that answers is hung up by the caller
  (``stop``).
- ConversationRelay: the caller's words go out as a ``prompt``; the caller is told the text that ends with
  ``last: true`` right before an ``end``, and the call is over at the ``end``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tests.simulators.conversation_relay import RelaySimulator
from tests.simulators.server import RunningServer
from tests.simulators.twilio_media import RATE, TwilioMediaSimulator
from voxpipe.bench.simulated_call import INPUT_RATE, resample
from voxpipe.config.models import Deployment, SessionsConfig, TransportConfig, TwilioConfig
from voxpipe.records.model import CallRecord
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app

PUBLIC = "https://voice.example.com"
PUBLIC_WS = "wss://voice.example.com"  # what Twilio signs a WebSocket handshake over
TOKEN = "matrix-auth-token"  # noqa: S105 — a made-up credential for a local fake; nothing real
CALL_SECS = 20.0  # the longest a matrix call may take before the driver gives up
SAY = re.compile(r"<Say>(.*?)</Say>")


class HungVendor:
    """A vendor that accepts connections on 127.0.0.1 and never says a word (a hung handshake), noting when it
    was first reached (``time.monotonic()``): the moment of the fault."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.first_contact: float | None = None
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hung-vendor", daemon=True)

    def __enter__(self) -> HungVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
        for connection in [*self._held, self._listener]:
            connection.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.first_contact = self.first_contact or time.monotonic()
            self._held.append(connection)  # open and silent until the test ends


@dataclass(frozen=True)
class Observed:
    """What a transport's caller experienced: the call's record, what they were told when the call could not go
    on and when (``None`` if they were not), and when the call was over for them (``time.monotonic()``)."""

    record: CallRecord
    told: str | None
    told_at: float | None
    ended_at: float


def served(deployment: Deployment) -> Deployment:
    """``deployment`` as ``voxpipe serve`` runs it for Twilio: its public URL and the account's auth token (and
    conversations kept in memory, not in a file of the working directory)."""
    twilio = TwilioConfig(auth_token=SecretStr(TOKEN))
    transport = TransportConfig(public_url=PUBLIC, twilio=twilio)
    return deployment.model_copy(update={"transport": transport, "sessions": SessionsConfig(store="memory")})


@contextmanager
def serving(deployment: Deployment) -> Iterator[tuple[RunningServer, RecordStore, str]]:
    """The web app serving ``deployment`` for Twilio on 127.0.0.1: its server, record store and path prefix."""
    phone = served(deployment)
    with tempfile.TemporaryDirectory() as tmp:
        records = RecordStore(Path(tmp) / "calls.db")
        with RunningServer(create_app([phone], records=records, warm_up=False)) as server:
            yield server, records, f"/{phone.name}"


async def the_record(records: RecordStore) -> CallRecord:
    """The call's record: it is saved once the call's pipeline has ended, just after the socket closed."""
    for _ in range(100):
        saved = records.list()
        if saved:
            return saved[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the call left no record")


async def on_twilio(deployment: Deployment, asked_pcm16k: bytes) -> Observed:
    """One Twilio Media Streams call (see the module docstring)."""
    with serving(deployment) as (server, records, path):
        simulator = TwilioMediaSimulator(f"{server.ws_url}{path}/media", f"{PUBLIC_WS}{path}/media", TOKEN)
        async with simulator as call:
            # Not ``speak``: a call that fails at once closes the stream before the caller is done.
            spoke_at = time.monotonic() + call.say(resample(asked_pcm16k, INPUT_RATE, RATE))
            deadline = spoke_at + CALL_SECS
            while not call.closed.is_set() and not _answered(call, spoke_at) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not call.closed.is_set():  # answered (or stuck): the caller hangs up
                await call.send({"event": "stop", "streamSid": call.stream_sid})
                await asyncio.wait_for(call.closed.wait(), CALL_SECS)
                told, told_at = None, None
            else:
                action = f"{path}/connect-action"
                said = SAY.search(await call.connect_action(server.url + action, PUBLIC + action))
                # Told when Twilio has the <Say> to speak: the webhook's answer came (it is posted at the close).
                told, told_at = (said.group(1), time.monotonic()) if said else (None, None)
            ended_at = call.closed_at or time.monotonic()
        record = await the_record(records)
    return Observed(record, told, told_at, ended_at)


def _answered(call: TwilioMediaSimulator, spoke_at: float) -> bool:
    """The caller heard the bot since they spoke, and it has been quiet for half a second since."""
    heard = [p for p in call.heard_after(spoke_at) if max(p.pcm, default=0)]
    return bool(heard) and time.monotonic() - heard[-1].at > 0.5


async def on_relay(deployment: Deployment, asked: str) -> Observed:
    """One ConversationRelay session (see the module docstring)."""
    with serving(deployment) as (server, records, path):
        async with RelaySimulator(f"{server.ws_url}{path}/relay", f"{PUBLIC_WS}{path}/relay", TOKEN) as call:
            await call.prompt(asked)
            told, told_at, ended_at = await _until_end_or_answer(call)
        record = await the_record(records)
    return Observed(record, told, told_at, ended_at)


async def _until_end_or_answer(call: RelaySimulator) -> tuple[str | None, float | None, float]:
    """Read the session until ``end`` (returns the ``last`` text right before it, when it came, and when the
    ``end`` came) or until a reply that no ``end`` follows (an answer: the caller hangs up)."""
    last_text: tuple[str, float] | None = None
    while True:
        try:
            message: dict[str, Any] = await call.next_message(0.5 if last_text else CALL_SECS)
        except TimeoutError:
            return None, None, time.monotonic()  # a reply, and no end after it
        now = time.monotonic()
        if message.get("type") == "end":
            return (last_text[0], last_text[1], now) if last_text else (None, None, now)
        if message.get("type") == "text":
            last_text = (message["token"], now) if message["last"] else None
