from __future__ import annotations

import pytest

from curation.ingest.storage import BlobInfo
from curation.ingest.validation import DatasetTooSmall, require_enough, validate_listing


def blobs(*specs: tuple[str, int]) -> list[BlobInfo]:
    return [BlobInfo(name, size) for name, size in specs]


def test_accepts_image_extensions_in_any_case_and_counts_rejections():
    report = validate_listing(
        blobs(("a.JPG", 10), ("b.jpeg", 5), ("c.Png", 1), ("d.bmp", 3), ("e.gif", 9), ("f.txt", 2), ("g.jpg", 0), ("noext", 4))
    )
    assert [b.name for b in report.accepted] == ["a.JPG", "b.jpeg", "c.Png", "d.bmp"]
    assert report.found == 8
    assert report.rejected == {
        "unsupported extension '.gif'": 1,
        "unsupported extension '.txt'": 1,
        "unsupported extension '(none)'": 1,
        "empty (0 bytes)": 1,
    }


def test_thirty_images_are_refused_with_the_counts_in_the_message():
    report = validate_listing(blobs(*[(f"{i}.jpg", 100) for i in range(30)], ("x.txt", 1), ("y.png", 0)))
    with pytest.raises(DatasetTooSmall) as info:
        require_enough(report, 31)
    message = str(info.value)
    assert "need at least 31" in message and "got 30" in message
    assert "32 blobs found, 30 accepted" in message
    assert "1 unsupported extension '.txt'" in message and "1 empty (0 bytes)" in message


def test_thirty_one_images_are_enough():
    require_enough(validate_listing(blobs(*[(f"{i}.jpg", 100) for i in range(31)])), 31)


def test_hidden_files_and_files_in_hidden_folders_are_rejected_and_counted():
    """Issue #17: one rule for a folder and a container; a hidden entry is a counted rejection, never skipped."""
    report = validate_listing(
        blobs(("a.jpg", 1), (".DS_Store", 9), (".b.jpg", 1), ("x/.c.png", 1), (".thumbs/d.jpg", 1), ("e/.f/g.jpg", 1),
              ("h.i/j.jpg", 1))
    )
    assert [b.name for b in report.accepted] == ["a.jpg", "h.i/j.jpg"]
    assert report.found == 7 and report.rejected == {"hidden file": 5}
