"""EfficientNet-Lite0 on one core: runtime and input size, by speed and by what the features are worth.

Usage:
    python bench/bench_backbone.py                       # labelled real photos from ../shared/datasets, if present
    python bench/bench_backbone.py --labelled DIR ...    # folders with images/ and labels.csv
    python bench/bench_backbone.py --sizes 224x224 160x160 --repeat 5

For each candidate (ONNX Runtime fp32 and int8 at several input sizes, torch fp32 channels-last when torch is
installed) it prints:
  ms/img     best of --repeat passes over a batch of 16, per image, in thread CPU time on one thread (so other
             work on a busy machine does not count)
  cos        mean cosine between its pooled features and ONNX Runtime fp32's at the same size
  <category> 5-fold cross-validated accuracy of a logistic-regression probe on its L2-normalised features, per
             category with at least two classes of 8+ labelled photos (the measure the tag heads are trained on)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.inference.models import efficientnet_lite as net
from curation.inference.models.labelled import load_labelled, shared_sets


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _torch_runner(model):
    """The same ONNX graph run op by op in torch eager mode (channels-last, inference_mode, one thread), or None."""
    try:
        import torch
        import torch.nn.functional as F
        from onnx import numpy_helper
    except ImportError:
        return None
    torch.set_num_threads(1)
    consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    for name, value in consts.items():
        if value.dim() == 4 and name.endswith(".w"):
            consts[name] = value.contiguous(memory_format=torch.channels_last)

    def same_pad(x, k: int, s: int):
        h, w = x.shape[-2:]
        ph, pw = max((-(-h // s) - 1) * s + k - h, 0), max((-(-w // s) - 1) * s + k - w, 0)
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            v = dict(consts, image=torch.from_numpy(images))
            for node in model.graph.node:
                i, attrs = [v[n] for n in node.input], {a.name: a for a in node.attribute}
                op = node.op_type
                if op == "Transpose":
                    out = i[0].permute(0, 3, 1, 2)
                elif op == "Cast":
                    out = i[0].float().contiguous(memory_format=torch.channels_last)
                elif op in ("Sub", "Add", "Mul"):
                    out = i[0] - i[1] if op == "Sub" else i[0] + i[1] if op == "Add" else i[0] * i[1]
                elif op == "Conv":
                    k, s = i[1].shape[-1], attrs["strides"].ints[0]
                    out = F.conv2d(same_pad(i[0], k, s), i[1], i[2], stride=s, groups=attrs["group"].i)
                elif op == "Clip":
                    out = i[0].clamp(0.0, 6.0)
                elif op == "GlobalAveragePool":
                    out = i[0].mean(dim=(2, 3))
                else:  # Flatten, Gemm: only the pooled features are wanted
                    break
                v[node.output[0]] = out
            return v["pooled"].numpy()

    return run


def _int8(model, calibration: list[np.ndarray]) -> bytes:
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter({"image": im[None]} for im in calibration)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, fp32)
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


def _features(run, images: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])


def _ms_per_image(run, images: np.ndarray, repeat: int) -> float:
    batch = images[:16]
    run(batch)
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        run(batch)
        best = min(best, time.thread_time() - start)
    return 1000 * best / len(batch)


def _probe(feats: np.ndarray, labels: list[str]) -> float | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    y = np.array(labels)
    keep = np.array([bool(v) for v in labels])
    classes, counts = np.unique(y[keep], return_counts=True)
    good = set(classes[counts >= 8])
    keep &= np.isin(y, list(good))
    if len(good) < 2:
        return None
    x = feats[keep] / np.linalg.norm(feats[keep], axis=1, keepdims=True)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(LogisticRegression(C=10.0, max_iter=3000), x, y[keep], cv=folds).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelled", nargs="*", type=Path, default=None)
    ap.add_argument("--sizes", nargs="*", default=["224x224", "192x192", "160x160", "224x160", "128x128"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-int8", action="store_true")
    args = ap.parse_args()
    sets = args.labelled if args.labelled is not None else shared_sets()
    photos = load_labelled(sets)
    if not photos:
        print("no labelled photos found: pass --labelled DIR (images/ + labels.csv)")
        return
    categories = ("time", "weather", "road", "location")
    print(f"{len(photos)} labelled photos from {len(sets)} folders")
    state = net.read_checkpoint(net.default_weights_path())
    fp32 = net.build_graph(state)
    header = f"{'runtime':<12} {'size':>8} {'ms/img':>7} {'cos':>6} " + " ".join(f"{c:>8}" for c in categories)
    print(header + "\n" + "-" * len(header))
    torch_run = _torch_runner(fp32)
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        images = np.stack([np.asarray(p.image.resize((w, h), resample=2)) for p in photos])
        session = _ort_session(fp32.SerializeToString())
        candidates = [("onnx fp32", lambda x, s=session: s.run(["features"], {"image": x})[0])]
        if not args.no_int8:
            int8 = _ort_session(_int8(fp32, list(images[::8])))
            candidates.append(("onnx int8", lambda x, s=int8: s.run(["features"], {"image": x})[0]))
        if torch_run is not None:
            candidates.append(("torch fp32", torch_run))
        reference = None
        for name, run in candidates:
            feats = _features(run, images)
            if reference is None:
                reference = feats
            cos = float(np.mean(np.sum(feats * reference, 1) / np.linalg.norm(feats, axis=1)
                                / np.linalg.norm(reference, axis=1)))
            accs = [_probe(feats, [getattr(p, c) for p in photos]) for c in categories]
            cells = " ".join(f"{a:8.3f}" if a is not None else f"{'-':>8}" for a in accs)
            print(f"{name:<12} {size:>8} {_ms_per_image(run, images, args.repeat):7.2f} {cos:6.3f} {cells}", flush=True)


if __name__ == "__main__":
    main()
