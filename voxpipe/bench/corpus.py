"""A bench corpus: caller utterances as WAV files, each with the words it says.

Two layouts are read. Preferred, a ``manifest.jsonl`` with one JSON object a line::

    {"audio": "joe/book-tune-up.wav", "text": "I'd like to book a tune-up.", "voice": "joe"}

(``audio`` relative to the corpus directory; ``voice``, optional, names who speaks it, so the bench reports
the word error rate per voice). Without a manifest, every ``*.wav`` in the directory with a
``*.txt`` of the same name beside it holding its text. The audio is read and checked at load time, so a bad
corpus fails before any call is placed, with every problem named.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

from voxpipe.bench.simulated_call import INPUT_RATE, CallerTurn

MANIFEST = "manifest.jsonl"


class CorpusError(ValueError):
    """The corpus cannot be used; the message lists every problem found, one a line."""

    def __init__(self, directory: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"corpus {directory}:\n" + "\n".join(f"  {problem}" for problem in problems))


@dataclass(frozen=True)
class Utterance:
    """One corpus entry: its name (the audio file, relative to the corpus), the expected text and the audio."""

    name: str
    text: str
    turn: CallerTurn
    voice: str = ""

    @property
    def duration_secs(self) -> float:
        return len(self.turn.audio) / 2 / INPUT_RATE


def load_corpus(directory: str | Path) -> list[Utterance]:
    """Read a corpus directory (manifest or ``*.wav`` + ``*.txt``). Raises ``CorpusError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CorpusError(directory, ["not a directory"])
    manifest = directory / MANIFEST
    entries, problems = _manifest_entries(manifest) if manifest.exists() else _paired_entries(directory)
    utterances = []
    for where, audio, text, voice in entries:
        try:
            utterances.append(Utterance(audio, text, CallerTurn.from_wav(directory / audio, text), voice))
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            problems.append(f"{where}: cannot read {audio}: {exc}")
    if not entries and not problems:
        problems.append(f"no utterances: write a {MANIFEST}, or put *.wav files with same-name *.txt beside them")
    if problems:
        raise CorpusError(directory, problems)
    return utterances


Entry = tuple[str, str, str, str]  # where it is declared (for messages), audio path, text, voice


def _manifest_entries(manifest: Path) -> tuple[list[Entry], list[str]]:
    entries: list[Entry] = []
    problems: list[str] = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{MANIFEST}:{number}"
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg})")
            continue
        audio = item.get("audio") if isinstance(item, dict) else None
        text = item.get("text") if isinstance(item, dict) else None
        voice = item.get("voice", "") if isinstance(item, dict) else ""
        if not isinstance(audio, str) or not audio:
            problems.append(f'{where}: "audio" must name a WAV file')
        elif not isinstance(text, str) or not text.strip():
            problems.append(f'{where}: "text" must be the words spoken in {audio}')
        elif not isinstance(voice, str):
            problems.append(f'{where}: "voice" must be a name')
        else:
            entries.append((where, audio, text.strip(), voice))
    return entries, problems


def _paired_entries(directory: Path) -> tuple[list[Entry], list[str]]:
    entries: list[Entry] = []
    problems: list[str] = []
    for wav in sorted(directory.glob("*.wav")):
        transcript = wav.with_suffix(".txt")
        text = transcript.read_text(encoding="utf-8").strip() if transcript.exists() else ""
        if text:
            entries.append((wav.name, wav.name, text, ""))
        else:
            problems.append(f"{wav.name}: needs its text in {transcript.name} (or list it in {MANIFEST})")
    return entries, problems
