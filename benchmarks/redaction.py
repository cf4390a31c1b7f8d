"""Entity detection for ``redact:``: voxpipe's patterns against presidio-analyzer, on the same labelled set.

The set (``benchmarks/redaction_cases.jsonl``) has what callers say and type: cards written, grouped, spoken
digit by digit and typed on the keypad, Luhn-failing numbers that must stay, SSNs, emails written and spoken,
phone numbers, and everyday numbers (times, prices, orders) that must not be masked. A case is right when
exactly its entity types are found and every ``masked`` string is gone from the output.

presidio-analyzer runs with its pattern recognizers (credit card with Luhn, US SSN, email, phone) on a blank
spaCy pipeline: its NER models are not on PyPI as packages voxpipe could depend on, and these four entities
come from its patterns anyway. Its email recognizer calls tldextract, which fetches the public-suffix list
over the network at first use; here it is given the bundled snapshot instead.

    python benchmarks/redaction.py [--repeat 200]

Needs: pip install presidio-analyzer (optional: without it only voxpipe's patterns are measured).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from voxpipe.config.models import RedactConfig
from voxpipe.redaction import Redactor

CASES = [json.loads(line) for line in (Path(__file__).parent / "redaction_cases.jsonl").read_text().splitlines()]
PRESIDIO_TYPES = {
    "CREDIT_CARD": "card_number",
    "US_SSN": "ssn",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone_number",
}
Detector = Callable[[str], list[tuple[int, int, str]]]


def voxpipe_detector() -> Detector:
    redactor = Redactor(RedactConfig())
    return lambda text: [(f.start, f.end, f.entity) for f in redactor.found(text)]


def presidio_detector() -> Detector | None:
    try:
        import spacy
        import tldextract
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
    except ImportError:
        return None
    import presidio_analyzer.predefined_recognizers.generic.email_recognizer as email

    offline = tldextract.TLDExtract(suffix_list_urls=())  # the bundled public-suffix snapshot: no network
    email.tldextract = SimpleNamespace(extract=offline)

    class BlankSpacy(SpacyNlpEngine):
        def __init__(self) -> None:
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
            self.nlp = {"en": spacy.blank("en")}

        def load(self) -> None:
            pass

    engine = AnalyzerEngine(nlp_engine=BlankSpacy(), supported_languages=["en"])
    entities = list(PRESIDIO_TYPES)

    def detect(text: str) -> list[tuple[int, int, str]]:
        found = engine.analyze(text, language="en", entities=entities, score_threshold=0.3)
        return [(r.start, r.end, PRESIDIO_TYPES[r.entity_type]) for r in found]

    return detect


def score(detect: Detector) -> tuple[int, list[str]]:
    right, wrong = 0, []
    for case in CASES:
        found = detect(case["text"])
        masked = case["text"]
        for start, end, _ in sorted(found, reverse=True):
            masked = masked[:start] + "#" + masked[end:]
        ok = {e for _, _, e in found} == set(case["entities"]) and not any(m in masked for m in case["masked"])
        right += ok
        if not ok:
            wrong.append(case["text"])
    return right, wrong


def per_text_us(detect: Detector, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        for case in CASES:
            detect(case["text"])
    return (time.perf_counter() - started) / (repeat * len(CASES)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    detectors = {"voxpipe patterns": voxpipe_detector(), "presidio-analyzer": presidio_detector()}
    for name, detect in detectors.items():
        if detect is None:
            print(f"{name}: not installed")
            continue
        right, wrong = score(detect)
        print(f"{name}: {right}/{len(CASES)} cases right, {per_text_us(detect, args.repeat):.1f} µs per text")
        for text in wrong:
            print(f"    wrong: {text}")


if __name__ == "__main__":
    main()
