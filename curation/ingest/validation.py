"""Which listed blobs are acceptable images, and whether there are enough of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from curation.ingest.storage import BlobInfo

ACCEPTED_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


class DatasetTooSmall(ValueError):
    """Too few acceptable images to make a dataset; the message says what was found and why."""


@dataclass(frozen=True)
class ValidationReport:
    """What a listing held: every blob is either accepted or rejected with a reason."""

    found: int
    accepted: list[BlobInfo]
    rejected: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items())) or "none"
        return f"{self.found} blobs found, {len(self.accepted)} accepted, rejected: {reasons}"


HIDDEN = "hidden file"


def is_hidden(name: str) -> bool:
    """Whether a blob's name or any folder on its path starts with '.' (".DS_Store", ".thumbs/a.jpg")."""
    return any(part.startswith(".") for part in name.split("/") if part)


def rejection_reason(blob: BlobInfo) -> str | None:
    """None when the blob is an acceptable image, else why not. The same rules for a folder and a container."""
    if blob.unusable:
        return blob.unusable
    if is_hidden(blob.name):
        return HIDDEN
    suffix = PurePosixPath(blob.name).suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        return f"unsupported extension '{suffix or '(none)'}'"
    if blob.size <= 0:
        return "empty (0 bytes)"
    return None


def validate_listing(blobs: Iterable[BlobInfo]) -> ValidationReport:
    """Split a listing into accepted images and counted rejections."""
    accepted: list[BlobInfo] = []
    rejected: Counter[str] = Counter()
    found = 0
    for blob in blobs:
        found += 1
        reason = rejection_reason(blob)
        if reason is None:
            accepted.append(blob)
        else:
            rejected[reason] += 1
    return ValidationReport(found=found, accepted=sorted(accepted, key=lambda b: b.name), rejected=dict(rejected))


def require_enough(report: ValidationReport, min_images: int) -> None:
    """Raise DatasetTooSmall unless at least min_images blobs were accepted."""
    if len(report.accepted) < min_images:
        raise DatasetTooSmall(
            f"not enough images to make a dataset: need at least {min_images} acceptable images "
            f"(jpg, jpeg, png or bmp, larger than 0 bytes, not hidden), got {len(report.accepted)}. {report.summary()}"
        )
