"""Test images generated in code: no binaries are committed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_bytes(seed: int, size: tuple[int, int] = (160, 120), fmt: str = "JPEG") -> bytes:
    """A small, distinct, decodable image: a colour gradient plus noise, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, 3)
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-80, 80, 3)
    noise = rng.normal(0, 12, (h, w, 3))
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def write_images(folder, count: int, start: int = 0, ext: str = "jpg") -> list[str]:
    """Write count images into folder; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        name = f"img_{i:04d}.{ext}"
        (folder / name).write_bytes(jpeg_bytes(i, fmt="PNG" if ext == "png" else "JPEG"))
        names.append(name)
    return names
