"""Word error rate of a transcript against the words the caller actually said.

Both sides are normalised the same way before words are compared, so that differences of writing style are
not counted as recognition errors: case, punctuation, hyphens and apostrophes are dropped, ``$45`` becomes
``45 dollars``, ``9:30`` and ``9.30`` become ``9 30`` (so ``3.5`` is ``3 5``, and ``three point five``, with
its extra word, counts one error), and spelled-out numbers become digits (``forty-five`` -> ``45``,
``two hundred and five`` -> ``205``, ``twelfth`` -> ``12th``). Number words are only joined when they read as
one number: ``nine thirty`` stays two numbers, as a clock time should.

The error count is the Levenshtein distance over words (substitutions + deletions + insertions); a corpus's
WER is the total of errors over the total of reference words, not the mean of per-utterance rates, so long
utterances weigh more than short ones (the usual definition).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SMALL = {word: value for value, word in enumerate(_UNITS + _TEENS)}
TENS = {word: 20 + 10 * index for index, word in enumerate(_TENS)}
SCALES = {"thousand": 1_000, "million": 1_000_000}
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
    "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
FILLERS = frozenset({"uh", "um", "erm", "hmm", "mm"})
SPELLINGS = {"ok": "okay"}

_CURRENCY = re.compile(r"\$(\d[\d,]*(?:\.\d+)?)")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DIGIT_SEPARATOR = re.compile(r"(?<=\d)[:.](?=\d)")  # 9:30, 9.30 (whisper writes times both ways)
_ABBREVIATION_DOT = re.compile(r"(?<=\b[a-z])\.(?=[a-z]\b)")  # a.m. -> am., e.g. -> eg.
_NOT_WORD = re.compile(r"[^a-z0-9\s]")


def _ordinal(value: int) -> str:
    suffix = "th" if 10 <= value % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"


class _Number:
    """A spelled-out number being read word by word (``two hundred and five``)."""

    def __init__(self) -> None:
        self.total = 0  # completed thousands / millions
        self.current = 0  # the part below the last scale word
        self.last: str | None = None  # kind of the previous word: small, tens, hundred, scale

    def accepts(self, word: str) -> bool:
        """Whether ``word`` continues this number rather than starting another one."""
        if self.last is None:
            return word in SMALL or word in TENS or word in ORDINALS
        below_hundred = self.current % 100
        if word in SMALL or word in ORDINALS:
            value = SMALL.get(word, ORDINALS.get(word, 0))
            if self.last == "tens":
                return 0 < value < 10
            return self.last in ("hundred", "scale") and below_hundred == 0
        if word in TENS:
            return self.last in ("hundred", "scale") and below_hundred == 0
        if word == "hundred":
            return self.last in ("small", "tens") and 0 < self.current < 100
        return word in SCALES and self.last != "scale" and (self.current > 0 or self.total > 0)

    def add(self, word: str) -> None:
        if word in SMALL or word in TENS or word in ORDINALS:
            self.current += SMALL.get(word, TENS.get(word, ORDINALS.get(word, 0)))
            self.last = "tens" if word in TENS else "small"
        elif word == "hundred":
            self.current *= 100
            self.last = "hundred"
        else:
            self.total += max(self.current, 1) * SCALES[word]
            self.current = 0
            self.last = "scale"

    @property
    def value(self) -> int:
        return self.total + self.current


def _numbers_as_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    number: _Number | None = None
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if word == "and" and number is not None and number.last == "hundred" and number.accepts(following):
            continue  # "two hundred and five"
        if number is not None and number.accepts(word):
            number.add(word)
        else:
            if number is not None:
                out.append(str(number.value))
            number = None
            if _Number().accepts(word):
                number = _Number()
                number.add(word)
            else:
                out.append(word)
        if number is not None and word in ORDINALS:  # an ordinal always ends its number
            out.append(_ordinal(number.value))
            number = None
    if number is not None:
        out.append(str(number.value))
    return out


def normalise(text: str) -> list[str]:
    """The words of ``text`` in a canonical form (see the module docstring)."""
    text = _CURRENCY.sub(r"\1 dollars", text.lower())
    text = _ABBREVIATION_DOT.sub("", _DIGIT_SEPARATOR.sub(" ", _DIGIT_COMMA.sub("", text)))
    text = text.replace("%", " percent").replace("&", " and ").replace("'", "").replace("’", "")
    words = [SPELLINGS.get(w, w) for w in _NOT_WORD.sub(" ", text).split() if w not in FILLERS]
    return _numbers_as_digits(words)


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
