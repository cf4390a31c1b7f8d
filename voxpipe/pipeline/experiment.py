"""Live A/B: which variant of a deployment a caller gets.

Assignment is sticky: a hash of the experiment name and the caller id picks the variant, so a caller who
calls back lands in the same arm, and changing one experiment's weights never reshuffles another's callers.
Each variant's deployment is the base with the variant's overrides applied, validated once and cached.
"""

from __future__ import annotations

import hashlib

from voxpipe.config.loader import apply_overrides
from voxpipe.config.models import Deployment, ExperimentConfig


def assign(experiment: ExperimentConfig, caller_id: str) -> str:
    """The variant of ``caller_id``: a uniform point in [0, 1) from SHA-256, mapped onto cumulative weights."""
    digest = hashlib.sha256(f"{experiment.name}\0{caller_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(v.weight for v in experiment.variants.values())
    cumulative = 0.0
    for name, variant in experiment.variants.items():
        cumulative += variant.weight / total
        if point < cumulative:
            return name
    return name  # floating-point rounding at the very top of the range


def variant_deployments(deployment: Deployment) -> dict[str, Deployment]:
    """Every variant's deployment (validated now, so a bad variant fails at start-up, not on a call)."""
    experiment = deployment.experiment
    if experiment is None:
        return {}
    return {
        name: apply_overrides(
            deployment, {**variant.overrides, "experiment": None}, source=f"experiment {experiment.name}: {name}"
        )
        for name, variant in experiment.variants.items()
    }


class ExperimentRouter:
    """Picks each caller's deployment; variants are built once per process."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.variants = variant_deployments(deployment)

    def route(self, caller_id: str | None) -> tuple[Deployment, str | None]:
        """The deployment a caller gets and its variant name (``None`` without an experiment)."""
        if self.deployment.experiment is None:
            return self.deployment, None
        variant = assign(self.deployment.experiment, caller_id or "")
        return self.variants[variant], variant
