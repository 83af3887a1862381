"""A subset of images listed elsewhere (image ids or blob names), or of some tags: SDK `save_subset(images=...)`,
`curation sample --images FILE --filter CATEGORY=CLASS,... --save`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from curation import cli
from curation.dataset.catalog import Catalog, DatasetStore, Document, Table
from curation.sampling.subsets import image_ids_for, sample_dataset
from curation.sdk import Curation
from curation.settings import Settings, use_settings
from tests.unit.sampling.test_subsets import dataset  # noqa: F401 -- the 50-image Completed dataset


def test_ids_and_blob_names_both_name_images_in_the_order_given(dataset: DatasetStore) -> None:  # noqa: F811
    assert image_ids_for(dataset, ["img007", "img003.jpg", " img010 ", "", "img007.jpg"]) == ["img007", "img003", "img010"]


def test_a_name_that_matches_nothing_is_an_error_that_names_it(dataset: DatasetStore) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=r"2 of 3 listed images .*'nope.jpg', 'img999'"):
        image_ids_for(dataset, ["img001", "nope.jpg", "img999"])
    with pytest.raises(ValueError, match="empty"):
        image_ids_for(dataset, ["", "  "])


def test_sdk_saves_exactly_the_listed_images_and_a_fraction_of_them(dataset: DatasetStore) -> None:  # noqa: F811
    sample_dataset(dataset)
    listed = [f"img{i:03d}.jpg" for i in range(0, 50, 2)]  # 25 images, by blob name
    with Curation(data_root=dataset.root) as cr:
        saved = cr.catalog.dataset(cr.save_subset(dataset.dataset_id, "even", images=listed))
        assert sorted(saved.frame(Table.FILES)["blob_name"]) == sorted(listed)
        assert saved.read_json(Document.SELECTION)["image_ids"] == [n.removesuffix(".jpg") for n in listed]
        sampled = set(cr.sample_ids(dataset.dataset_id, 0.4))
        fraction = cr.sample_ids(dataset.dataset_id, 0.4, images=listed)
        assert set(fraction) == sampled & {n.removesuffix(".jpg") for n in listed}


def test_cli_sample_images_saves_the_listed_images(dataset: DatasetStore, tmp_path) -> None:  # noqa: F811
    with use_settings(Settings(data_root=dataset.root)):
        _cli_sample_images(dataset, tmp_path)


def _cli_sample_images(dataset: DatasetStore, tmp_path) -> None:
    sample_dataset(dataset)
    listed = tmp_path / "picked.txt"
    listed.write_text("img001\nimg002.jpg\nimg003\n", encoding="utf-8")
    result = CliRunner().invoke(cli.app, ["sample", dataset.dataset_id, "--fraction", "1", "--images", str(listed),
                                          "--save", "--name", "picked"])
    assert result.exit_code == 0, result.output
    assert "sample at 100% of the listed images: 3 of 50 images" in result.output
    [derived] = [r for r in Catalog(dataset.root).records() if r.name == "picked"]
    assert sorted(Catalog(dataset.root).dataset(derived.id).frame(Table.FILES)["image_id"]) == ["img001", "img002", "img003"]

    listed.write_text("img001\nnot-there.png\n", encoding="utf-8")
    wrong = CliRunner().invoke(cli.app, ["sample", dataset.dataset_id, "--images", str(listed), "--save"])
    assert wrong.exit_code == 1
    assert [line for line in wrong.output.splitlines() if line.strip()] == [
        f"error: 1 of 2 listed images are neither an image id nor a blob name of dataset {dataset.dataset_id}: "
        "'not-there.png'"]
    missing = CliRunner().invoke(cli.app, ["sample", dataset.dataset_id, "--images", str(tmp_path / "none.txt")])
    assert missing.exit_code == 1 and "cannot read it" in missing.output


def test_cli_sample_filter_keeps_the_tags_and_refuses_a_misspelt_class(dataset: DatasetStore, tmp_path) -> None:  # noqa: F811
    with use_settings(Settings(data_root=dataset.root)):
        sample_dataset(dataset)
        # the fixture: 30 day, 15 night, 5 None (the last five); roads alternate city/highway
        result = CliRunner().invoke(cli.app, ["sample", dataset.dataset_id, "--fraction", "1", "--filter", "time=Night,None",
                                              "--filter", "road=city", "--save", "--name", "dark city"])
        assert result.exit_code == 0, result.output
        meta = dataset.frame(Table.METADATA)
        expected = meta.filter((meta["time"].is_null() | (meta["time"] == "night")) & (meta["road"] == "city"))
        assert 0 < expected.height < 20
        assert f"sample at 100% (time: night, None; road: city): {expected.height} of 50 images" in result.output
        [derived] = [r for r in Catalog(dataset.root).records() if r.name == "dark city"]
        saved = Catalog(dataset.root).dataset(derived.id)
        assert sorted(saved.frame(Table.FILES)["image_id"]) == sorted(expected["image_id"])
        assert saved.read_json(Document.SELECTION)["filters"] == {"time": ["night", None], "road": ["city"]}

        wrong = CliRunner().invoke(cli.app, ["sample", dataset.dataset_id, "--filter", "weather=rain"])
        assert wrong.exit_code == 1
        assert wrong.output.strip() == ("error: filter 'weather=rain': weather has no class 'rain' (classes: clear, "
                                        "cloudy, rainy, foggy, snowy, None)")
