"""A server loads at start only the shared models its deployments' calls use."""

from __future__ import annotations

import subprocess
import sys

from voxpipe.config.models import Deployment
from voxpipe.pipeline.shared_models import models_used


def _deployment(**fields: object) -> Deployment:
    return Deployment.model_validate({"name": "d", "agent": {"instructions": "x"}, **fields})


def test_models_used_follow_mode_vad_and_turn_strategy() -> None:
    assert models_used([_deployment()]) == {"silero"}
    assert models_used([_deployment(turn={"strategy": "smart_turn"})]) == {"silero", "smart_turn"}
    assert models_used([_deployment(mode="realtime", turn={"strategy": "smart_turn"})]) == set()
    assert models_used([_deployment(vad={"provider": "testkit_vad"})]) == set()
    assert models_used([_deployment(), _deployment(turn={"strategy": "smart_turn"})]) == {"silero", "smart_turn"}


def test_warm_up_for_silence_turns_leaves_the_smart_turn_model_unloaded() -> None:
    child = """
from voxpipe.config.models import Deployment
from voxpipe.pipeline.shared_models import silero_session, smart_turn_session, warm_up
warm_up([Deployment.model_validate({"name": "d", "agent": {"instructions": "x"}})])
print(silero_session.cache_info().currsize, smart_turn_session.cache_info().currsize)
warm_up()
print(silero_session.cache_info().currsize, smart_turn_session.cache_info().currsize)
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True, timeout=120)  # noqa: S603 — fixed argv of this interpreter or a dev tool, no outside input
    assert out.stdout.split("\n")[:2] == ["1 0", "1 1"]  # not told which deployments: both, as before
