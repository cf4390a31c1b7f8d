"""The private pipecat methods voxpipe's providers override, pinned to the pipecat source they were read on.

pipecat is young and changes fast; its private methods change without notice. Where a built-in provider
still has to override one (each such override has a docstring giving the reason), the override is right
only for the code it was written against. ``PINNED`` names every such method with the hash of its source on
the pipecat releases in ``CHECKED_ON``; ``tests/test_pipecat_pins.py`` fails when an installed pipecat
differs (so an upgrade makes someone re-read the override) or when an override is not pinned. The private
attributes the built-ins read must still exist, and those they set are listed (``PIPECAT_STATE_WRITTEN``).

To re-pin after reading the changed pipecat code: ``python -m voxpipe.providers.cloud.pins`` prints the
hashes of the installed release for the names in ``PINNED``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

#: The pipecat releases the overrides were read against.
CHECKED_ON = ("1.14.0",)

#: ``module:Class.method`` of pipecat -> sha256 (first 16 hex digits) of the method's source there.
PINNED = {
    "pipecat.processors.frame_processor:FrameProcessor._classify_error": "a78837f32d629d7b",
    "pipecat.services.aws.llm:AWSBedrockLLMService._get_llm_invocation_params": "bdf38e57d653b5ee",
    "pipecat.services.deepgram.stt:DeepgramSTTService._connect": "071bbb29ea88d479",
    "pipecat.services.deepgram.stt:DeepgramSTTService._on_error": "35ef53074bb57b02",
    "pipecat.services.deepgram.stt:DeepgramSTTService._on_message": "397006c60959d66a",
    "pipecat.services.elevenlabs.tts:ElevenLabsTTSService._build_websocket_url": "e741bfd3449fcecb",
    "pipecat.services.websocket_service:WebsocketService._maybe_try_reconnect": "dc197347cc362802",
    "pipecat.services.websocket_service:WebsocketService._websocket_connect": "293d8314cea2c36a",
    "pipecat.services.openai.stt:OpenAISTTService._transcribe": "5a1bf44c579b08c0",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._calculate_audio_duration_ms": "974e056dd1d3fbd4",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._connect": "f633d18e988462f9",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._create_response": "25a6cec34da0869b",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_context": "81603368b304f709",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_evt_error": "ac9436402e9d5887",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_evt_response_done": "9b5c6545e9048d44",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_evt_session_updated": "814bf57774529d43",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_evt_speech_started": "d09337866273d2f5",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._handle_evt_speech_stopped": "909768d8d652ed5d",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._receive_task_handler": "205c3c1c82c0a004",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._send_user_audio": "c6f353594fde5873",
    "pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService._truncate_current_audio_response": (
        "3e474d840f36492b"
    ),
}

#: Private pipecat methods voxpipe calls rather than overrides, whose exact behaviour it relies on: the batched
#: VAD (``voxpipe.pipeline.batched_vad``) runs pipecat's per-window step and model reset on its own scores, and
#: its smoothed volume over the volume tracker's window, skipping the loudness measure where it must be 0; a
#: cascade's aggregators are built as the pair builds them (``voxpipe.pipeline.aggregators``); a call's worker has
#: its ``WorkerObserver`` (made in ``__init__``) replaced by ``voxpipe.pipeline.call_observer.CallObserver``,
#: which tells a frame's first push as ``WorkerObserver.on_push_frame`` does.
RELIED_ON = {
    "pipecat.pipeline.worker:PipelineWorker.__init__": "bc9c01d67d0e0a18",
    "pipecat.pipeline.worker_observer:WorkerObserver.on_push_frame": "469c3453cb1d2d89",
    "pipecat.processors.aggregators.llm_response_universal:LLMContextAggregatorPair.__init__": "e67d9b2fb2d47d95",
    "pipecat.audio.vad.vad_analyzer:VADAnalyzer._run_analyzer": "0a33840d096030fc",
    "pipecat.audio.vad.silero:SileroVADAnalyzer._maybe_reset_model": "854a3229996bb5ff",
    "pipecat.audio.vad.vad_analyzer:VADAnalyzer._get_smoothed_volume": "2db0b1a237baabfc",
    "pipecat.audio.volume:AudioVolumeTracker.update": "8bce5c057db48890",
}

#: Private attributes of pipecat's services that the built-ins set, not only read (``tests/test_pipecat_pins.py``
#: also checks every private attribute they read still exists).
PIPECAT_STATE_WRITTEN = frozenset(
    {
        "_aws_session",  # bedrock: the shared client session
        "_client",  # the OpenAI services: the shared client
        "_output_format",  # elevenlabs: ulaw_8000 on phone calls
        "_context",  # realtime: the first context, sent without the turn being answered
        "_current_audio_response",  # realtime: truncation at what the caller heard
        "_llm_needs_conversation_setup",  # realtime: history sent by voxpipe (first context, reconnects)
        "_receive_task",  # realtime: voxpipe's connect (timeout, reconnects)
        "_websocket",  # realtime: voxpipe's connect
    }
)


def qualified_name(cls: type, method: str) -> str:
    return f"{cls.__module__}:{cls.__qualname__}.{method}"


def source_hash(name: str) -> str:
    """The hash ``PINNED`` keeps for ``module:Class.method``, computed on the installed pipecat."""
    module, path = name.split(":")
    owner, method = path.rsplit(".", 1)
    target: object = importlib.import_module(module)
    for part in owner.split("."):
        target = getattr(target, part)
    function = inspect.unwrap(vars(target)[method])  # (a decorator, e.g. tracing, wraps some of them)
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def private_overrides(cls: type) -> dict[str, object]:
    """Every private pipecat method ``cls`` overrides in a voxpipe class: pipecat name -> overriding function."""
    found: dict[str, object] = {}
    mro = cls.__mro__
    for index, klass in enumerate(mro):
        if klass.__module__.startswith("pipecat."):
            continue
        for name, value in vars(klass).items():
            if not (name.startswith("_") and not name.startswith("__") and callable(value)):
                continue
            owner = next((c for c in mro[index + 1 :] if c.__module__.startswith("pipecat.") and name in vars(c)), None)
            if owner is not None:
                found.setdefault(qualified_name(owner, name), value)
    return found


if __name__ == "__main__":
    for pinned in {**PINNED, **RELIED_ON}:
        print(f'    "{pinned}": "{source_hash(pinned)}",')  # (wrap the long ones by hand)
