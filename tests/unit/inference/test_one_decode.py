"""One decode serves the thumbnail, the quality signals and the model's smaller input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation.inference.imaging import at_min_side, decode_image, draft_scale
from curation.inference.thumbnails import decode_with_facts, make_thumbnail
from tests.images import jpeg_bytes


@pytest.mark.parametrize("size", [(1920, 1080), (1001, 777), (640, 480), (300, 200), (1080, 1920)])
def test_a_larger_decode_reduced_matches_a_direct_decode(size):
    data = jpeg_bytes(3, size)
    direct = decode_image(data, min_side=120).image
    via = at_min_side(decode_image(data, min_side=256), 120)
    assert via.size == direct.size
    diff = np.abs(np.asarray(via, np.int16) - np.asarray(direct, np.int16))
    assert diff.mean() < 2.0  # DCT scaling and a box reduction agree to rounding


def test_other_formats_come_back_whole():
    data = jpeg_bytes(4, (640, 480), fmt="PNG")
    decoded = decode_image(data, min_side=256)
    assert at_min_side(decoded, 120) is decoded.image and decoded.image.size == (640, 480)


def test_draft_scale_is_what_pillow_chooses():
    for size, side in [((1920, 1080), 120), ((1920, 1080), 256), ((1001, 777), 120), ((300, 200), 256)]:
        data = jpeg_bytes(5, size)
        with Image.open(io.BytesIO(data)) as img:
            scale = max(1, min(img.size) // side)
            img.draft("RGB", (img.size[0] // scale, img.size[1] // scale))
            assert img.size == (-(-size[0] // draft_scale(*size, side)), -(-size[1] // draft_scale(*size, side)))


def test_decode_with_facts_is_what_a_thumbnail_file_holds(tmp_path):
    data = jpeg_bytes(6, (1280, 720))
    made = decode_with_facts(data, 256)
    facts = make_thumbnail(data, tmp_path / "t.jpg", 256)
    assert made.facts == facts and (tmp_path / "t.jpg").read_bytes() == made.thumbnail
    assert (facts["width"], facts["height"], facts["format"], facts["error"]) == (1280, 720, "jpeg", None)
    assert Image.open(io.BytesIO(made.thumbnail)).size == (256, 144)
    assert made.decoded is not None and made.decoded.image.size == (640, 360)  # 1/2 draft; untouched by the thumbnail


def test_an_undecodable_file_has_facts_and_a_reason_but_no_thumbnail():
    made = decode_with_facts(b"not an image", 256)
    assert made.thumbnail is None and made.decoded is None
    assert made.facts["error"] == "not a recognised image format" and made.facts["content_hash"]


@pytest.mark.parametrize("max_side", [256, 128, 400])
def test_signals_are_the_working_copy_s_whatever_the_thumbnail_size(max_side):
    """At the default size the thumbnail is the signals' working copy (no second resize), and blur is measured on the
    decode itself; at any other size the signals are still those of the same decode (at least 256 px on the short
    side), blur included."""
    from curation.analysis.quality import image_signals, working_copy

    data = jpeg_bytes(7, (1920, 1080))
    made = decode_with_facts(data, max_side)
    reference = image_signals(decode_image(data, min_side=max(max_side, 256)).image, 1920, 1080)
    assert {k: made.facts[k] for k in reference} == reference
    assert Image.open(io.BytesIO(made.thumbnail)).size == (max_side, max_side * 9 // 16)
    assert working_copy(made.decoded.image).size == (256, 144)
    if max_side == 256:  # the thumbnail is the working copy, pixel for pixel (before JPEG encoding)
        thumb = working_copy(made.decoded.image)
        assert image_signals(thumb, 1920, 1080, detail=made.decoded.image) == reference


def test_blur_is_the_same_whatever_the_thumbnail_size():
    """A larger thumbnail decodes more pixels (1/2 draft for 400 px, not 1/4); blur is still measured at the 1/4
    draft's scale, so the flag does not depend on the thumbnail size."""
    data = jpeg_bytes(8, (1920, 1080))
    facts = {side: decode_with_facts(data, side).facts for side in (128, 256, 400, 600)}
    assert decode_with_facts(data, 400).decoded.image.size == (960, 540)
    for side in (128, 400, 600):
        assert facts[side]["blur"] == pytest.approx(facts[256]["blur"], rel=0.1)
        assert facts[side]["sharpness"] == pytest.approx(facts[256]["sharpness"], rel=0.1)


def test_write_thumbnail_makes_its_folder_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    from curation.inference.thumbnails import write_thumbnail

    target = tmp_path / "ab" / "abcd.jpg"
    write_thumbnail(target, b"first")  # the folder does not exist yet
    write_thumbnail(target, b"second")
    assert target.read_bytes() == b"second" and [p.name for p in target.parent.iterdir()] == ["abcd.jpg"]
    blocked = tmp_path / "ab" / "dir.jpg"
    blocked.mkdir()  # a rename over a directory fails: the error surfaces and the temporary file is gone
    with pytest.raises(OSError):
        write_thumbnail(blocked, b"x")
    assert sorted(p.name for p in target.parent.iterdir()) == ["abcd.jpg", "dir.jpg"]
