"""Pick a model backend by name."""

from __future__ import annotations

from curation.inference.models.base import ModelBackend
from curation.settings import Settings, get_settings

# "cnn" is the default; "fast" (also "cpu", its old name) is the weight-free descriptor model.
BACKENDS = ("cnn", "fast", "cpu", "clip")


def load_backend(name: str, settings: Settings | None = None) -> ModelBackend:
    """The backend for a name from the settings.

    Args:
        name: 'cnn' (EfficientNet-Lite0 with trained tag heads, the default), 'fast' or 'cpu' (the weight-free
            descriptor model), or 'clip' (open_clip with weights from a local path).
        settings: where the CLIP backend finds its weights; the active settings when None.

    Returns:
        The backend, ready to predict.
    """
    if name == "cnn":
        from curation.inference.models.cnn import CnnModel

        return CnnModel(cache_dir=(settings or get_settings()).model_cache)
    if name in ("fast", "cpu"):
        from curation.inference.models.cpu import CpuModel

        return CpuModel()
    if name == "clip":
        from curation.inference.models.clip import load_clip_from_settings

        return load_clip_from_settings(settings or get_settings())
    raise ValueError(f"unknown model backend {name!r}; available: cnn (default), fast, clip")
