"""The DataStore: lists datasets, loads one lazily, caches it, and derives what the views show.

Views only present what the store computes; the computing itself lives in `curation.viewer.data`.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import param
import polars as pl

from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.export import results_json
from curation.dataset.registry import DatasetRecord
from curation.sampling.subsets import save_subset
from curation.taxonomy import CATEGORIES
from curation.viewer.region import Region, region_mask
from curation.viewer.data import (
    attach_by_id,
    add_labels,
    apply_filters,
    class_label,
    class_options,
    decimate,
    distribution,
    facet_counts,
    image_details,
    load_images,
    mark_kept,
    page_bounds,
    page_rows,
    restricted_filters,
    tag_combinations,
    teach_from_labels,
    thumbnail_data_uri,
)

PER_PAGE = 48
MAX_POINTS = 20_000
# The filtered frame's columns; details and similar images read the full `images` frame.
VIEW_COLUMNS = ("image_id", "blob_name", "thumbnail", "kept", *CATEGORIES, "x", "y", "z", "anomaly_score")

# Loaded datasets are shared by every session of the server (frames are immutable), a few at a time.
_CACHE: OrderedDict[tuple[str, str, tuple[float, ...]], tuple[pl.DataFrame, pl.DataFrame | None]] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


_TABLES = (Table.FILES, Table.METADATA, Table.EMBEDDINGS, Table.ANALYTICS, Table.SAMPLING)


def _load(store: DatasetStore) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    key = (str(store.root.resolve()), store.dataset_id, tuple(store.mtime(t) for t in _TABLES))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    images = load_images(store)
    sampling = store.frame(Table.SAMPLING, columns=["image_id", "keep_rank"]) if store.has(Table.SAMPLING) else None
    if sampling is not None:  # once per load, so a sampling change is a comparison (see mark_kept)
        images = attach_by_id(images, sampling)
    with _LOCK:
        _CACHE[key] = (images, sampling)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return images, sampling


class DataStore(param.Parameterized):
    """One session's view state over the data root; derived frames are recomputed only when it changes."""

    dataset_id = param.String(default=None, allow_None=True, doc="The dataset open for curation.")
    selections = param.Dict(default={}, doc="Classes kept per category ('None' = null tag).")
    fraction = param.Number(default=1.0, bounds=(0.0, 1.0), doc="Sampling level.")
    page = param.Integer(default=1, bounds=(1, None))
    selected_image = param.String(default=None, allow_None=True, doc="The image in the quick file view.")
    region = param.ClassSelector(class_=Region, default=None, allow_None=True,
                                 doc="A box or lasso over the 2D projection: the views show only the images inside.")
    pending_labels = param.List(default=[], doc="Labels not taught yet: dicts of image_id, file, category, class.")

    def __init__(self, root: Path, **params: Any) -> None:
        super().__init__(**params)
        self.catalog = Catalog(root)
        self._derived: dict[str, Any] = {}

    # -- datasets -------------------------------------------------------------------------------------------------
    def records(self) -> list[DatasetRecord]:
        return self.catalog.records()

    @property
    def dataset(self) -> DatasetStore:
        """The open dataset's store (ValueError when none is open)."""
        if self.dataset_id is None:
            raise ValueError("open a dataset first")
        return self.catalog.dataset(self.dataset_id)

    def record(self, dataset_id: str | None = None) -> DatasetRecord:
        return self.catalog.dataset(dataset_id or self.dataset_id).load_record()

    def open(self, dataset_id: str) -> DatasetRecord:
        """Open a Completed dataset for curation (raises ValueError otherwise)."""
        dataset = self.catalog.dataset(dataset_id)
        record = dataset.require_completed("opened")
        _load(dataset)
        self._derived = {}
        self.param.update(
            dataset_id=dataset_id,
            selections={c: list(v) for c, v in class_options().items()},
            fraction=1.0,
            page=1,
            selected_image=None,
            region=None,
            pending_labels=[],
        )
        return record

    def delete(self, dataset_id: str) -> None:
        self.catalog.dataset(dataset_id).delete()
        if dataset_id == self.dataset_id:
            self.param.update(dataset_id=None, selected_image=None, region=None, pending_labels=[])

    def results_file(self, dataset_id: str) -> io.BytesIO:
        data = results_json(self.catalog.dataset(dataset_id))
        return io.BytesIO(json.dumps(data, indent=2, default=str).encode("utf-8"))

    # -- the open dataset -----------------------------------------------------------------------------------------
    def _cached(self, name: str, key: tuple, compute) -> Any:
        entry = self._derived.get(name)
        if entry is None or entry[0] != key:
            entry = (key, compute())
            self._derived[name] = entry
        return entry[1]

    def _key(self) -> tuple:
        return (self.dataset_id, json.dumps(self.selections, sort_keys=True), self.fraction, self.region)

    @property
    def images(self) -> pl.DataFrame:
        """Every image of the open dataset, with `kept` at the current sampling level."""
        def compute() -> pl.DataFrame:
            frame, sampling = _load(self.dataset)
            return mark_kept(frame, sampling, self.fraction)

        return self._cached("images", (self.dataset_id, self.fraction), compute)

    @property
    def has_sampling(self) -> bool:
        return self.dataset_id is not None and _load(self.dataset)[1] is not None

    @property
    def tag_filtered(self) -> pl.DataFrame:
        """The images matching the tag filters (kept or not), whatever the region; `in_region` marks the region's."""
        def compute() -> pl.DataFrame:
            images = self.images  # only the columns the views list, plot and count: filtering copies them
            frame = apply_filters(images.select([c for c in VIEW_COLUMNS if c in images.columns]), self.selections)
            return frame.with_columns(region_mask(frame, self.region))

        return self._cached("tag_filtered", self._key(), compute)

    @property
    def filtered(self) -> pl.DataFrame:
        """The images matching the filters and inside the region, if one is drawn (kept or not)."""
        def compute() -> pl.DataFrame:
            frame = self.tag_filtered
            return frame if self.region is None else frame.filter(pl.col("in_region"))

        return self._cached("filtered", self._key(), compute)

    def counts(self) -> dict[str, int]:
        filtered = self.filtered
        return {"total": self.images.height, "filtered": filtered.height, "kept": int(filtered["kept"].sum()),
                "matching": self.tag_filtered.height}

    def facet_counts(self) -> dict[str, dict[str, int]]:
        def combinations() -> pl.DataFrame:  # per dataset and region: a filter change only filters this small frame
            images = self.images
            if self.region is not None:  # what ticking a class adds inside the region
                images = images.filter(region_mask(images, self.region))
            return tag_combinations(images)

        combos = self._cached("combinations", (self.dataset_id, self.region), combinations)
        return self._cached("facets", self._key(), lambda: facet_counts(combos, self.selections))

    def page_info(self) -> tuple[int, int, int, int]:
        return page_bounds(self.filtered.height, self.page, PER_PAGE)

    def page_items(self) -> list[dict[str, Any]]:
        """The current gallery page: id, name, thumbnail data URI, kept."""
        page, *_ = self.page_info()
        rows = page_rows(self.filtered, page, PER_PAGE).select("image_id", "blob_name", "thumbnail", "kept")
        return [
            {"id": r["image_id"], "name": r["blob_name"], "label": Path(r["blob_name"]).name,
             "src": thumbnail_data_uri(self.catalog, r["thumbnail"]), "kept": bool(r["kept"])}
            for r in rows.iter_rows(named=True)
        ]

    def details(self, image_id: str) -> dict[str, Any] | None:
        details = image_details(self.images, image_id)
        if details is None:
            return None
        details["src"] = thumbnail_data_uri(self.catalog, details["thumbnail"])
        names = self.images.filter(pl.col("image_id").is_in([i for i, _ in details["similar"]]))
        lookup = {r[0]: r for r in names.select("image_id", "blob_name", "thumbnail").iter_rows()}
        details["similar_items"] = [
            {"id": i, "name": lookup[i][1], "label": f"{d:.3f}", "src": thumbnail_data_uri(self.catalog, lookup[i][2]),
             "kept": True}
            for i, d in details["similar"] if i in lookup
        ]
        return details

    def points(self) -> pl.DataFrame:
        """Images matching the tag filters that have a 3D position, at most MAX_POINTS (+ the selected image), with
        `in_region`: the views draw the region's points over the others."""
        def compute() -> pl.DataFrame:
            frame = self.tag_filtered
            if "x" not in frame.columns:
                return frame.clear()
            frame = frame.filter(pl.col("x").is_not_null())
            return decimate(frame, MAX_POINTS, keep_ids=[self.selected_image] if self.selected_image else [])

        return self._cached("points", (*self._key(), self.selected_image), compute)

    def hover_preview(self, image_id: str) -> dict[str, Any] | None:
        """What the hover card shows for a plotted point: name, thumbnail and tags (None for an unknown id).

        Looked up among the plotted points (at most MAX_POINTS), through an index built once per set of points, so a
        hover costs a dict lookup and a (cached) thumbnail read, whatever the dataset's size."""
        points = self.points()
        index = self._cached("hover_index", (*self._key(), self.selected_image),
                             lambda: {image_id: i for i, image_id in enumerate(points["image_id"].to_list())})
        row_number = index.get(image_id)
        if row_number is None:
            return None
        row = points.row(row_number, named=True)
        tags = [[c.capitalize(), class_label(row.get(c))] for c in CATEGORIES if c in points.columns]
        if not row["kept"]:
            tags.append(["Sample", "excluded at this sampling level"])
        return {"id": image_id, "name": row["blob_name"], "src": thumbnail_data_uri(self.catalog, row["thumbnail"]),
                "tags": tags}

    def distribution(self) -> pl.DataFrame:
        return self._cached("distribution", self._key(), lambda: distribution(self.filtered))

    def save(self, name: str) -> DatasetRecord:
        """Save the current selection (filters, sampling level and the region, if any) as a derived dataset."""
        name = name.strip()
        if not name:
            raise ValueError("give the new dataset a name")
        filters = restricted_filters(self.selections)
        if self.region is None:
            return save_subset(self.dataset, name, fraction=self.fraction, filters=filters or None)
        return save_subset(self.dataset, name, fraction=self.fraction, filters=filters or None,
                           image_ids=self.filtered["image_id"].to_list(), region=self.region.as_dict())

    # -- teach by example -----------------------------------------------------------------------------------------
    def label(self, scope: str, category: str, cls: str) -> int:
        """Label the selected image (scope "image") or every image of the current gallery page (scope "page") as
        `cls` for `category`; returns how many images were labelled. Raises ValueError when there is none."""
        if self.dataset_id is None:
            raise ValueError("open a dataset first")
        if scope == "image":
            if not self.selected_image:
                raise ValueError("no image selected: click a thumbnail first")
            rows = self.images.filter(pl.col("image_id") == self.selected_image)
        elif scope == "page":
            page, *_ = self.page_info()
            rows = page_rows(self.filtered, page, PER_PAGE)
        else:
            raise ValueError(f"unknown label scope {scope!r}")
        images = list(rows.select("image_id", "blob_name").iter_rows())
        if not images:
            raise ValueError("no images on this page" if scope == "page" else "the selected image is not in the dataset")
        self.pending_labels = add_labels(self.pending_labels, images, category, cls)
        return len(images)

    def clear_labels(self) -> None:
        self.pending_labels = []

    def teach(self) -> dict[str, Any]:
        """Teach from the pending labels, recompute the sampling order, and reload the dataset (its tags changed)."""
        if self.dataset_id is None:
            raise ValueError("open a dataset first")
        summary = teach_from_labels(self.dataset, self.pending_labels)
        self._derived = {}
        self.pending_labels = []
        self.param.trigger("dataset_id")  # every view re-reads the dataset; _load sees the new files' mtimes
        return summary
