"""Protocol-faithful local fakes of the vendor APIs voxpipe talks to.

Each fake is a real server on 127.0.0.1 (ephemeral port, background thread) that speaks the
vendor's wire protocol strictly enough that a client bug fails a test:

- `FakeOpenAI` (openai_http): chat completions (SSE), audio transcriptions, audio speech.
- `FakeOpenAIRealtime` (openai_realtime): the GA Realtime WebSocket.
- `FakeDeepgram` (deepgram): live STT WebSocket `/v1/listen`.
- `FakeElevenLabs` (elevenlabs): TTS `stream-input` and `multi-stream-input` WebSockets.
- `FakeBedrock` (bedrock): `converse-stream` with AWS event-stream framing.

All share `Behaviour` (auth, injected failures, delays, cut streams) and the journal API of
`FakeServer` (`received`, `errors`, `connections`, `messages()`, `requests()`, `wait_for()`).
Replies and transcripts are scripted with the helpers in `script`.

Run one from a shell: `python -m tests.fakes openai` prints its URLs as JSON and serves until
stdin closes.
"""

from .base import Behaviour, FakeServer
from .bedrock import BedrockBehaviour, FakeBedrock
from .deepgram import FakeDeepgram
from .elevenlabs import FakeElevenLabs
from .openai_http import FakeOpenAI
from .openai_realtime import FakeOpenAIRealtime
from .script import Reply, ToolCall, ToolResult, Turn, Utterance, tool_then_answer

__all__ = [
    "BedrockBehaviour",
    "Behaviour",
    "FakeBedrock",
    "FakeDeepgram",
    "FakeElevenLabs",
    "FakeOpenAI",
    "FakeOpenAIRealtime",
    "FakeServer",
    "Reply",
    "ToolCall",
    "ToolResult",
    "Turn",
    "Utterance",
    "tool_then_answer",
]
