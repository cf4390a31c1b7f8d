"""Calls that fail on the telephony transports, seen from the outside (issue 10, findings 5 and 7).

- Finding 5: a Media Streams call whose pipeline fails to build ends at once; the socket is closed (it used to
  wait for the input to be ready forever), and Twilio's ``<Connect action>`` then hangs up.
- Finding 7: ConversationRelay keypad digits reach the agent in order before the next prompt, and digits still
  pending when the session ends are stored in the conversation without calling the LLM.
The fault matrix (``test_fault_matrix.py``) covers what the caller hears when a provider fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.simulators.server import RunningServer
from tests.test_twilio_media import PUBLIC, deployment, simulator
from voxpipe.pipeline import host
from voxpipe.records.store import RecordStore
from voxpipe.web.app import create_app


async def test_a_pipeline_that_fails_to_build_closes_the_stream(
    tmp_path: Path, registry: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no pipeline today")

    monkeypatch.setattr(host, "build_measured", broken)
    app = create_app([deployment(tmp_path, ["hello"])], records=RecordStore(tmp_path / "calls.db"), warm_up=False)
    with RunningServer(app) as server:
        async with simulator(server) as call:
            started = time.monotonic()
            await call.wait_for(call.closed.is_set, timeout=5, what="the server to close the stream")
            assert call.closed_at is not None and call.closed_at - started < 2.0
            answer = await call.connect_action(f"{server.url}/phone/connect-action", f"{PUBLIC}/phone/connect-action")
        stopping = time.monotonic()
    # The stream's handler returned: the server stops at once (a handler stuck in its wait held it 15 s).
    assert time.monotonic() - stopping < 3.0
    assert "<Hangup />" in answer
