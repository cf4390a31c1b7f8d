"""A call's stereo recording: caller on the left, bot on the right, both on the call's own clock.

Chunks of audio are placed at the time they were heard (sample 0 is the start of the call), so silence in
the file is silence on the line and the gap between the caller's last word and the bot's first is the true
voice-to-voice latency. The bot's chunks are the ones the output transport played: a reply cut by barge-in
stops where playback stopped. ``turn_gaps`` reads those gaps back from a WAV (``voxpipe calls --verify``).
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

AUDIBLE = 500  # |sample| above this (-36 dBFS) is sound: the same threshold the turn meter uses
NEW_REPLY_GAP_SECS = 0.3  # bot silence that separates two replies (as in the turn meter)
SNAP_SECS = 0.01  # jitter between consecutive chunks that is closed up rather than kept (see ``Track``)


def resample(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    """PCM16 mono from ``rate_in`` to ``rate_out`` Hz (soxr, high quality)."""
    if rate_in == rate_out:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(samples, rate_in, rate_out).astype(np.int16).tobytes()


def place(chunks: Sequence[tuple[float, bytes]], origin: float, rate: int) -> np.ndarray:
    """PCM16 ``chunks`` (start time, audio at ``rate``) laid on one track whose sample 0 is ``origin``."""
    end = max((round((t - origin) * rate) + len(pcm) // 2 for t, pcm in chunks), default=0)
    track = np.zeros(max(end, 0), dtype=np.int16)
    for t, pcm in chunks:
        start = round((t - origin) * rate)
        samples = np.frombuffer(pcm, dtype=np.int16)
        if start < 0:
            samples, start = samples[-start:], 0
        track[start : start + len(samples)] = samples
    return track


def silence(track: np.ndarray, stretches: Sequence[tuple[float, float]], origin: float, rate: int) -> None:
    """Zero ``track`` (sample 0 at ``origin``, at ``rate``) over each ``(start, end)`` stretch, in place."""
    for start, end in stretches:
        track[max(0, round((start - origin) * rate)) : max(0, round((end - origin) * rate))] = 0


def stereo_wav(left: np.ndarray, right: np.ndarray, rate: int) -> bytes:
    """A 16-bit stereo WAV file of two tracks (the shorter padded with silence)."""
    length = max(len(left), len(right))
    frames = np.stack([np.pad(left, (0, length - len(left))), np.pad(right, (0, length - len(right)))], axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames.astype(np.int16).tobytes())
    return buffer.getvalue()


@dataclass
class Track:
    """One side's audio as heard: ``(start time, PCM16 mono)`` chunks at one sample rate.

    A chunk's time is when the transport reports it heard or played (the caller's audio by its arrival, the
    bot's by its returned playout mark), which is exact for when it *ended* but jitters by milliseconds, and
    comes in bursts when marks bunch up (a busy loop, the network). ``laid_out`` places the chunks for the
    file, last to first: a chunk that overlaps the next one, or ends within ``SNAP_SECS`` of it, is put right
    before it (one side's audio plays in sequence, so nothing is overwritten, and no samples are inserted at
    the seams); one further away keeps its own time (a real gap). So no chunk is placed later than its time
    by more than ``SNAP_SECS``, nor earlier than the chunks after it prove it played.
    """

    rate: int = 0
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    def add(self, at: float, pcm: bytes, rate: int) -> None:
        if self.rate and rate != self.rate:
            pcm = resample(pcm, rate, self.rate)
        self.rate = self.rate or rate
        self.chunks.append((at, pcm))

    def laid_out(self) -> list[tuple[float, bytes]]:
        """The chunks at the times they are written to the file (see the class docstring)."""
        placed: list[tuple[float, bytes]] = []
        next_start = float("inf")
        for at, pcm in reversed(self.chunks):
            duration = len(pcm) / 2 / self.rate
            end = next_start if at + duration > next_start - SNAP_SECS else at + duration
            next_start = end - duration
            placed.append((next_start, pcm))
        return placed[::-1]


@dataclass
class CallAudio:
    """Both sides of a call, and the stretches to silence (a ``sensitive`` entry). Times: ``time.monotonic()``."""

    origin: float
    caller: Track = field(default_factory=Track)
    bot: Track = field(default_factory=Track)
    muted: list[tuple[float, float]] = field(default_factory=list)

    def wav(self) -> bytes:
        """The stereo WAV at the bot's rate (the caller resampled once, as a whole track)."""
        rate = self.bot.rate or self.caller.rate or 16000
        caller = place(self.caller.laid_out(), self.origin, self.caller.rate or rate)
        if self.caller.rate and self.caller.rate != rate:
            caller = np.frombuffer(resample(caller.tobytes(), self.caller.rate, rate), dtype=np.int16).copy()
        bot = place(self.bot.laid_out(), self.origin, rate)
        for track in (caller, bot):
            silence(track, self.muted, self.origin, rate)
        return stereo_wav(caller, bot, rate)


def read_stereo(data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """The caller and bot tracks of a stereo recording, and its sample rate."""
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getnchannels() != 2 or wav.getsampwidth() != 2:
            raise ValueError("not a voxpipe recording: expected a 16-bit stereo WAV")
        rate = wav.getframerate()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, 0], frames[:, 1], rate


def turn_gaps(data: bytes) -> list[float]:
    """Per turn, milliseconds from the caller's last audible sample to the bot's next reply, read from the audio.

    A reply starts at an audible bot sample after more than 0.3 s of bot silence; it is a turn when the caller
    was audible since the previous reply started (the greeting and pauses inside a reply are not turns).
    """
    caller, bot, rate = read_stereo(data)
    caller_loud = np.flatnonzero(np.abs(caller.astype(np.int32)) > AUDIBLE)
    bot_loud = np.flatnonzero(np.abs(bot.astype(np.int32)) > AUDIBLE)
    if not bot_loud.size:
        return []
    gap = int(NEW_REPLY_GAP_SECS * rate)
    starts = bot_loud[np.concatenate([[True], np.diff(bot_loud) > gap])]
    gaps, previous = [], -1
    for start in starts:
        spoke = caller_loud[(caller_loud > previous) & (caller_loud < start)]
        if spoke.size:
            gaps.append(round((start - (spoke[-1] + 1)) / rate * 1000, 1))
        previous = start
    return gaps
