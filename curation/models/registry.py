"""Pick a model backend by name."""

from __future__ import annotations

from curation.models.base import ModelBackend


def load_backend(name: str) -> ModelBackend:
    """The backend for a name from the settings ('cpu' is the weight-free default)."""
    if name == "cpu":
        from curation.models.cpu import CpuModel

        return CpuModel()
    raise ValueError(f"unknown model backend {name!r}; available: cpu")
