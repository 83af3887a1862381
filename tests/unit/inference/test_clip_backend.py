"""The CLIP backend on a tiny randomly initialised open_clip model (no downloaded weights).

Skipped when the optional `clip` extra (torch + open_clip_torch) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from curation.inference.models import clip as clip_backend

try:  # imports open_clip through the backend, which works around a CPU torch + CUDA torchvision wheel pair
    clip_backend.import_open_clip()
except ImportError:
    pass
open_clip = pytest.importorskip("open_clip")  # the optional 'clip' extra
torch = pytest.importorskip("torch")

from curation.inference.models.base import Prediction  # noqa: E402
from curation.inference.models.clip import ClipModel, load_clip_from_settings  # noqa: E402
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy  # noqa: E402

TINY_NAME = "curation-tiny-test-clip"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Register the tiny architecture with open_clip and save a random state dict for it."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY_NAME}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    path = folder / "tiny_open_clip.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path) -> ClipModel:
    return ClipModel(tiny_weights, model_name=TINY_NAME, batch_size=3)


def _images(n: int = 7) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    sizes = [(37, 23), (5, 91), (640, 360), (1, 1), (33, 33), (200, 17), (64, 480)]
    images = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB"))
    if n > 3:
        images[3] = images[3].convert("L")  # a greyscale image too
    return images


def test_names_and_dim(tiny: ClipModel) -> None:
    assert tiny.name == f"clip-{TINY_NAME}-zeroshot"
    assert tiny.embedding_name == f"clip-{TINY_NAME}"
    assert tiny.embedding_dim == 16
    assert tiny.weights_path is not None and tiny.weights_path.name == "tiny_open_clip.pt"


def test_weights_are_loaded_from_the_file(tiny_weights: Path, tiny: ClipModel) -> None:
    saved = torch.load(tiny_weights, weights_only=True)
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_odd_sizes_embedding_shape_dtype_norm(tiny: ClipModel) -> None:
    preds = tiny.predict(_images())
    assert len(preds) == 7
    for p in preds:
        assert isinstance(p, Prediction)
        assert p.embedding.shape == (16,) and p.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(p.embedding)) - 1.0) < 1e-5
        assert set(p.tags) == set(DEFAULT_TAXONOMY.categories)
        for category, (label, conf) in p.tags.items():
            assert 0.0 <= conf <= 1.0
            assert label is None or label in DEFAULT_TAXONOMY.classes[category]
    assert tiny.predict([]) == []


def test_batching_matches_one_big_batch(tiny_weights: Path, tiny: ClipModel) -> None:
    images = _images()
    small = tiny.predict(images)  # batch_size=3: batches of 3, 3, 1
    big = ClipModel.from_model(tiny.model, tiny.preprocess, tiny.tokenizer, name=TINY_NAME, batch_size=7)
    full = big.predict(images)
    assert len(small) == len(full) == 7
    for a, b in zip(small, full, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        for category in DEFAULT_TAXONOMY.categories:
            assert a.tags[category][0] == b.tags[category][0]
            assert abs(a.tags[category][1] - b.tags[category][1]) < 1e-5
    # Deterministic: the same call twice gives the same answer.
    again = tiny.predict(images)
    for a, b in zip(small, again, strict=True):
        np.testing.assert_array_equal(a.embedding, b.embedding)


def test_prompt_scores_are_distributions(tiny: ClipModel) -> None:
    probs = tiny.predict_proba(_images(4))
    assert len(probs) == 4
    for per_image in probs:
        for category, dist in per_image.items():
            assert list(dist) == list(DEFAULT_TAXONOMY.classes[category])
            assert abs(sum(dist.values()) - 1.0) < 1e-6
            assert all(0.0 <= v <= 1.0 for v in dist.values())
    text = tiny.class_embeddings()
    assert text is tiny.class_embeddings()  # computed once and cached
    for category, matrix in text.items():
        assert matrix.shape == (len(DEFAULT_TAXONOMY.classes[category]), 16)
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_confidence_is_max_prob_and_threshold_gives_none(tiny: ClipModel) -> None:
    images = _images(3)
    probs = tiny.predict_proba(images)
    strict = Taxonomy(thresholds={c: 1.01 for c in DEFAULT_TAXONOMY.categories})  # nothing passes
    lenient = Taxonomy(thresholds={c: 0.0 for c in DEFAULT_TAXONOMY.categories})  # everything passes
    none_model = ClipModel.from_model(tiny.model, tiny.preprocess, tiny.tokenizer, name=TINY_NAME, taxonomy=strict)
    all_model = ClipModel.from_model(tiny.model, tiny.preprocess, tiny.tokenizer, name=TINY_NAME, taxonomy=lenient)
    for p, q, dist in zip(none_model.predict(images), all_model.predict(images), probs, strict=True):
        for category in DEFAULT_TAXONOMY.categories:
            best = max(dist[category], key=dist[category].get)
            assert p.tags[category] == (None, pytest.approx(dist[category][best], abs=1e-6))
            assert q.tags[category][0] == best


def test_custom_taxonomy_class_gets_generic_prompts(tiny: ClipModel) -> None:
    taxonomy = Taxonomy(classes={"surface": ("gravel_road", "asphalt")}, thresholds={"surface": 0.0})
    model = ClipModel.from_model(tiny.model, tiny.preprocess, tiny.tokenizer, name=TINY_NAME, taxonomy=taxonomy)
    assert "a photo of gravel road" in clip_backend.prompts_for("surface", "gravel_road")
    (pred,) = model.predict(_images(1))
    assert set(pred.tags) == {"surface"} and pred.tags["surface"][0] in {"gravel_road", "asphalt"}


def test_missing_weights_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    with pytest.raises(FileNotFoundError) as info:
        ClipModel(missing)
    message = str(info.value)
    assert str(missing) in message and "CURATION_CLIP_WEIGHTS" in message
    assert "hf download laion/CLIP-ViT-B-32" in message


def test_load_from_settings(tiny_weights: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CURATION_CLIP_WEIGHTS"):
        load_clip_from_settings(SimpleNamespace())  # a Settings without the clip fields yet
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip_from_settings(SimpleNamespace(clip_weights=tiny_weights.parent / "missing.pt", clip_model=TINY_NAME))
    model = load_clip_from_settings(SimpleNamespace(clip_weights=tiny_weights, clip_model=TINY_NAME), batch_size=2)
    assert model.name == f"clip-{TINY_NAME}-zeroshot" and model.batch_size == 2


def test_wrong_architecture_is_a_clear_error(tiny_weights: Path) -> None:
    other = dict(TINY_CFG, embed_dim=8)
    path = tiny_weights.parent / "curation-tiny-test-clip-8.json"
    path.write_text(json.dumps(other))
    open_clip.add_model_config(path)
    with pytest.raises(ValueError, match="could not load CLIP weights"):
        ClipModel(tiny_weights, model_name="curation-tiny-test-clip-8")
