"""Silero VAD for every call of a process in one batched ONNX run per tick, on the event loop, with no thread.

pipecat's ``VADAnalyzer.analyze_audio`` hands every audio frame of every call to a thread of that call's own
(``run_in_executor`` on a one-thread pool per analyzer) and runs the model there, one 32 ms window at a time.
On a server that hand-off is most of what VAD costs: at 20 calls on one core, the per-call VAD threads
waking on their queues were 38% of the process's CPU, Silero itself 7% (issue 12's profile). Here:

- ``BatchedSileroVADAnalyzer`` (one per call) cuts the caller's audio into the model's windows (256 samples
  at 8 kHz, 512 at 16 kHz, ~32 ms) and keeps the call's own Silero state (the recurrent state tensor and the
  context samples prepended to each window). A frame that completes no window is answered at once;
- ``SileroBatch`` (one per event loop) collects the pending windows of all calls for one tick
  (``TICK_SECS``) and scores them in one ``InferenceSession.run`` over the process's one Silero session
  (``shared_models.silero_session``), the states of the calls stacked on the model's batch axis. A call with
  several windows pending is scored in rounds (its second window in the second run of the tick), since each
  window starts from the state the previous one left.

What each score then does is pipecat's own code: ``VADAnalyzer._run_analyzer`` runs once per window, and its
call of ``voice_confidence`` gets the batch's score for that window (after pipecat's
``SileroVADAnalyzer._maybe_reset_model``, which may reset the call's state). So the speech start/stop
decisions are pipecat's at the window, whatever size the frames come in (tests/test_batched_vad.py compares
them with ``SileroVADAnalyzer`` on the corpus). The price is latency: a window waits up to one tick (10 ms)
for its batch. A batch of 16 windows costs ~40 us per window against ~120 us for a run of one
(``benchmarks/call_cpu.py`` measures the whole call).

pipecat's step also measures the loudness (ITU-R BS.1770) of the last 0.4 s for every window: ~36 us at 8 kHz,
about as much as the window's share of the batch. Where the answer is sure to be 0 it is not measured:
BS.1770 gates a block quieter than -70 LUFS to minus infinity, which pipecat reads as volume 0, and the
K-weighting filter amplifies no frequency by more than ``K_WEIGHTING_MAX_GAIN``, so a window whose own energy
is that far below the gate measures 0 whatever its spectrum. Checking costs one dot product (~3 us); the
silence between a caller's turns, and while the bot speaks, is such a window on a quiet line.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from dataclasses import dataclass, field

import numpy as np
from loguru import logger
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

from voxpipe.pipeline.shared_models import silero_session

TICK_SECS = 0.01  # how long a window may wait for the others of its batch
CONTEXT_SAMPLES = {8000: 32, 16000: 64}  # Silero prepends the previous window's tail to each window
STATE_SHAPE = (2, 1, 128)
SETTLED = (VADState.SPEAKING, VADState.QUIET)
# BS.1770: a block's loudness is -0.691 + 10 log10(mean square of the K-weighted samples), gated below -70 LUFS.
GATE_MEAN_SQUARE = 10 ** ((-70.0 + 0.691) / 10)
# The K-weighting filter's largest gain at any rate pipecat's VAD runs at (1.63 at 8 kHz, near 4 kHz; 1.61 at
# 16 kHz), with a margin: tests/test_batched_vad_volume.py checks both the filter and the gate against pipecat.
K_WEIGHTING_MAX_GAIN = 1.7


@dataclass
class _Stream:
    """One call's Silero model state, as pipecat's ``SileroOnnxModel`` keeps it, without a session of its own."""

    state: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    context: np.ndarray | None = None  # the previous window's last samples; None until the first window

    def reset_states(self) -> None:
        """What ``SileroVADAnalyzer._maybe_reset_model`` calls on its model: forget the audio so far."""
        self.state = np.zeros(STATE_SHAPE, np.float32)
        self.context = None


class BatchedSileroVADAnalyzer(SileroVADAnalyzer):
    """``SileroVADAnalyzer`` whose windows are scored in the event loop's ``SileroBatch``: no thread, no
    session of its own (``analyze_audio`` never reaches pipecat's executor, so its thread is never made)."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)  # skip the per-call model load
        self._model = _Stream()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        # Audio short of a window. (pipecat's ``_vad_buffer`` stays empty: ``_run_analyzer`` gets whole windows.)
        self._partial = b""
        self._waiting: list[bytes] = []  # windows cut but not scored yet
        self._score = 0.0  # the batch's score of the window being applied
        self._loudness_window = b""  # the audio pipecat's volume tracker measures (its last 0.4 s)

    @property
    def vad_state(self) -> VADState:
        return self._vad_state

    async def analyze_audio(self, buffer: bytes) -> VADState:
        audio, size = self._partial + buffer, self._vad_frames_num_bytes
        cut = len(audio) - len(audio) % size
        self._waiting += [audio[i : i + size] for i in range(0, cut, size)]
        self._partial = audio[cut:]
        if not self._waiting:
            return self._vad_state
        return await SileroBatch.of_running_loop().analyze(self)

    def voice_confidence(self, buffer: bytes) -> float:
        """The batch's score of ``buffer``, the window ``_run_analyzer`` is applying (see ``apply``)."""
        self._maybe_reset_model(self._score)
        return self._score

    def _get_smoothed_volume(self, audio: bytes) -> float:
        """pipecat's smoothed volume (``VADAnalyzer._get_smoothed_volume``, pinned), with the loudness of a
        window sure to be gated read as the 0 pipecat's measure gives it, without measuring (module doc)."""
        self._volume_tracker.update(audio, self.sample_rate)
        volume = 0.0 if self._surely_gated(audio) else self._volume_tracker.volume
        return exp_smoothing(volume, self._prev_volume, self._smoothing_factor)

    def _surely_gated(self, audio: bytes) -> bool:
        """Whether the last 0.4 s of audio is so quiet that its K-weighted loudness is below BS.1770's gate."""
        size = math.ceil(VOLUME_WINDOW_SECS * self.sample_rate) * 2  # as pipecat's tracker keeps it
        self._loudness_window = (self._loudness_window + audio)[-size:]
        samples = np.frombuffer(self._loudness_window, np.int16).astype(np.float64)
        mean_square = samples @ samples / (size // 2) / 32768.0**2  # (exact: integers below 2**53)
        return mean_square * K_WEIGHTING_MAX_GAIN**2 < GATE_MEAN_SQUARE

    def next_window(self) -> tuple[np.ndarray, np.ndarray]:
        """The model input of the first waiting window (context + samples, float32) and the state it starts from."""
        samples = np.frombuffer(self._waiting[0], np.int16).astype(np.float32) / 32768.0
        context = self._model.context
        if context is None:
            context = np.zeros(CONTEXT_SAMPLES[self.sample_rate], np.float32)
        return np.concatenate((context, samples)), self._model.state

    def apply(self, score: float, state: np.ndarray, window_input: np.ndarray) -> VADState:
        """The batch scored the first waiting window: keep the model state, then run pipecat's step for it."""
        self._model.state = state
        self._model.context = window_input[-CONTEXT_SAMPLES[self.sample_rate] :]
        self._score = score
        return self._run_analyzer(self._waiting.pop(0))  # calls voice_confidence once, for this window

    @property
    def has_waiting(self) -> bool:
        return bool(self._waiting)


class SileroBatch:
    """Scores the waiting windows of every call on one event loop, one ``InferenceSession.run`` per round."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_secs: float = TICK_SECS):
        self._loop = loop
        self._tick_secs = tick_secs
        self._calls: list[tuple[BatchedSileroVADAnalyzer, asyncio.Future[VADState]]] = []
        self._flush: asyncio.TimerHandle | None = None
        self.runs = 0  # inference runs so far (each over every call with a window waiting)
        self.windows = 0  # windows scored so far

    @classmethod
    def of_running_loop(cls) -> SileroBatch:
        loop = asyncio.get_running_loop()
        batch = _BATCHES.get(loop)
        if batch is None:
            batch = _BATCHES[loop] = cls(loop)
        return batch

    def analyze(self, analyzer: BatchedSileroVADAnalyzer) -> asyncio.Future[VADState]:
        """Score ``analyzer``'s waiting windows in the next batch; the future is the VAD state they lead to."""
        future: asyncio.Future[VADState] = self._loop.create_future()
        self._calls.append((analyzer, future))
        if self._flush is None:
            self._flush = self._loop.call_later(self._tick_secs, self.run)
        return future

    def run(self) -> None:
        """Score every waiting window now: round after round, each call's next window in each round."""
        self._flush = None
        calls = [(a, f) for a, f in self._calls if not f.done()]  # a cancelled call waits no more
        self._calls = []
        live = [analyzer for analyzer, _ in calls]
        settled: dict[int, VADState] = {}
        failed: dict[int, Exception] = {}  # one call's failure is that call's: the others get their states
        while live:
            for rate in {analyzer.sample_rate for analyzer in live}:
                self._run_round([a for a in live if a.sample_rate == rate], rate, settled, failed)
            live = [analyzer for analyzer in live if analyzer.has_waiting and id(analyzer) not in failed]
        for analyzer, future in calls:
            if id(analyzer) in failed:
                future.set_exception(failed[id(analyzer)])
            else:
                future.set_result(_reported(analyzer.vad_state, settled.get(id(analyzer))))

    def _run_round(
        self,
        analyzers: list[BatchedSileroVADAnalyzer],
        rate: int,
        settled: dict[int, VADState],
        failed: dict[int, Exception],
    ) -> None:
        inputs, states = zip(*(analyzer.next_window() for analyzer in analyzers), strict=True)
        window_inputs = np.stack(inputs)
        try:
            scores, new_states = silero_session().run(
                None,
                {
                    "input": window_inputs,
                    "state": np.concatenate(states, axis=1),
                    "sr": np.array(rate, dtype=np.int64),
                },
            )
        except Exception as exc:  # as pipecat's voice_confidence does: the windows count as silence
            logger.error(f"Error analyzing audio with Silero VAD: {exc}")
            scores, new_states = np.zeros((len(analyzers), 1), np.float32), np.concatenate(states, axis=1)
        self.runs += 1
        self.windows += len(analyzers)
        for index, analyzer in enumerate(analyzers):
            try:
                state = analyzer.apply(float(scores[index, 0]), new_states[:, index : index + 1], window_inputs[index])
            except Exception as exc:
                failed[id(analyzer)] = exc
                continue
            if state in SETTLED:
                settled[id(analyzer)] = state


_BATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatch] = weakref.WeakKeyDictionary()


def _reported(final: VADState, last_settled: VADState | None) -> VADState:
    """The state to report for a frame whose windows ended in ``final``.

    pipecat's ``VADController`` acts only on SPEAKING and QUIET. When a frame spans several windows, a start
    (or stop) reached in one of them and followed by a transitional state in the next would go unseen; so the
    last settled state of the frame is reported instead of a transitional final one.
    """
    if final in SETTLED or last_settled is None:
        return final
    return last_settled
