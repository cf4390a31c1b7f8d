"""Provider plugins: the contract (``spec``), discovery (``registry``) and the built-in providers.

Everything a plugin author needs is importable from here::

    from voxpipe.providers import CloudOptions, Prices, Provider, ServiceRequest, hookimpl
"""

from voxpipe.providers.spec import (
    FREE,
    KINDS,
    AudioFormat,
    CloudOptions,
    Hooks,
    Kind,
    Prices,
    Provider,
    ProviderOptions,
    ServiceRequest,
    ToolHandler,
    ToolKind,
    hookimpl,
    hookspec,
)

__all__ = [
    "FREE",
    "KINDS",
    "AudioFormat",
    "CloudOptions",
    "Hooks",
    "Kind",
    "Prices",
    "Provider",
    "ProviderOptions",
    "ServiceRequest",
    "ToolHandler",
    "ToolKind",
    "hookimpl",
    "hookspec",
]
