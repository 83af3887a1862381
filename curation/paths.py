"""The layout of the data root, computed in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curation.ids import is_object_id


@dataclass(frozen=True)
class DatasetPaths:
    """Every path that belongs to one dataset."""

    root: Path  # data root
    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "dataset.json"

    @property
    def files(self) -> Path:
        return self.dir / "files.parquet"

    @property
    def metadata(self) -> Path:
        return self.dir / "metadata.parquet"

    @property
    def embeddings(self) -> Path:
        return self.dir / "embeddings.parquet"

    @property
    def analytics(self) -> Path:
        return self.dir / "analytics.parquet"

    @property
    def sampling(self) -> Path:
        return self.dir / "sampling.parquet"

    @property
    def sampling_report(self) -> Path:
        return self.dir / "sampling-report.json"

    @property
    def selection(self) -> Path:
        return self.dir / "selection.json"

    @property
    def work(self) -> Path:
        """Per-shard intermediate files, so an interrupted run resumes without redoing shards."""
        return self.dir / "work"

    @property
    def listing(self) -> Path:
        """The accepted blobs (name, size) as registered, so a resumed run needs no new listing."""
        return self.work / "listing.parquet"

    def thumbnail_shard(self, shard: int) -> Path:
        """A shard's files and quality signals; its presence means the shard's results are stored."""
        return self.work / f"thumbnails-{shard:05d}.parquet"

    def results_shard(self, shard: int) -> Path:
        """A shard's tags, errors and embeddings as the service returned them (curation/shard_results.py)."""
        return self.work / f"results-{shard:05d}.parquet"

    @property
    def shard_jobs(self) -> Path:
        """The shard -> inference job map: one JSON file per shard (curation/shard_jobs.py)."""
        return self.work / "jobs"

    def shard_job(self, shard: int) -> Path:
        return self.shard_jobs / f"shard-{shard:05d}.json"

    def version_shard(self, version: int, shard: int) -> Path:
        """A thumbnail shard merged in by version `version` of an incrementally curated dataset."""
        return self.work / f"thumbnails-v{version:04d}-{shard:05d}.parquet"

    @property
    def lineage(self) -> Path:
        """Which version and flow run curated each blob (curation/versions.py)."""
        return self.dir / "lineage.parquet"

    @property
    def versions(self) -> Path:
        return self.dir / "versions.json"

    @property
    def thumbnails(self) -> Path:
        return self.dir / "thumbnails"

    def thumbnail(self, image_id: str) -> Path:
        return self.thumbnails / image_id[:2] / f"{image_id}.jpg"

    def versioned_thumbnail(self, image_id: str, version: int) -> Path:
        """An image's thumbnail as version `version` added it (the previous version's stays readable meanwhile)."""
        return self.thumbnails / image_id[:2] / f"{image_id}.v{version}.jpg"


def datasets_dir(root: Path) -> Path:
    """The folder holding one sub-folder per dataset."""
    return Path(root) / "datasets"


def dataset_paths(root: Path, dataset_id: str) -> DatasetPaths:
    """The paths of one dataset. Refuses anything but a well-formed id, so no path can escape the root."""
    if not is_object_id(dataset_id):
        raise ValueError(f"not a dataset id: {dataset_id!r} (expected 24 hex characters)")
    return DatasetPaths(root=Path(root), dir=datasets_dir(root) / dataset_id)
