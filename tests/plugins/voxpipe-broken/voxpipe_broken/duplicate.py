"""A plugin claiming a provider name another package already registered, next to one valid provider."""

from __future__ import annotations

from typing import Any

from voxpipe.providers.spec import Provider, ProviderOptions, ServiceRequest, hookimpl


class NoOptions(ProviderOptions):
    pass


def _never_built(request: ServiceRequest[NoOptions]) -> Any:
    raise AssertionError("voxpipe-broken providers are for registry tests only")


TAKEN = Provider(name="testkit_llm", kind="llm", options=NoOptions, build=_never_built, description="A duplicate.")
FRESH = Provider(name="broken_echo_stt", kind="stt", options=NoOptions, build=_never_built, description="Unique.")


@hookimpl
def voxpipe_providers() -> list[Provider]:
    return [TAKEN, FRESH]
