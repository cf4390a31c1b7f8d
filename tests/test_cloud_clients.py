"""The SDK's shared clients are closed when ``asyncio.run`` ends their loop: a Bedrock call run the way
``voxpipe call`` runs it leaves no aiohttp "Unclosed client session" behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fakes import Behaviour, FakeBedrock

ROOT = Path(__file__).resolve().parent.parent

#: One Bedrock request in a fresh process, under ``asyncio.run``, as the CLI runs a call.
CALL = """
import asyncio, gc, sys
from pipecat.frames.frames import LLMTextFrame
from tests.cloud_fixtures import build, drive_service
from tests.test_cloud_failures import ask_llm
from voxpipe.providers.builtin import bedrock

async def main():
    options = {"endpoint_url": sys.argv[1], "aws_access_key_id": "test-key", "aws_secret_access_key": "secret"}
    answered = lambda run: bool(run.of(LLMTextFrame))
    run = await drive_service(build(bedrock.PROVIDER, options), ask_llm, answered, timeout=10)
    print("REPLY", "".join(frame.text for frame in run.of(LLMTextFrame)))

asyncio.run(main())
gc.collect()
"""


def test_a_bedrock_call_leaves_no_unclosed_client_session() -> None:
    with FakeBedrock(Behaviour(api_key="test-key"), replies=["We open at nine."]) as fake:
        ran = subprocess.run(  # noqa: S603 — this interpreter, on the test's own script
            [sys.executable, "-c", CALL, fake.url], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    assert "REPLY We open at nine." in ran.stdout, ran.stderr[-2000:]
    assert "Unclosed" not in ran.stderr, ran.stderr[-2000:]
    assert fake.connections == 1
