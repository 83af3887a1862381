"""CLIP backend: open_clip image embeddings plus zero-shot tags from prompt ensembles.

Optional: needs the `clip` extra (`pip install -e '.[clip]'`, i.e. torch==2.13.0 and open_clip_torch).
It never downloads anything at run time. The architecture is built from open_clip's bundled config
(`open_clip.create_model_and_transforms(model_name, pretrained=None)`) and the weights are read from a
local checkpoint file (a state dict as .pt/.pth/.bin/.safetensors).

Getting the weights (once, on a machine with internet access), for the default ViT-B-32:

    pip install -U huggingface_hub
    hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model.bin --local-dir ./clip
    # (huggingface_hub < 1.0 spells it `huggingface-cli download ...`)
    export CURATION_CLIP_WEIGHTS=$PWD/clip/open_clip_pytorch_model.bin

or, with open_clip installed, let it fetch a pretrained tag and copy the file it cached:

    python -c "import open_clip; open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k')"
    # the file lands in ~/.cache/huggingface/hub/models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K/snapshots/*/

OpenAI's original weights need the matching QuickGELU architecture: CURATION_CLIP_MODEL=ViT-B-32-quickgelu.
Preprocessing is open_clip's default for the architecture (resize shortest side, centre crop, OpenAI mean/std),
which is what the OpenAI and LAION CLIP checkpoints were trained with.

torch and torchvision: where a CPU-only torch (2.13.0+cpu) sits beside the PyPI torchvision wheel, which is built
against CUDA torch, torchvision's compiled ops fail to load and `import torchvision` dies on
"operator torchvision::nms does not exist" (pytorch/vision#9085). `import_open_clip` then declares the two op
schemas that import needs and imports again; CLIP only uses torchvision's PIL transforms.

Tagging: for every category of the taxonomy, each class has an ensemble of prompts ("a dashcam photo taken at
night", "a photo of a road at night", ...). Their L2-normalised text embeddings are averaged and re-normalised
into one class embedding (computed once per model and cached). An image's probabilities are the softmax over the
category's classes of CLIP's logit scale times the cosine similarities; the confidence is the top probability
and the label goes through `taxonomy.decide`. The L2-normalised float32 image embedding is the dataset embedding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation.inference.models.base import Prediction
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

DEFAULT_MODEL = "ViT-B-32"
_TEXT_BATCH = 64
WEIGHTS_ENV = "CURATION_CLIP_WEIGHTS"
MODEL_ENV = "CURATION_CLIP_MODEL"

HOW_TO_GET_WEIGHTS = (
    "The CLIP backend never downloads weights. Fetch a checkpoint once on a machine with internet access, e.g. "
    "`hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model.bin --local-dir ./clip` "
    "(`huggingface-cli download` with huggingface_hub < 1.0), or let open_clip cache a pretrained tag "
    "(`open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k')`), "
    f"then set {WEIGHTS_ENV}=/path/to/open_clip_pytorch_model.bin (and {MODEL_ENV} if it is not ViT-B-32)."
)

# Full prompts per category and class. Every prompt of a class is embedded; their mean is the class embedding.
PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "time": {
        "day": (
            "a dashcam photo taken during the day",
            "a photo of a road in daylight",
            "a driving scene in bright daylight",
            "a photo of a street in the daytime",
            "a daytime photo taken outdoors",
        ),
        "night": (
            "a dashcam photo taken at night",
            "a photo of a road at night",
            "a driving scene at night with headlights and street lights",
            "a photo of a dark street at nighttime",
            "a nighttime photo taken in the dark",
        ),
        "dawn_dusk": (
            "a dashcam photo taken at dusk",
            "a photo of a road at dawn",
            "a driving scene at sunset",
            "a photo of a street at twilight",
            "a photo taken at sunrise with a glowing sky",
        ),
    },
    "weather": {
        "clear": (
            "a dashcam photo on a clear sunny day",
            "a photo of a road under a clear blue sky",
            "a driving scene in clear weather",
            "a photo taken in fine, dry weather",
        ),
        "cloudy": (
            "a dashcam photo on an overcast day",
            "a photo of a road under a cloudy grey sky",
            "a driving scene in cloudy weather",
            "a photo taken under heavy clouds",
        ),
        "rainy": (
            "a dashcam photo taken in the rain",
            "a photo of a wet road in rainy weather",
            "a driving scene with raindrops on the windshield",
            "a photo taken during a rain shower",
        ),
        "foggy": (
            "a dashcam photo taken in thick fog",
            "a photo of a foggy road with low visibility",
            "a driving scene in misty, hazy weather",
            "a photo taken in dense fog",
        ),
        "snowy": (
            "a dashcam photo taken in the snow",
            "a photo of a snow-covered road",
            "a driving scene in snowy winter weather",
            "a photo taken during a snowfall",
        ),
    },
    "road": {
        "city": (
            "a dashcam photo of a city street",
            "a photo of an urban street with buildings and pedestrians",
            "a driving scene in downtown traffic",
            "a photo of a narrow street in a town",
        ),
        "highway": (
            "a dashcam photo of a highway",
            "a photo of a multi-lane freeway",
            "a driving scene on a motorway",
            "a photo of an interstate highway with lane markings",
        ),
    },
    "location": {
        "inside": (
            "a dashcam photo taken inside a tunnel",
            "a photo of an indoor parking garage",
            "a driving scene inside a road tunnel with ceiling lights",
            "a photo taken indoors under a ceiling",
        ),
        "outside": (
            "a dashcam photo taken outdoors",
            "a photo of an open road under the sky",
            "a driving scene outside in the open air",
            "a photo taken outdoors with the sky visible",
        ),
    },
}

# Used for a class word that has no hand-written prompts (a custom taxonomy).
GENERIC_TEMPLATES: tuple[str, ...] = (
    "a dashcam photo of {}",
    "a photo of {}",
    "a driving scene, {}",
    "a photo of a road, {}",
)


def prompts_for(
    category: str, label: str, prompts: Mapping[str, Mapping[str, Sequence[str]]] | None = None
) -> list[str]:
    """The prompt ensemble of one class: the hand-written prompts, else generic templates around the word."""
    table = PROMPTS if prompts is None else prompts
    chosen = list(table.get(category, {}).get(label, ()))
    if chosen:
        return chosen
    word = label.replace("_", " ")
    return [t.format(word) for t in GENERIC_TEMPLATES]


_TORCHVISION_SHIM: Any = None  # keeps the schema-only "torchvision" library fragment alive


def _define_missing_torchvision_ops() -> None:
    """Let torchvision import when its compiled ops did not load (a CUDA torchvision wheel beside a +cpu torch).

    torchvision then skips every registration of its compiled ops except two unguarded fake (meta) kernels, for
    `nms` and `qnms`, whose registration raises "operator torchvision::nms does not exist"
    (pytorch/vision#9085). Declaring just those two schemas lets the import finish. CLIP needs only torchvision's
    PIL transforms; calling nms would still fail, with torch's "no kernel" error.
    """
    global _TORCHVISION_SHIM
    import torch

    if _TORCHVISION_SHIM is not None:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        if not hasattr(torch.ops.torchvision, op):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM = lib


def import_open_clip() -> Any:
    import sys

    try:
        try:
            import open_clip
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise
            for mod in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip")]:
                del sys.modules[mod]  # drop the half-imported packages, then import again
            _define_missing_torchvision_ops()
            import open_clip
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the CLIP backend needs the optional 'clip' extra: pip install -e '.[clip]' "
            "(torch==2.13.0 and open_clip_torch)"
        ) from exc
    return open_clip


def _check_weights(weights_path: Path | str | None) -> Path:
    if weights_path is None or str(weights_path) == "":
        raise FileNotFoundError(f"no CLIP weights configured ({WEIGHTS_ENV} is unset). {HOW_TO_GET_WEIGHTS}")
    path = Path(weights_path).expanduser()
    if path.is_dir():
        raise FileNotFoundError(f"CLIP weights path {path} is a folder; point it at the checkpoint file inside "
                                f"(e.g. {path / 'open_clip_pytorch_model.bin'}). {HOW_TO_GET_WEIGHTS}")
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {path}. {HOW_TO_GET_WEIGHTS}")
    return path


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip logs 'Model initialized randomly' when built with pretrained=None; we load the weights next."""
    filt, root = _DropRandomInit(), logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


class ClipModel:
    """Zero-shot tagger and embedder on an open_clip model (CPU by default, deterministic in eval mode)."""

    def __init__(
        self,
        weights_path: Path | str,
        model_name: str = DEFAULT_MODEL,
        taxonomy: Taxonomy = DEFAULT_TAXONOMY,
        batch_size: int = 32,
        device: str = "cpu",
        prompts: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    ) -> None:
        path = _check_weights(weights_path)  # before importing torch or building anything
        open_clip = import_open_clip()
        with _quiet_random_init_warning():  # the weights are loaded right below
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None, device=device, pretrained_image=False, pretrained_text=False
            )
        try:
            open_clip.load_checkpoint(model, str(path), device="cpu")
        except Exception as exc:
            raise ValueError(
                f"could not load CLIP weights {path} into architecture {model_name!r}: {type(exc).__name__}: {exc}. "
                f"Check that {MODEL_ENV} matches the checkpoint (e.g. ViT-B-32-quickgelu for OpenAI weights)."
            ) from exc
        tokenizer = open_clip.get_tokenizer(model_name)
        self._setup(model, preprocess, tokenizer, model_name, taxonomy, batch_size, device, prompts)
        self.weights_path: Path | None = path

    @classmethod
    def from_model(
        cls,
        model: Any,
        preprocess: Callable[[Image.Image], Any],
        tokenizer: Callable[[list[str]], Any],
        name: str = "custom",
        taxonomy: Taxonomy = DEFAULT_TAXONOMY,
        batch_size: int = 32,
        device: str = "cpu",
        prompts: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    ) -> ClipModel:
        """Wrap an already-built open_clip model (tests, or a caller that loaded weights itself)."""
        self = cls.__new__(cls)
        self._setup(model, preprocess, tokenizer, name, taxonomy, batch_size, device, prompts)
        self.weights_path = None
        return self

    def _setup(self, model: Any, preprocess: Callable, tokenizer: Callable, model_name: str, taxonomy: Taxonomy,
               batch_size: int, device: str, prompts: Mapping[str, Mapping[str, Sequence[str]]] | None) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.taxonomy = taxonomy
        self.batch_size = batch_size
        self.prompts = prompts
        self.name = f"clip-{model_name}-zeroshot"
        self.embedding_name = f"clip-{model_name}"
        self.embedding_dim = self._embed_dim()
        self._text_lock = threading.Lock()
        self._class_embeddings: dict[str, np.ndarray] | None = None
        with torch.inference_mode():
            self._logit_scale = float(model.logit_scale.detach().float().exp().clamp(max=100.0).cpu())

    def _embed_dim(self) -> int:
        dim = getattr(self.model, "embed_dim", None)
        if isinstance(dim, int):
            return dim
        visual = getattr(self.model, "visual", None)
        dim = getattr(visual, "output_dim", None)
        if isinstance(dim, int):
            return dim
        with self._torch.inference_mode():  # last resort: encode one dummy prompt
            tokens = self.tokenizer(["a photo"]).to(self.device)
            return int(self.model.encode_text(tokens).shape[-1])

    # -- text side ---------------------------------------------------------------------------------------------
    def class_embeddings(self) -> dict[str, np.ndarray]:
        """Per category, a (n_classes, dim) matrix of normalised prompt-ensemble embeddings; computed once."""
        if self._class_embeddings is None:
            with self._text_lock:
                if self._class_embeddings is None:
                    self._class_embeddings = self._compute_class_embeddings()
        return self._class_embeddings

    def _compute_class_embeddings(self) -> dict[str, np.ndarray]:
        torch = self._torch
        keys: list[tuple[str, str]] = []
        texts: list[str] = []
        for category in self.taxonomy.categories:
            for label in self.taxonomy.classes[category]:
                for prompt in prompts_for(category, label, self.prompts):
                    keys.append((category, label))
                    texts.append(prompt)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), _TEXT_BATCH):  # every prompt of every class, in a few batches
                tokens = self.tokenizer(texts[start : start + _TEXT_BATCH]).to(self.device)
                emb = self.model.encode_text(tokens).float()
                chunks.append((emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy())
        per_prompt = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, self.embedding_dim))
        out: dict[str, np.ndarray] = {}
        for category in self.taxonomy.categories:
            rows = []
            for label in self.taxonomy.classes[category]:
                mean = per_prompt[[i for i, key in enumerate(keys) if key == (category, label)]].mean(axis=0)
                rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            out[category] = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.embedding_dim)
        return out

    # -- image side --------------------------------------------------------------------------------------------
    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """L2-normalised float32 image embeddings, shape (n, embedding_dim), in batches of batch_size."""
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [self.preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]]
                x = torch.stack(batch).to(self.device)
                emb = self.model.encode_image(x).float()
                emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                chunks.append(emb.cpu().numpy())
        if not chunks:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks).astype(np.float32))

    def probabilities(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Per category, an (n, n_classes) matrix of class probabilities (rows sum to 1), classes in taxonomy order."""
        out = {}
        for category, text in self.class_embeddings().items():
            logits = self._logit_scale * (embeddings.astype(np.float64) @ text.astype(np.float64).T)
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            out[category] = p / p.sum(axis=1, keepdims=True)
        return out

    def predict_proba(self, images: list[Image.Image]) -> list[dict[str, dict[str, float]]]:
        """Per image and category, the probability of every class."""
        probs = self.probabilities(self.embed(images))
        return [
            {c: dict(zip(self.taxonomy.classes[c], map(float, probs[c][i]), strict=True)) for c in probs}
            for i in range(len(images))
        ]

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        """Tag and embed a batch of images (any size, any mode)."""
        emb = self.embed(images)
        probs = self.probabilities(emb)
        preds = []
        for i in range(len(images)):
            tags: dict[str, tuple[str | None, float]] = {}
            for category in self.taxonomy.categories:
                classes = self.taxonomy.classes[category]
                row = probs[category][i]
                if not classes:
                    tags[category] = (None, 0.0)
                    continue
                best = int(np.argmax(row))
                conf = float(min(1.0, max(0.0, row[best])))
                tags[category] = (self.taxonomy.decide(category, classes[best], conf), conf)
            preds.append(Prediction(tags=tags, embedding=emb[i].copy()))
        return preds


def load_clip_from_settings(settings: Any = None, **kwargs: Any) -> ClipModel:
    """The CLIP backend configured by `settings.clip_weights` and `settings.clip_model` (CURATION_CLIP_*).

    Reads them with getattr so it also works with a Settings that does not declare them yet; raises
    FileNotFoundError with instructions when the weights are unset or missing.
    """
    if settings is None:
        from curation.settings import get_settings

        settings = get_settings()
    weights = getattr(settings, "clip_weights", None)
    model_name = getattr(settings, "clip_model", None) or DEFAULT_MODEL
    return ClipModel(_check_weights(weights), model_name=model_name, **kwargs)
