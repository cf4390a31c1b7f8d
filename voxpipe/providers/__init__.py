"""Provider plugins: the contract (``spec``), discovery (``registry``), the SDK (``cloud``) and the built-ins.

The contract a plugin author needs is importable from here, and the SDK for network services (shared
clients, error classification, the response watchdog, ``llm_settings``...) from ``voxpipe.providers.cloud``
(see docs/plugins.md)::

    from voxpipe.providers import CloudOptions, Prices, Provider, ServiceRequest, hookimpl
    from voxpipe.providers.cloud import CloudService, llm_settings
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
