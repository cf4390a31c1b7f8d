"""Every private pipecat method a built-in provider overrides is pinned to the pipecat source it was read on.

An upgrade of pipecat that changes such a method fails here, naming it: re-read the override against the
new code, then re-pin (``python -m voxpipe.providers.cloud.pins``) and add the release to ``CHECKED_ON``.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pipecat
import pytest

from voxpipe.providers.builtin import bedrock, deepgram, elevenlabs, openai_stt, openai_tts
from voxpipe.providers.cloud import OpenAIService, realtime_session_class, service_class
from voxpipe.providers.cloud.pins import (
    CHECKED_ON,
    PINNED,
    PIPECAT_STATE_WRITTEN,
    RELIED_ON,
    private_overrides,
    source_hash,
)


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


@pytest.mark.parametrize("name", sorted({**PINNED, **RELIED_ON}))
def test_pinned_pipecat_source_is_unchanged(name: str) -> None:
    assert source_hash(name) == {**PINNED, **RELIED_ON}[name], (
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


def self_attributes(cls: type) -> tuple[set[str], set[str]]:
    """The private ``self._name`` a class's own code (not its bases') reads, and those it assigns."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except OSError:  # made by type() (service_class): no code of its own
        return set(), set()
    read, assigned = set(), set()
    for node in ast.walk(tree):
        on_self = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        if on_self and node.attr.startswith("_") and not node.attr.startswith("__"):
            (assigned if isinstance(node.ctx, ast.Store) else read).add(node.attr)
    return read, assigned


def private_names_used(cls: type) -> set[str]:
    """The private attributes and methods voxpipe's classes in ``cls`` use but do not define."""
    used, defined = set(), set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("pipecat.") or klass is object:
            continue
        read, assigned = self_attributes(klass)
        used |= read
        defined |= assigned | set(vars(klass))
    return used - defined


def pipecat_defines(cls: type, name: str) -> bool:
    pipecat_classes = [klass for klass in cls.__mro__ if klass.__module__.startswith("pipecat.")]
    return any(name in vars(klass) or name in self_attributes(klass)[1] for klass in pipecat_classes)


def uses_pipecat(cls: type) -> bool:
    return any(klass.__module__.startswith("pipecat.") for klass in cls.__mro__)


@pytest.mark.parametrize(
    "cls", [c for c in built_in_service_classes() if uses_pipecat(c)], ids=lambda cls: cls.__qualname__
)
def test_private_pipecat_state_the_built_ins_use_still_exists(cls: type) -> None:
    """Private attributes are not methods to pin, but a release that renames one must fail here too."""
    missing = sorted(name for name in private_names_used(cls) if not pipecat_defines(cls, name))
    assert missing == [], f"pipecat {pipecat.__version__} no longer has {missing} that {cls.__qualname__} uses"


def test_private_pipecat_state_the_built_ins_set_is_pinned() -> None:
    """A renamed attribute the built-ins assign would silently become voxpipe's own: the set must not shrink."""
    written = set()
    for cls in filter(uses_pipecat, built_in_service_classes()):
        for klass in cls.__mro__:
            if not klass.__module__.startswith("pipecat.") and klass is not object:
                written |= {name for name in self_attributes(klass)[1] if pipecat_defines(cls, name)}
    assert written == PIPECAT_STATE_WRITTEN
