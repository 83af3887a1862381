"""Folders of labelled photos (images/ + labels.csv) for training the tag heads and checking a backend.

labels.csv has a `file` column and one column per taxonomy category; a blank cell means unknown. The optional
`source_repo` column says where a photo came from (the heads' manifest counts photos per source).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[3]  # curation/inference/models/labelled.py -> the repository
# Where the training script looks for extra labelled photos gathered from public repositories (never committed).
CACHE_ENV = "CURATION_TRAINING_CACHE"
SHARED_SETS = ("real-dev", "real-train", "real-weather")
LOAD_SIDE = 640  # photos are read at about this size; every input size the heads use is smaller


@dataclass
class LabelledPhoto:
    file: str
    folder: str
    source: str
    commit: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    image: Image.Image | None = None

    def __getattr__(self, name: str) -> str:  # photo.weather etc.: the label or ""
        labels = self.__dict__.get("labels", {})
        if name in labels:
            return labels[name]
        raise AttributeError(name)


def load_image(path: Path, side: int = LOAD_SIDE) -> Image.Image:
    """An RGB image, EXIF-rotated; JPEGs decode in draft mode at about `side`."""
    with Image.open(path) as im:
        im.draft("RGB", (side, side))
        return ImageOps.exif_transpose(im).convert("RGB")


def read_labels(labels_csv: Path, categories: Iterable[str]) -> list[dict[str, str]]:
    """The rows of a labels.csv: file, source and each category's label ('' when unknown)."""
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{"file": r["file"], "source": (r.get("source_repo") or "").strip(),
             "commit": (r.get("source_commit") or "").strip(),
             **{c: (r.get(c) or "").strip() for c in categories}} for r in rows]


def cache_dir() -> Path:
    """The local folder of extra labelled photos: $CURATION_TRAINING_CACHE, else ~/.cache/curation/training."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "curation" / "training").expanduser()


def shared_sets() -> list[Path]:
    """The labelled folders present: ../shared/datasets/{real-dev,real-train,real-weather} beside the repository,
    then every folder with a labels.csv under the cache."""
    found = [REPO.parent / "shared" / "datasets" / name for name in SHARED_SETS]
    cache = cache_dir()
    if cache.is_dir():
        found += sorted(p.parent for p in cache.glob("*/labels.csv"))
        if (cache / "labels.csv").is_file():
            found.append(cache)
    return [p for p in found if (p / "labels.csv").is_file()]


# What a file that does not decode raises (Pillow: OSError for unknown or truncated data, ValueError, SyntaxError for
# some broken headers, DecompressionBombError for absurd sizes).
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_photos(labels_csv: Path, images_dir: Path, categories: Iterable[str], *, folder: str | None = None,
                with_images: bool = True, unreadable: list[str] | None = None) -> Iterator[LabelledPhoto]:
    """The labelled photos of one labels.csv, in its row order, each image decoded only when it is reached.

    A file that does not decode is skipped, and its name appended to `unreadable` when a list is given.
    """
    categories = tuple(categories)
    labels_csv, images_dir = Path(labels_csv), Path(images_dir)
    folder = folder if folder is not None else labels_csv.parent.name
    for row in read_labels(labels_csv, categories):
        photo = LabelledPhoto(row["file"], folder, row["source"] or folder, row["commit"],
                              {c: row[c] for c in categories})
        if with_images:
            try:
                photo.image = load_image(images_dir / row["file"])
            except UNREADABLE:
                if unreadable is not None:
                    unreadable.append(row["file"])
                continue
        yield photo


def load_labelled(folders: Iterable[Path], categories: tuple[str, ...] = ("time", "weather", "road", "location"),
                  with_images: bool = True) -> list[LabelledPhoto]:
    """Every readable labelled photo of the folders (images/ + labels.csv each; an unreadable file is skipped)."""
    photos: list[LabelledPhoto] = []
    for folder in map(Path, folders):
        photos.extend(read_photos(folder / "labels.csv", folder / "images", categories, folder=folder.name,
                                  with_images=with_images))
    return photos
