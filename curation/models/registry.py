"""Pick a model backend by name."""

from __future__ import annotations

from curation.models.base import ModelBackend
from curation.settings import Settings, get_settings


def load_backend(name: str, settings: Settings | None = None) -> ModelBackend:
    """The backend for a name from the settings ('cpu' is the weight-free default, 'clip' needs local weights)."""
    if name == "cpu":
        from curation.models.cpu import CpuModel

        return CpuModel()
    if name == "clip":
        from curation.models.clip import load_clip_from_settings

        return load_clip_from_settings(settings or get_settings())
    raise ValueError(f"unknown model backend {name!r}; available: cpu, clip")
