"""The base of every deployment-file model: an unknown key is an error (a typo never passes silently)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
