"""A Twilio call on the serverless audio bridge is recorded as the caller heard it, as on ``voxpipe serve``.

The Twilio simulator (every event numbered, marks echoed once played, ``clear`` honoured) talks to the API
Gateway WebSocket shim; ``worker.handler`` runs in Lambda-like containers and queues each event in SQS (moto
server, FIFO); ``BridgeWorker`` runs the pipeline (voxpipe-testkit providers) and posts the bot's audio back in
200 ms windows through ``@connections``. The marks come back the long way (shim, Lambda, SQS, the worker's long
poll), so this proves the bot channel is laid out by the returned marks, with the server's own assertions
(``tests/test_recording_twilio.py``): the bot channel is where the simulator played it within one 40 ms media
event, nothing of the interrupted story is in the file after the ``clear``, and each turn's gap in the WAV
matches the record's voice-to-voice within 20 ms.

The simulator sends 40 ms media events instead of Twilio's 20 ms: each message runs through a Python
subprocess and a moto request, and 50 a second overload a two-core test machine (the queue then lags by
seconds, which no caller would sit through). The timestamps say the spacing, as Twilio's do; a returned mark
is then placed within 20 ms (half the spacing) rather than 10. The cut at a barge-in is timed when the worker
sends the ``clear``; the caller stops when it arrives, after API Gateway's ``@connections`` post: 10-16 ms later
on a quiet two-core machine, past 20 ms under a full test run's load. Hence one media event (40 ms) either way,
where the server's test allows one 20 ms frame.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.apigw_shim import wait_until
from tests.simulators.twilio_media import TwilioMediaSimulator
from tests.test_recording_twilio import assert_recorded_as_heard, barge_in_call
from tests.test_serverless_worker import (  # noqa: F401 — aws, environ and bridge are fixtures
    BRIDGE_URL,
    FAST,
    TOKEN,
    Bridge,
    aws,
    bridge,
    environ,
)
from tests.test_twilio_media import DEPLOYMENT, PUBLIC, STORY

MEDIA_SECS = 0.04


async def test_a_bridged_twilio_call_is_recorded_as_the_caller_heard_it(
    bridge: Bridge,  # noqa: F811
    tmp_path: Path,
) -> None:
    transcripts = json.dumps(["what are your hours", "tell me a story", "sorry to interrupt"])
    phone = DEPLOYMENT.format(transcripts=transcripts, story=STORY, public=PUBLIC, db=tmp_path / "s.db")
    recorded = phone + f'recording: {{enabled: true, store: "file://{tmp_path / "rec"}"}}\n'
    async with bridge(recorded, FAST) as (shim, worker):
        simulator = TwilioMediaSimulator(shim.client_url, BRIDGE_URL, auth_token=TOKEN, frame_secs=MEDIA_SECS)
        async with simulator as call:
            await barge_in_call(call)
        await wait_until(lambda: not worker.calls, timeout=30)  # $disconnect -> SQS -> the call ends
        [record] = await wait_until(worker.host.bookkeeping.records.list)
    assert record.call_id == call.call_sid
    assert_recorded_as_heard(call, record, tmp_path / "rec", within_secs=MEDIA_SECS)
