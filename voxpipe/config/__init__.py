"""Deployment files: YAML -> validated ``Deployment`` (see ``loader``), with errors that point at the line."""

from voxpipe.config.errors import ConfigError, ConfigProblem
from voxpipe.config.loader import apply_overrides, load_deployment, parse_deployment
from voxpipe.config.models import AgentConfig, Deployment, ServiceConfig, ToolConfig, VADSettings

__all__ = [
    "AgentConfig",
    "ConfigError",
    "ConfigProblem",
    "Deployment",
    "ServiceConfig",
    "ToolConfig",
    "VADSettings",
    "apply_overrides",
    "load_deployment",
    "parse_deployment",
]
