"""Word error rate of a transcript against the words the caller actually said.

Both sides are normalised the way Whisper's evaluations normalise English (OpenAI's
``EnglishTextNormalizer``, packaged as ``whisper-normalizer``), so that differences of writing style are not
counted as recognition errors and figures compare with published ones: case and punctuation are dropped,
fillers ("um", "uh") removed, contractions expanded (``I'd`` -> ``i would``), British spellings made American
(``tyre`` -> ``tire``), spelled-out numbers, ordinals and amounts written as digits (``forty-five dollars``
-> ``$45``, ``twelfth`` -> ``12th``, ``two hundred and five`` -> ``205``). Two voxpipe steps come first, for
writings Whisper reads differently from their spoken forms: a clock time ``9:30`` / ``9.30`` is ``930`` as
``nine thirty`` is, and ``a.m.`` is ``am``; after it, ``ok`` is ``okay``.

The error count is the Levenshtein distance over words (substitutions + deletions + insertions); a corpus's
WER is the total of errors over the total of reference words, not the mean of per-utterance rates, so long
utterances weigh more than short ones (the usual definition).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from whisper_normalizer.english import EnglishTextNormalizer

SPELLINGS = {"ok": "okay"}
_CLOCK_TIME = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_ABBREVIATION_DOT = re.compile(r"(?<=\b[a-z])\.(?=[a-z]\b)", re.IGNORECASE)  # a.m. -> am., e.g. -> eg.


@functools.cache
def _whisper() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


def normalise(text: str) -> list[str]:
    """The words of ``text`` in Whisper's canonical English form (see the module docstring)."""
    text = _ABBREVIATION_DOT.sub("", _CLOCK_TIME.sub(r"\1\2", text))
    return [SPELLINGS.get(word, word) for word in _whisper()(text).split()]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: the fewest substitutions, deletions and insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        row = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = row
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Errors over reference words, after normalising both. Can exceed 1 when the STT adds words."""
    return corpus_word_error_rate([(reference, hypothesis)])


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Total errors over total reference words, for ``(reference, hypothesis)`` pairs."""
    errors = words = 0
    for reference, hypothesis in pairs:
        ref = normalise(reference)
        errors += word_errors(ref, normalise(hypothesis))
        words += len(ref)
    if words == 0:
        raise ValueError("word error rate needs at least one reference word")
    return errors / words
