"""The dashboard's pure logic (curation.viewer.data) on small frames."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from curation.dataset.catalog import Catalog, Table
from curation.dataset.registry import DatasetRecord, DatasetType
from curation.viewer.data import (
    add_labels,
    apply_filters,
    decimate,
    distribution,
    facet_counts,
    filter_records,
    image_details,
    label_counts,
    labels_csv_text,
    load_images,
    mark_kept,
    page_bounds,
    page_rows,
    read_usage,
    restricted_filters,
    teach_from_labels,
    teach_summary_lines,
    thumbnail_data_uri,
    usage_by_day,
)


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "blob_name": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
            "time": ["day", "night", None, "day", "day"],
            "weather": ["clear", "clear", "rainy", None, "rainy"],
            "road": ["city", "city", "highway", "city", None],
            "location": ["outside"] * 5,
        }
    )


def test_filter_or_within_and_across_with_none(frame: pl.DataFrame) -> None:
    assert apply_filters(frame, {"time": ["day", "None"]})["image_id"].to_list() == ["a", "c", "d", "e"]
    assert apply_filters(frame, {"time": ["day", None], "weather": ["rainy"]})["image_id"].to_list() == ["c", "e"]
    assert apply_filters(frame, {"weather": ["None"]})["image_id"].to_list() == ["d"]
    assert apply_filters(frame, {"time": []}).is_empty()
    assert apply_filters(frame, {}).height == 5


def test_facet_counts_count_none_and_ignore_own_category(frame: pl.DataFrame) -> None:
    counts = facet_counts(frame, {"time": ["day"], "weather": ["clear", "rainy", "cloudy", "foggy", "snowy", "None"]})
    # time counted under the other filters only: every time class is still visible
    assert counts["time"] == {"day": 3, "night": 1, "dawn_dusk": 0, "None": 1}
    # weather counted among day images
    assert counts["weather"] == {"clear": 1, "cloudy": 0, "rainy": 1, "foggy": 0, "snowy": 0, "None": 1}
    assert counts["road"] == {"city": 2, "highway": 0, "None": 1}


def test_restricted_filters_drop_full_categories_and_map_none() -> None:
    selections = {"time": ["day", "night", "dawn_dusk", "None"], "weather": ["rainy", "None"]}
    assert restricted_filters(selections) == {"weather": ["rainy", None]}


def test_mark_kept_follows_keep_rank_prefix(frame: pl.DataFrame) -> None:
    sampling = pl.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "keep_rank": [4, 0, 3, 1, 2]})
    kept = mark_kept(frame, sampling, 0.4)  # round(0.4 * 5) = 2: ranks 0 and 1
    assert kept.filter("kept")["image_id"].to_list() == ["b", "d"]
    assert mark_kept(frame, sampling, 1.0)["kept"].all()
    assert mark_kept(frame, None, 0.2)["kept"].all()


def test_mark_kept_from_a_joined_keep_rank_matches_the_id_lookup(frame: pl.DataFrame) -> None:
    sampling = pl.DataFrame({"image_id": ["a", "b", "c", "e"], "keep_rank": [3, 0, 2, 1]})  # d has no rank
    joined = frame.join(sampling, on="image_id", how="left", maintain_order="left")
    for fraction in (0.2, 0.4, 0.6, 0.8, 1.0):
        by_rank = mark_kept(joined, sampling, fraction).drop("keep_rank")
        assert_frame_equal(by_rank, mark_kept(frame, sampling, fraction))
    assert mark_kept(joined, sampling, 0.8).filter("kept")["image_id"].to_list() == ["b", "c", "e"]  # round(3.2)


def test_pagination_clamps_and_slices() -> None:
    assert page_bounds(100, 1, 48) == (1, 0, 48, 3)
    assert page_bounds(100, 3, 48) == (3, 96, 100, 3)
    assert page_bounds(100, 9, 48) == (3, 96, 100, 3)
    assert page_bounds(0, 1, 48) == (1, 0, 0, 1)
    rows = pl.DataFrame({"image_id": [str(i) for i in range(100)]})
    assert page_rows(rows, 2, 48)["image_id"].to_list() == [str(i) for i in range(48, 96)]


def test_thumbnail_data_uri_only_for_files_inside_the_data_root(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "root")
    store = catalog.dataset("a" * 24)
    thumb = store.thumbnail_path("b" * 16)
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (catalog.root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert thumbnail_data_uri(catalog, store.relative(thumb)).startswith("data:image/jpeg;base64,")
    # refused by Catalog.resolve (tested with the catalog) or missing: no image, never an error
    for bad in ["../secret.jpg", str(tmp_path / "secret.jpg"), "link.jpg", "", None, "datasets/missing.jpg"]:
        assert thumbnail_data_uri(catalog, bad) is None


def test_load_images_joins_the_tables_present(tmp_path: Path) -> None:
    from tests.browser.dataset_builder import build_dataset

    catalog = Catalog(tmp_path)
    store = catalog.dataset(build_dataset(tmp_path, 12, "load me", seed=1))
    images = load_images(store)
    assert images["image_id"].to_list() == store.frame(Table.FILES)["image_id"].to_list()
    assert {"blob_name", "time", "x", "y", "z", "anomaly_score", "similar_ids", "quality_flags"} <= set(images.columns)
    assert "embedding" not in images.columns  # the vectors are never read
    bare = catalog.dataset(build_dataset(tmp_path, 12, "no analytics", seed=2, analytics=False))
    images = load_images(bare)
    assert images.height == 12 and "x" in images.columns and "anomaly_score" not in images.columns


def test_decimate_caps_points_and_keeps_selected() -> None:
    rows = pl.DataFrame({"image_id": [f"i{n}" for n in range(1000)], "x": list(range(1000))})
    out = decimate(rows, 100, keep_ids=["i7", "i999"])
    assert 100 <= out.height <= 102
    assert {"i7", "i999"} <= set(out["image_id"].to_list())
    assert out["image_id"].n_unique() == out.height
    assert_frame_equal(decimate(rows, 100, seed=1), decimate(rows, 100, seed=1))
    assert decimate(rows, 5000).height == 1000


def test_distribution_full_vs_sample(frame: pl.DataFrame) -> None:
    marked = frame.with_columns(pl.Series("kept", [True, False, True, False, False]))
    dist = distribution(marked)
    time = dist.filter(pl.col("category") == "time").select("class", "full", "sample")
    assert time.rows() == [("day", 3, 1), ("night", 1, 0), ("dawn_dusk", 0, 0), ("None", 1, 1)]
    day = dist.filter((pl.col("category") == "time") & (pl.col("class") == "day")).row(0, named=True)
    assert day["full_share"] == pytest.approx(0.6)
    assert day["sample_share"] == pytest.approx(0.5)


def test_image_details_without_analytics(frame: pl.DataFrame) -> None:
    full = frame.with_columns(
        pl.lit(10).alias("size"), pl.lit(4).alias("width"), pl.lit(3).alias("height"), pl.lit("jpeg").alias("format"),
        pl.lit(None, pl.String).alias("thumbnail"), pl.lit(None, pl.String).alias("error"),
        *[pl.lit(0.9).alias(f"{c}_confidence") for c in ("time", "weather", "road", "location")],
    )
    details = image_details(full, "c")
    assert details["name"] == "c.jpg"
    assert details["tags"]["time"] == ("None", 0.9)
    assert details["analytics"] is False and details["similar"] == []
    assert image_details(full, "zz") is None


def test_filter_records_by_type_and_name() -> None:
    records = [
        DatasetRecord(id="0" * 24, name="Demo drives", type=DatasetType.DEMO),
        DatasetRecord(id="1" * 24, name="night run", type=DatasetType.USER),
    ]
    assert [r.name for r in filter_records(records, "user")] == ["night run"]
    assert [r.name for r in filter_records(records, "all", "DEMO")] == ["Demo drives"]
    assert filter_records(records, "demo", "night") == []


def test_usage_ledger_rows_and_daily_totals(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    rows = [
        {"key_id": "key-a", "day": "2024-05-01", "model": "cpu", "processed": 10, "failed": 1},
        {"key_id": "key-b", "day": "2024-05-01", "model": "cpu", "processed": 5, "failed": 0},
        {"key_id": "key-a", "day": "2024-05-02", "model": "clip", "processed": 7, "failed": 2},
    ]
    path.write_text(json.dumps(rows))
    usage = read_usage(path)
    assert usage.height == 3
    daily = usage_by_day(usage)
    assert daily.filter((pl.col("day") == "2024-05-01") & (pl.col("kind") == "processed"))["images"].to_list() == [15]
    with pytest.raises(ValueError, match="does not exist"):
        read_usage(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="cannot be read"):
        read_usage(tmp_path / "bad.json")


# -- teach by example --------------------------------------------------------------------------------------------
def test_add_labels_replaces_same_image_and_category_and_refuses_unknown_words() -> None:
    pending = add_labels([], [("a", "d/a.jpg"), ("b", "d/b.jpg")], "time", "day")
    pending = add_labels(pending, [("a", "d/a.jpg")], "weather", "rainy")
    pending = add_labels(pending, [("b", "d/b.jpg")], "time", "night")  # relabel: replaces, moves last
    assert [(p["image_id"], p["category"], p["class"]) for p in pending] == [
        ("a", "time", "day"), ("a", "weather", "rainy"), ("b", "time", "night")]
    assert pending[0]["file"] == "d/a.jpg"
    assert label_counts(pending) == {"time": {"day": 1, "night": 1}, "weather": {"rainy": 1}}
    with pytest.raises(ValueError, match="not a time class"):
        add_labels(pending, [("c", "c.jpg")], "time", "None")
    with pytest.raises(ValueError, match="unknown category"):
        add_labels(pending, [("c", "c.jpg")], "mood", "day")


def test_labels_csv_one_row_per_image_readable_by_teach(tmp_path: Path) -> None:
    from curation.analysis.teach import read_labels

    pending = add_labels([], [("a", 'odd, "name".jpg'), ("b", "b.jpg")], "time", "day")
    pending = add_labels(pending, [("a", 'odd, "name".jpg')], "road", "city")
    path = tmp_path / "labels.csv"
    path.write_text(labels_csv_text(pending))
    rows = read_labels(path)
    assert rows == [{"file": "a", "time": "day", "weather": "", "road": "city", "location": ""},
                    {"file": "b", "time": "day", "weather": "", "road": "", "location": ""}]


def test_teach_from_labels_retags_resamples_and_summarises(tmp_path: Path) -> None:
    from tests.browser.dataset_builder import build_dataset

    store = Catalog(tmp_path).dataset(build_dataset(tmp_path, 30, "teach me", seed=3, analytics=False))
    folder = store.table_path(Table.FILES).parent  # the dataset's folder, where the labels CSVs stay
    with pytest.raises(ValueError, match="no labels"):
        teach_from_labels(store, [])
    meta = store.frame(Table.METADATA).join(store.frame(Table.FILES), on="image_id")
    pending: list = []
    for cls in ("day", "night"):
        rows = meta.filter(pl.col("time") == cls).head(3)
        pending = add_labels(pending, rows.select("image_id", "blob_name").iter_rows(), "time", cls)
    one_class = [p for p in pending if p["class"] == "day"]
    with pytest.raises(ValueError, match="nothing to teach"):
        teach_from_labels(store, one_class)
    assert list(folder.glob("teach-labels-*.csv")) == []  # the failed attempt left no CSV
    sampling_before = store.mtime(Table.SAMPLING)
    summary = teach_from_labels(store, pending)
    assert summary["meta_model"] == "cpu-rules+probe-v1" == store.load_record().meta_model
    assert summary["categories"]["time"]["train_accuracy"] == 1.0 and summary["sampling_error"] is None
    assert store.mtime(Table.SAMPLING) > sampling_before
    csv_path = Path(summary["labels_csv"])
    assert csv_path.parent == folder and csv_path.name.startswith("teach-labels-")
    assert len(csv_path.read_text().splitlines()) == 1 + 6
    assert list(folder.glob("teach-labels-*.csv")) == [csv_path]
    retagged = store.frame(Table.METADATA).join(meta.select("image_id", pl.col("time").alias("was")), on="image_id")
    # the embeddings cluster by the old time tag: the probe agrees on the day and night images
    agree = retagged.filter(pl.col("was").is_in(["day", "night"]))
    assert (agree["time"] == agree["was"]).mean() >= 0.9
    lines = teach_summary_lines(summary)
    assert "cpu-rules+probe-v1" in lines[0] and "was cpu-rules" in lines[0]
    assert any(line.startswith("time: day 3, night 3 labelled; training accuracy 100%") for line in lines)
