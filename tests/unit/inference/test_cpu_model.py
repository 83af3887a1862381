"""Behavioural tests for the weight-free CPU backend on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curation.inference.models.base import ModelBackend, Prediction
from curation.inference.models.cpu import CpuModel
from curation.taxonomy import DEFAULT_TAXONOMY


def _img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def night_scene(w: int = 640, h: int = 360) -> Image.Image:
    """Black scene with a few small bright street lamps."""
    a = np.full((h, w, 3), 8, dtype=np.float64)
    for x, y in [(80, 120), (240, 110), (400, 125), (560, 115), (320, 250)]:
        a[y - 4:y + 4, x - 4:x + 4] = (255, 230, 180)
    return _img(a)


def day_scene(w: int = 640, h: int = 360, seed: int = 0) -> Image.Image:
    """Pale-blue sky over a textured, sunlit grey-green ground with a few buildings."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3))
    a[: h // 2] = (150, 195, 245)
    a[h // 2:] = (110, 135, 95)
    a[h // 2:] += rng.normal(0, 25, (h - h // 2, w, 1))
    for x in range(40, w, 120):
        a[h // 4: h // 2 + 20, x: x + 40] = (190, 180, 170)
    return _img(a)


def grey_fog(w: int = 640, h: int = 360) -> Image.Image:
    return _img(np.full((h, w, 3), 190.0) + np.linspace(-6, 6, w)[None, :, None])


@pytest.fixture(scope="module")
def model() -> CpuModel:
    return CpuModel()


def test_protocol_and_attributes(model: CpuModel) -> None:
    backend: ModelBackend = model
    assert backend.name == "cpu-rules-v1"
    assert backend.embedding_name == "cpu-descriptor-v1"
    assert 128 <= backend.embedding_dim <= 256


def test_prediction_structure(model: CpuModel) -> None:
    preds = model.predict([day_scene(), night_scene(320, 200), grey_fog(123, 457)])
    assert len(preds) == 3
    for p in preds:
        assert isinstance(p, Prediction)
        assert set(p.tags) == set(DEFAULT_TAXONOMY.categories)
        for cat, (label, conf) in p.tags.items():
            assert 0.0 <= conf <= 1.0
            assert label is None or label in DEFAULT_TAXONOMY.classes[cat]
            if label is None:
                assert conf < DEFAULT_TAXONOMY.thresholds[cat]
        assert p.embedding.dtype == np.float32
        assert p.embedding.shape == (model.embedding_dim,)
        assert abs(float(np.linalg.norm(p.embedding)) - 1.0) < 1e-4


def test_empty_batch(model: CpuModel) -> None:
    assert model.predict([]) == []


def test_night_with_point_lights(model: CpuModel) -> None:
    label, conf = model.predict([night_scene()])[0].tags["time"]
    assert label == "night" and conf > 0.8


def test_bright_blue_sky_is_day_and_not_foggy(model: CpuModel) -> None:
    tags = model.predict([day_scene()])[0].tags
    assert tags["time"][0] == "day"
    assert tags["weather"][0] != "foggy"
    assert tags["location"][0] in ("outside", None)


def test_uniform_grey_low_contrast_is_foggy_or_none_never_clear(model: CpuModel) -> None:
    label, _ = model.predict([grey_fog()])[0].tags["weather"]
    assert label in ("foggy", None)


def test_night_weather_without_cues_is_not_sky_guess(model: CpuModel) -> None:
    label, _ = model.predict([night_scene()])[0].tags["weather"]
    assert label not in ("clear", "cloudy")


def test_determinism(model: CpuModel) -> None:
    im = day_scene(seed=3)
    a = model.predict([im])[0]
    b = CpuModel().predict([im.copy()])[0]
    assert np.array_equal(a.embedding, b.embedding)
    assert a.tags == b.tags


def test_non_rgb_input_is_accepted(model: CpuModel) -> None:
    p = model.predict([day_scene().convert("L")])[0]
    assert p.embedding.shape == (model.embedding_dim,)


def test_shifted_brightened_copy_is_nearer_than_unrelated(model: CpuModel) -> None:
    base = day_scene(seed=1)
    arr = np.asarray(base).astype(np.float64)
    variant = _img(np.roll(arr, 6, axis=1) * 1.08 + 5)
    e_base, e_var, e_night, e_fog = (p.embedding for p in model.predict(
        [base, variant, night_scene(), grey_fog()]))
    near = float(e_base @ e_var)
    assert near > 0.95
    assert near > float(e_base @ e_night)
    assert near > float(e_base @ e_fog)


def test_resolution_invariance(model: CpuModel) -> None:
    big = day_scene(1280, 720, seed=2)
    small = big.resize((320, 180), Image.Resampling.BILINEAR)
    e_big, e_small, e_night = (p.embedding for p in model.predict([big, small, night_scene()]))
    assert float(e_big @ e_small) > 0.97 > float(e_big @ e_night)


def test_custom_taxonomy_threshold_forces_none() -> None:
    from curation.taxonomy import Taxonomy

    strict = CpuModel(Taxonomy(thresholds={c: 1.01 for c in DEFAULT_TAXONOMY.categories}))
    for label, conf in strict.predict([night_scene()])[0].tags.values():
        assert label is None and conf > 0.0


def test_fast_helpers_match_their_plain_definitions() -> None:
    """The features' shortcuts decide every pixel as the plain formulas do (exact, not approximately)."""
    from curation.inference.models import cpu_features as cf

    rng = np.random.default_rng(5)
    lum = (rng.integers(0, 256, (120, 160, 3)).astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114],
                                                                                       dtype=np.float32)
    lum[40:50, 40:60] = 0.5  # flat patches: zero gradients, and exact ties on an edge direction
    lum[60:70] = lum[60:70, :1]
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, 1:-1] = lum[:, 2:] - lum[:, :-2]
    gy[1:-1] = lum[2:] - lum[:-2]
    # Orientation: the full test against all N_ORIENT - 1 edges, on the direction folded into [0, pi).
    flip = (gy < 0) | ((gy == 0) & (gx < 0))
    fx, fy = np.where(flip, -gx, gx), np.where(flip, -gy, gy)
    edges = np.arange(1, cf.N_ORIENT) * np.pi / cf.N_ORIENT
    want = sum((fy * np.float32(np.cos(e)) - fx * np.float32(np.sin(e)) >= 0).astype(int) for e in edges)
    want[(gx == 0) & (gy == 0)] = 0
    assert np.array_equal(cf._orientation_bins(gx, gy), want)
    assert np.array_equal(cf._orientation_bins(np.float32([[1, -1, 0, 0, 2]]), np.float32([[1, 1, 1, -1, 0]])),
                          [[2, 6, 4, 4, 0]])
    assert cf._percentiles_10_90(lum) == tuple(np.percentile(lum, [10, 90]))
    # The dark channel's 7 x 7 minimum and the 15 x 15 local mean, edge-padded.
    u8 = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    padded = np.pad(u8, 3, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7))
    assert np.array_equal(cf._min_filter7(u8), windows.min((2, 3)))
    p = np.pad(lum, 8, mode="edge")
    c = p.cumsum(0).cumsum(1)
    assert np.array_equal(cf._box_mean(lum, 15), (c[15:135, 15:175] - c[:120, 15:175] - c[15:135, :160]
                                                  + c[:120, :160]) / 225)


def test_thresholds_on_levels_match_the_0_1_tests() -> None:
    from curation.inference.models import cpu_features as cf

    levels = np.arange(256, dtype=np.uint8)
    unit = levels.astype(np.float32) / 255.0
    for t, above in ((0.2, cf._GT_020), (0.35, cf._GT_035), (0.7, cf._GT_070), (0.9, cf._GT_090)):
        assert np.array_equal(levels >= above, unit > t)
    for t, below in ((0.12, cf._LT_012), (0.14, cf._LT_014), (0.72, cf._LT_072)):
        assert np.array_equal(levels < below, unit < t)


def test_hsv_is_pillows() -> None:
    """The table-driven HSV equals Pillow's conversion, ties between channels included."""
    from curation.inference.models import cpu_features as cf

    rng = np.random.default_rng(6)
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 17, dtype=np.uint8)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rgb = np.concatenate([grid, rng.integers(0, 256, (59904, 3), dtype=np.uint8)]).reshape(-1, 128, 3)
    want = np.asarray(Image.fromarray(rgb).convert("HSV"))
    got = cf._hsv(*(np.ascontiguousarray(rgb[..., i]) for i in range(3)))
    for i in range(3):
        assert np.array_equal(got[i], want[..., i])
