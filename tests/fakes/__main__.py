"""Run one fake in the foreground: `python -m tests.fakes <vendor> [--api-key KEY]`.

Prints `{"name", "url", "ws_url", "port"}` as one JSON line, then serves until stdin closes
(so a parent process can start it with `subprocess.Popen(..., stdin=PIPE, stdout=PIPE)`).
"""

from __future__ import annotations

import argparse

from .base import Behaviour, FakeServer, run_cli
from .bedrock import FakeBedrock
from .deepgram import FakeDeepgram
from .elevenlabs import FakeElevenLabs
from .openai_http import FakeOpenAI
from .openai_realtime import FakeOpenAIRealtime

FAKES: dict[str, type[FakeServer]] = {
    "openai": FakeOpenAI,
    "openai-realtime": FakeOpenAIRealtime,
    "deepgram": FakeDeepgram,
    "elevenlabs": FakeElevenLabs,
    "bedrock": FakeBedrock,
}


def main() -> None:
    """Parse arguments and serve the chosen fake."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument("vendor", choices=sorted(FAKES))
    parser.add_argument("--api-key", default="test-key", help="expected credential ('' accepts any)")
    args = parser.parse_args()
    run_cli(FAKES[args.vendor](Behaviour(api_key=args.api_key or None)))


if __name__ == "__main__":
    main()
