"""Issue #18's view changes without a browser: cards updated in place, progress and failure text, one class name."""

from __future__ import annotations

from curation.dataset.catalog import Catalog
from curation.dataset.registry import Counts, DatasetRecord, Status
from curation.viewer.data import class_label, distribution
from curation.dashboards.datasets_view import DatasetsView, card_html, progress_text
from curation.dashboards.distribution_view import distribution_plots
from curation.dashboards.embedding_view import plotly_bundle
from curation.dashboards.store import DataStore

XSS = "<img src=x onerror=alert(1)>"


def test_class_label_is_one_display_form() -> None:
    assert class_label("dawn_dusk") == "dawn/dusk" and class_label("day") == "day"
    assert class_label(None) == "None" and class_label("None") == "None"


def test_distribution_axes_use_the_display_form(tmp_path) -> None:
    import polars as pl

    frame = pl.DataFrame({"time": ["dawn_dusk", "day", None], "weather": [None] * 3, "road": [None] * 3,
                          "location": [None] * 3, "kept": [True, True, False]},
                         schema_overrides={c: pl.String for c in ("weather", "road", "location")})
    bars = distribution_plots(distribution(frame), 60)
    classes = set(bars.values()[0].data["class"])
    assert "dawn/dusk" in classes and "dawn_dusk" not in classes


def test_card_shows_progress_failure_hint_and_parent_name_escaped() -> None:
    counts = Counts(found=10_000, accepted=10_000, processed=1_200, failed=34)
    running = DatasetRecord(id="a" * 24, name=XSS, counts=counts)
    assert progress_text(running) == "1,234 / 10,000 images"
    assert "1,234 / 10,000 images" in card_html(running) and "<img" not in card_html(running)
    assert progress_text(DatasetRecord(id="a" * 24, name="x")) == "starting\u2026"
    failed = DatasetRecord(id="b" * 24, name="f", status=Status.FAILED, failure_reason=f"boom {XSS}")
    html = card_html(failed)
    assert "boom &lt;img" in html and f"--resume {'b' * 24}" in html
    assert "no reason recorded" in card_html(failed.model_copy(update={"failure_reason": None}))
    derived = DatasetRecord(id="c" * 24, name="d", status=Status.COMPLETED, original_dataset="d" * 24)
    html = card_html(derived, parent_name=XSS)
    assert "&lt;img src=x" in html and f'<span class="cur-secondary">{"d" * 24}</span>' in html
    assert "(deleted)" in card_html(derived, parent_name=None)


def test_refresh_updates_cards_in_place_and_keeps_an_open_confirmation(tmp_path) -> None:
    catalog = Catalog(tmp_path)
    done = catalog.dataset(catalog.register("done").id)
    done.update_record(status=Status.COMPLETED)
    running = catalog.dataset(catalog.register("running").id)
    view = DatasetsView(DataStore(tmp_path), on_open=lambda i: None)
    card = view._cards[done.dataset_id]
    panels = list(view.cards.objects)
    assert view._cards[running.dataset_id].delete_button.disabled and not card.delete_button.disabled
    view.ask_delete(card)
    assert card.confirm.visible
    running.update_record(counts=Counts(accepted=100, processed=40, failed=2))
    done.update_record(meta_model="m2")
    view.poll()
    assert view.cards.objects == panels and view._cards[done.dataset_id] is card and card.confirm.visible
    assert "42 / 100 images" in view._cards[running.dataset_id].body.object and "m2" in card.body.object
    # a Processing dataset: Delete asks nothing and says why; the library refuses it too
    view.ask_delete(view._cards[running.dataset_id])
    assert "is Processing" in view._cards[running.dataset_id].note.object
    view.delete(view._cards[running.dataset_id])
    assert running.exists() and "is Processing" in view._cards[running.dataset_id].note.object
    # a new dataset adds one card, a deleted one removes only its own
    extra = catalog.register("extra").id
    view.poll()
    assert len(view.cards.objects) == 3 and view._cards[done.dataset_id] is card
    view.delete(card)
    assert not done.exists() and done.dataset_id not in view._cards and "Deleted" in view.message.object
    assert {c.dataset_id for c in view._cards.values()} == {running.dataset_id, extra}


def test_plotly_bundle_is_panels_local_copy() -> None:
    bundle = plotly_bundle()
    assert bundle.startswith("bundled/") and bundle.endswith(".js") and "plotly" in bundle
