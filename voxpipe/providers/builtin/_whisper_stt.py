"""The pipecat service behind ``local_whisper`` (imported by ``build`` only: it pulls in pipecat and CTranslate2)."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import soxr
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.whisper.stt import language_to_whisper_language
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

WHISPER_RATE = 16000  # whisper's feature extractor expects 16 kHz mono
WINDOW_FRAMES = 3000  # whisper's fixed 30 s window, in 10 ms feature frames
TRIM_PAD_FRAMES = 300  # silence kept after the speech when the window is trimmed (3 s; 2 s or less loops more)
# A transcript whose decoding did not end within this many tokens per second of audio (plus a few) is
# a repetition loop, not speech: whisper says about 3 tokens per second of fast speech.
MAX_TOKENS_PER_SEC, MIN_MAX_TOKENS = 8, 10
# Whisper's rule for "no speech here": a likely no-speech token and an unsure transcript.
NO_SPEECH_PROB, LOG_PROB_FLOOR = 0.6, -1.0
# Speech end to final transcript at p99 (VAD stop + transcription) as measured by
# benchmarks/local_stages.py; turn strategies use it to know how long to wait for the text.
TTFS_P99_SECS = 0.7


@dataclass(frozen=True)
class Decoding:
    """How a transcript is searched for: ``beam_size`` beams (1: greedy), with ``prompt`` (words the callers use)
    as whisper's previous text. With ``beam_below_log_prob``, the utterance is decoded greedily first and the
    beams run only when the greedy transcript's average log-probability per token is below it (the encoding is
    reused, so an unsure utterance costs one extra decoding, not a second encoding)."""

    beam_size: int = 1
    prompt: str = ""
    beam_below_log_prob: float | None = None


@dataclass(frozen=True)
class SharedWhisper:
    """One loaded model and the single thread that may run it (CTranslate2 calls are not reentrant here)."""

    model: WhisperModel
    executor: ThreadPoolExecutor
    trim_window: bool

    def transcribe(self, pcm: bytes, sample_rate: int, language: str, decoding: Decoding = Decoding()) -> str:
        """16-bit mono PCM -> text; blocking, so call it on ``executor``."""
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if sample_rate != WHISPER_RATE:
            audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
        if self.trim_window:
            text = self._transcribe_trimmed(audio, language, decoding)
            if text is not None:
                return text
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=decoding.beam_size,
            # One float, not the default fallback tuple: the fallback resamples at higher
            # temperatures when a segment looks poor, which makes the text random.
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            initial_prompt=decoding.prompt or None,
        )
        # The segments are decoded lazily, while iterated: this must stay in the worker thread.
        return cut_repetition(" ".join(segment.text.strip() for segment in segments).strip())

    def _transcribe_trimmed(self, audio: np.ndarray, language: str, decoding: Decoding) -> str | None:
        """Decode the utterance with whisper's window cut to the speech plus 3 s of silence.

        faster-whisper always encodes 30 s, which is most of its time on a short utterance (0.4 of
        0.5 s for tiny.en on two cores); the encoder takes shorter inputs and, with that much trailing
        silence, gives the same words. The failure mode of a short window is a repetition loop
        ("Yes? Yes? Yes?", "Where is the shop? Where is the shop?"), so a transcript that does not end or
        repeats itself returns ``None`` and the caller decodes the full window; a caller who really said
        "five five five" costs one extra decoding, not a wrong transcript. Also ``None`` for audio longer
        than a window.
        """
        features = self.model.feature_extractor(audio)[:, :-1]  # the extractor adds one frame of padding
        frames = features.shape[-1]
        if frames + TRIM_PAD_FRAMES > WINDOW_FRAMES:
            return None
        encoded = self.model.encode(np.pad(features, ((0, 0), (0, TRIM_PAD_FRAMES))))
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, "transcribe", language)
        # As faster-whisper builds it: the previous-text marker, the prompt's tokens, then the task.
        prompt = decoding.prompt.strip()
        previous = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt)] if prompt else []
        start = [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        max_new_tokens = MIN_MAX_TOKENS + MAX_TOKENS_PER_SEC * frames // 100

        def decode(beams: int) -> tuple[str, int, float, float]:
            """(text, tokens, average log-probability per token, no-speech probability) of one search."""
            result = self.model.model.generate(
                encoded,
                [start],
                beam_size=beams,
                max_length=len(start) + max_new_tokens,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            )[0]
            tokens = result.sequences_ids[0]
            average = result.scores[0] * len(tokens) / (len(tokens) + 1)  # as faster-whisper computes it
            return tokenizer.decode(tokens).strip(), len(tokens), average, result.no_speech_prob

        unsure_below = decoding.beam_below_log_prob if decoding.beam_size > 1 else None
        text, count, average_log_prob, no_speech_prob = decode(decoding.beam_size if unsure_below is None else 1)
        if unsure_below is not None and average_log_prob < unsure_below:
            logger.debug(f"local_whisper: greedy unsure ({average_log_prob:.2f}); {decoding.beam_size}-beam search")
            text, count, average_log_prob, no_speech_prob = decode(decoding.beam_size)
        if count >= max_new_tokens or _repeats_itself(text):
            logger.debug(f"local_whisper: trimmed window looped ({text[:60]!r}); decoding the full window")
            return None
        if no_speech_prob > NO_SPEECH_PROB and average_log_prob < LOG_PROB_FLOOR:
            return ""
        return text


def cut_repetition(text: str) -> str:
    """``text`` without a decoding loop at its end: a phrase of three or more words said again and again to the
    end (the last repeat may be cut off mid-word).

    "Can you repair a flat tire while I wait? Can you repair a flat tire while" -> the first sentence.
    Shorter repeats and repeats followed by new words stay: a caller does say "five five five", or
    "I want to, I want to book".
    """
    words = text.split()
    keys = [re.sub(r"[^\w']", "", word.lower()) for word in words]
    for start in range(3, len(words)):
        for phrase_start in range(start - 2):
            phrase, tail = keys[phrase_start:start], keys[start:]
            looped = all(word == phrase[k % len(phrase)] for k, word in enumerate(tail[:-1]))
            last = phrase[(len(tail) - 1) % len(phrase)]
            if len(tail) >= 3 and looped and last.startswith(tail[-1]):
                return " ".join(words[:start])
    return text


def _repeats_itself(text: str) -> bool:
    """Whether a phrase of two or more words comes twice in a row, or one word three times."""
    words = re.findall(r"[\w']+", text.lower())
    for size in range(1, len(words) // 2 + 1):
        times = 3 if size == 1 else 2
        for start in range(len(words) - times * size + 1):
            phrase = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == phrase for k in range(1, times)):
                return True
    return False


@functools.cache
def load_whisper(model_path: str, cpu_threads: int, trim_window: bool) -> SharedWhisper:
    """Load a model once per process (keyed by path, threads and window) and warm it up."""
    logger.debug(f"local_whisper: loading {model_path}")
    model = WhisperModel(str(Path(model_path)), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local_whisper")
    shared = SharedWhisper(model, executor, trim_window)
    # The first transcription of a process is about twice as slow; pay for it here, not on a caller.
    shared.transcribe(bytes(WHISPER_RATE), WHISPER_RATE, model.supported_languages[0])
    return shared


class LocalWhisperSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with a process-wide faster-whisper model.

    Works like pipecat's ``WhisperSTTService`` (raw PCM segments, processing metrics around the model
    call, TTFB from the base class) but shares one model between calls and decodes deterministically.
    """

    def __init__(
        self,
        *,
        whisper: SharedWhisper,
        model_name: str,
        language: str,
        decoding: Decoding,
        **kwargs,
    ) -> None:
        super().__init__(
            settings=STTSettings(model=model_name, language=language),
            ttfs_p99_latency=TTFS_P99_SECS,
            **kwargs,
        )
        self._whisper = whisper
        self._decoding = decoding
        supported = whisper.model.supported_languages
        if self._settings.language not in supported:
            raise ValueError(
                f"whisper model {model_name!r} cannot transcribe {language!r}; it knows {sorted(supported)}"
            )

    @property
    def wants_wav_segments(self) -> bool:
        """Segments arrive as raw 16-bit PCM, which the model reads directly."""
        return False

    def can_generate_metrics(self) -> bool:
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        return language_to_whisper_language(language)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        # A whisper code such as "en"; Language is a StrEnum, so downstream reads either.
        language = cast("Language", self._settings.language)
        await self.start_processing_metrics()
        try:
            text = await asyncio.get_running_loop().run_in_executor(
                self._whisper.executor,
                self._whisper.transcribe,
                audio,
                self.sample_rate,
                str(language),
                self._decoding,
            )
        finally:
            await self.stop_processing_metrics()
        if text:
            logger.debug(f"{self}: transcription [{text}]")
            # One segment gives one final transcript, so the turn strategy need not wait for more.
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language, finalized=True)
