"""Quality signals and flags on images generated in code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curation.analysis.quality import FLAGS, detail_view, image_signals, phash, quality_flags, quality_score
from curation.inference.thumbnails import decode_with_facts


def scene(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A sharp, colourful, photo-like test scene: coloured blocks at several scales (detail at every size, as in
    a photograph), a sky gradient and some noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.full((h, w, 3), 128.0)
    for cell, amplitude in ((96, 60.0), (24, 40.0), (6, 25.0), (2, 15.0)):
        blocks = rng.normal(0, amplitude, (h // cell + 1, w // cell + 1, 3))
        pixels += np.kron(blocks, np.ones((cell, cell, 1)))[:h, :w]
    pixels[: h // 3] = np.linspace(90, 200, w)[None, :, None] * np.array([0.6, 0.8, 1.0])
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def reencoded(img: Image.Image, scale: float = 0.75, quality: int = 70) -> Image.Image:
    w, h = img.size
    buf = io.BytesIO()
    img.resize((int(w * scale), int(h * scale)), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def fogged(img: Image.Image, contrast: float = 0.25) -> Image.Image:
    """The scene behind fog: its contrast cut to `contrast`, lifted towards a light grey."""
    pixels = np.asarray(img, dtype=np.float64) * contrast + 204.0 * (1.0 - contrast)
    return Image.fromarray(pixels.astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def flags_of(img: Image.Image, size: tuple[int, int] | None = None) -> list[str]:
    w, h = size or img.size
    return quality_flags(image_signals(img, w, h), w, h)


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def test_signals_are_plain_numbers_in_range():
    s = image_signals(scene(), 640, 480)
    assert 0 <= s["brightness"] <= 1 and 0 <= s["contrast"] <= 1 and 0 <= s["entropy"] <= 8
    assert isinstance(s["phash"], int) and -(2**63) <= s["phash"] < 2**63
    assert all(isinstance(v, float) for k, v in s.items() if k != "phash")


def test_sharp_scene_has_no_flags():
    assert flags_of(scene()) == []


def test_gaussian_blur_is_blurry_and_the_original_is_not():
    sharp = scene(1)
    blurred = sharp.filter(ImageFilter.GaussianBlur(4))
    assert "blurry" in flags_of(blurred)
    assert "blurry" not in flags_of(sharp)
    assert quality_score(image_signals(sharp, 640, 480)) > quality_score(image_signals(blurred, 640, 480))


def test_signals_do_not_depend_on_the_decoded_scale():
    """Draft mode may hand us a 1/2 or 1/4 scale decode: flags and hash must not change."""
    big = scene(2, (1600, 1200))
    for reduced in (big, big.reduce(2), big.reduce(4)):
        s = image_signals(reduced, 1600, 1200)
        assert quality_flags(s, 1600, 1200) == []
        assert hamming(s["phash"], phash(big)) <= 2
        assert abs(s["brightness"] - image_signals(big, 1600, 1200)["brightness"]) < 0.01
    blurred = big.filter(ImageFilter.GaussianBlur(16))  # radius 2.6 once brought down to the 256 px working copy
    assert "blurry" in flags_of(blurred, (1600, 1200))
    assert "blurry" in flags_of(blurred.reduce(4), (1600, 1200))


@pytest.mark.parametrize("seed", [20, 21])
def test_a_planted_blur_on_a_1080p_jpeg_is_flagged_and_its_original_is_not(seed):
    """GaussianBlur(6) at 1920 x 1080 is 0.8 px in the 256 px thumbnail, where it went unseen; the pipeline's step
    measures blur on its 1/4 draft decode (1.5 px there). In fog too: sharpness does not depend on contrast."""
    sharp = scene(seed, (1920, 1080))
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    for original, copy in ((sharp, blurred), (fogged(sharp), fogged(blurred))):
        assert "blurry" not in quality_flags(decode_with_facts(jpeg(original), 256).facts, 1920, 1080)
        assert "blurry" in quality_flags(decode_with_facts(jpeg(copy), 256).facts, 1920, 1080)


def test_blur_is_measured_at_a_draft_decode_s_scale_whatever_was_decoded():
    """A PNG decoded whole, a larger decode (for a larger thumbnail) and the 1/4 draft of a 1080p image are all
    measured at 480 x 270, so the thresholds hold for each; a strip is centre-cropped to bound the cost."""
    big = scene(22, (1920, 1080))
    assert detail_view(big).size == detail_view(big.reduce(2)).size == detail_view(big.reduce(4)).size == (480, 270)
    assert detail_view(scene(23, (640, 480))).size == (640, 480)  # below twice 256 on the short side: as decoded
    assert detail_view(scene(24, (4000, 200))).size == (1024, 200)
    blurred = big.filter(ImageFilter.GaussianBlur(6))
    for scale in (1, 2, 4):
        for decoded, blurry in ((big.reduce(scale), False), (blurred.reduce(scale), True)):
            thumbnail = decoded.copy()
            thumbnail.thumbnail((256, 256))
            signals = image_signals(thumbnail, 1920, 1080, detail=decoded)
            assert ("blurry" in quality_flags(signals, 1920, 1080)) is blurry


def test_sharpness_does_not_depend_on_contrast():
    """Fog cuts the edges' contrast (blur falls 16x) but not their sharpness: the fogged scene is not blurry."""
    sharp, foggy = image_signals(scene(25), 640, 480), image_signals(fogged(scene(25)), 640, 480)
    assert foggy["blur"] < sharp["blur"] / 10
    assert foggy["sharpness"] == pytest.approx(sharp["sharpness"], rel=0.1)
    assert quality_flags(foggy, 640, 480) == []
    assert "blurry" in flags_of(fogged(scene(25).filter(ImageFilter.GaussianBlur(2))))


def test_black_is_dark_and_white_is_overexposed():
    black = Image.new("RGB", (320, 240), (0, 0, 0))
    white = Image.new("RGB", (320, 240), (255, 255, 255))
    assert "dark" in flags_of(black) and "overexposed" not in flags_of(black)
    assert "overexposed" in flags_of(white) and "dark" not in flags_of(white)
    assert "low_information" in flags_of(black)  # a constant image carries no information
    assert "blurry" not in flags_of(black)  # nor is it "blurry": the other flags say what is wrong


def test_dim_but_lit_night_scene_is_not_dark():
    night = np.asarray(scene(3), dtype=np.float64) * 0.15
    night[200:260, 300:380] = 250  # a street lamp and the patch of road it lights (1.6 % of the frame)
    assert "dark" not in flags_of(Image.fromarray(night.astype(np.uint8)))


def test_grayscale_is_detected_even_after_jpeg():
    grey = reencoded(scene(4).convert("L").convert("RGB"), scale=1.0, quality=80)
    assert "grayscale" in flags_of(grey)
    assert "grayscale" not in flags_of(scene(4))


def test_odd_aspect_ratio_and_odd_size():
    strip = scene(5, (4000, 100))
    assert "odd_aspect_ratio" in flags_of(strip)
    assert "odd_aspect_ratio" not in flags_of(scene(5, (1280, 720)))
    assert "odd_size" in flags_of(scene(6, (40, 30)))
    s = image_signals(scene(7), 640, 480)
    assert "odd_size" not in quality_flags(s, 640, 480, typical_side=600)
    assert "odd_size" in quality_flags(s, 640, 480, typical_side=8000)


def test_low_information_flat_image():
    rng = np.random.default_rng(8)
    flat = np.full((240, 320, 3), 120.0) + rng.normal(0, 0.6, (240, 320, 3))
    assert "low_information" in flags_of(Image.fromarray(np.clip(flat, 0, 255).astype(np.uint8)))


def test_flags_are_known_and_ordered():
    flags = flags_of(Image.new("RGB", (4000, 30), (0, 0, 0)))
    assert set(flags) <= set(FLAGS)
    assert flags == [f for f in FLAGS if f in flags]


def test_phash_tolerates_reencoding_but_tells_scenes_apart():
    a = scene(9)
    assert hamming(phash(a), phash(reencoded(a))) <= 4
    assert min(hamming(phash(a), phash(scene(seed))) for seed in range(10, 20)) > 8


def test_quality_score_prefers_the_larger_original():
    original = scene(10, (1280, 960))
    copy = reencoded(original, scale=0.5)
    s_original = image_signals(original, 1280, 960)
    s_copy = image_signals(copy, *copy.size)
    assert 0 <= quality_score(s_copy) < quality_score(s_original) <= 1


def test_colour_signals_match_their_per_pixel_definitions():
    """Colourfulness, saturation, chroma_p99 and blur come from histograms and integer sums; they must equal the
    per-pixel formulas (on images small enough to be their own working copy)."""
    rng = np.random.default_rng(11)
    images = [scene(12, (256, 192)), Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)),
              Image.new("RGB", (40, 30), (200, 10, 90)), scene(13, (256, 200)).convert("L").convert("RGB")]
    for img in images:
        s = image_signals(img, *img.size)
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        rg, yb = r - g, 0.5 * (r + g) - b
        colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        chroma = rgb.max(-1) - rgb.min(-1)
        assert abs(s["colourfulness"] - colourfulness) <= 1e-9 * max(colourfulness, 1.0)
        assert abs(s["saturation"] - chroma.mean() / 255) < 1e-12
        assert abs(s["chroma_p99"] - np.percentile(chroma, 99) / 255) < 1e-12
        gray = np.asarray(img.convert("L"), dtype=np.float64)
        lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
        assert abs(s["blur"] - lap.var()) <= 1e-9 * max(lap.var(), 1.0)
