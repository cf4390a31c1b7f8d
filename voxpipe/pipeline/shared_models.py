"""The VAD and turn-model ONNX sessions, loaded once per process and shared by every call.

Plain pipecat builds a new ``onnxruntime.InferenceSession`` for each analyzer, so every call pays
~10 MB (Silero) and ~21 MB (smart-turn v3) plus load time. An InferenceSession is stateless and safe to
``run`` from several threads; the per-stream state (Silero's RNN state and context window, smart-turn's
audio buffer) lives in the analyzer objects, which stay one per call. Silero's calls are also scored
together, in one batched run per tick (``batched_vad``). Measure with ``benchmarks/memory_per_call.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from voxpipe.config.models import Deployment, SmartTurn


def _bundled(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


@functools.cache
def silero_session() -> ort.InferenceSession:
    """The one Silero VAD session of this process (pipecat's bundled model)."""
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        _bundled("pipecat.audio.vad.data", "silero_vad.onnx"),
        providers=["CPUExecutionProvider"],
        sess_options=options,
    )


@functools.cache
def smart_turn_session() -> ort.InferenceSession:
    """The one smart-turn v3 session of this process (pipecat's bundled CPU model)."""
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        _bundled("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx"), sess_options=options
    )


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """``LocalSmartTurnAnalyzerV3`` that reuses the process-wide ONNX session instead of loading its own."""

    def __init__(self, *, sample_rate: int | None = None, params: SmartTurnParams | None = None, **kwargs: Any):
        BaseSmartTurn.__init__(self, sample_rate=sample_rate, params=params, **kwargs)  # skip the model load
        self._log_data = False
        self._session = smart_turn_session()


def models_used(deployments: Iterable[Deployment]) -> set[str]:
    """The shared models calls of ``deployments`` load: ``silero`` (a cascade's local VAD) and ``smart_turn``.

    A realtime deployment needs neither (its provider detects turns); an experiment's variants are separate
    ``Deployment``s, to be passed too.
    """
    cascades = [d for d in deployments if d.mode == "cascade"]
    used = {"silero"} if any(d.vad.provider == "silero" for d in cascades) else set()
    return used | ({"smart_turn"} if any(isinstance(d.turn, SmartTurn) for d in cascades) else set())


def warm_up(deployments: Iterable[Deployment] | None = None) -> None:
    """Load now, not on a first call, the shared models ``deployments`` use (all of them if not told which).

    The smart-turn model costs ~10 MB and 40-150 ms to load: a server whose deployments end turns on
    silence should not pay for it (``benchmarks/startup_models.py``).
    """
    used = models_used(deployments) if deployments is not None else {"silero", "smart_turn"}
    if "silero" in used:
        silero_session().run(
            None,
            {
                "input": np.zeros((1, 576), dtype=np.float32),
                "state": np.zeros((2, 1, 128), dtype=np.float32),
                "sr": np.array(16000, dtype=np.int64),
            },
        )
    if "smart_turn" in used:
        smart_turn_session()
