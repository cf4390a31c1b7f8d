"""Every private pipecat method a built-in provider overrides is pinned to the pipecat source it was read on.

An upgrade of pipecat that changes such a method fails here, naming it: re-read the override against the
new code, then re-pin (``python -m voxpipe.providers.cloud.pins``) and add the release to ``CHECKED_ON``.
"""

from __future__ import annotations

import inspect

import pipecat
import pytest

from voxpipe.providers.builtin import bedrock, deepgram, elevenlabs, openai_stt, openai_tts
from voxpipe.providers.cloud import OpenAIService, realtime_session_class, service_class
from voxpipe.providers.cloud.pins import CHECKED_ON, PINNED, private_overrides, source_hash


def built_in_service_classes() -> list[type]:
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

    from voxpipe.providers.builtin import _hibari_tts, _llama_llm, _whisper_stt, local_tts

    made = [module._service_class() for module in (bedrock, deepgram, elevenlabs, openai_stt, openai_tts)]
    local = [
        cls
        for module in (_hibari_tts, _llama_llm, _whisper_stt, local_tts)
        for cls in vars(module).values()
        if inspect.isclass(cls) and cls.__module__ == module.__name__
    ]
    return [
        *made,
        service_class(OpenAIService, OpenAILLMService),
        realtime_session_class(OpenAIRealtimeLLMService),
        *local,
    ]


def test_every_private_override_is_pinned_and_says_why() -> None:
    overrides = {name: f for cls in built_in_service_classes() for name, f in private_overrides(cls).items()}
    assert set(overrides) == set(PINNED), "pin new overrides, drop pins of overrides that are gone"
    undocumented = [name for name, function in overrides.items() if not function.__doc__]
    assert undocumented == [], "an override of a private pipecat method must say why it exists"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_pipecat_source_is_unchanged(name: str) -> None:
    assert source_hash(name) == PINNED[name], (
        f"pipecat {pipecat.__version__} changed {name} (pins read on {', '.join(CHECKED_ON)}): "
        "re-read voxpipe's override of it, then re-pin"
    )


def test_a_changed_method_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check compares source, not names: a method with different code gets a different hash."""
    from pipecat.services.deepgram.stt import DeepgramSTTService

    name = "pipecat.services.deepgram.stt:DeepgramSTTService._on_message"

    async def _on_message(self: object, message: object) -> None:  # a "new release" of the method
        return None

    monkeypatch.setattr(DeepgramSTTService, "_on_message", _on_message)
    assert source_hash(name) != PINNED[name]
