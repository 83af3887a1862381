"""Per-image CPU cost of each step the pipeline does per image, against the decode floor's cost per image.

Usage:
    python bench/bench_step_costs.py             # 60 synthetic 1920x1080 JPEGs, best of 2 passes
    python bench/bench_step_costs.py --n 200 --repeat 5

Thread CPU time (time.thread_time, one thread, so other work on a shared machine does not count), ms per image,
the best of --repeat passes, of the floor (support.thumbnail_floor: draft decode, 256-px thumbnail, encode), of
Pillow's textbook Image.thumbnail for context, and of each step of the service's one decode per image (read and
hash, draft decode, thumbnail, quality signals, thumbnail encode, reduction to the model's side, the default model
in batches of 16 as the service runs it) and of the client's thumbnail write. The last row runs the service's own
composition of those steps (curation.inference.service.jobs.predict_batch, in this thread). Prints a table and
writes bench/results/step-costs-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import support

BATCH = 16  # the service's batch


def pillow_default(path: str) -> int:
    """The textbook Pillow thumbnail: Image.thumbnail's own draft (a 1/2-scale decode of a 1080p JPEG), encode."""
    from PIL import Image

    with Image.open(path) as img:
        img.thumbnail((support.THUMB, support.THUMB))
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=85)
    return out.tell()


def one_pass(paths: list[Path], backend, scratch: Path) -> dict[str, float]:
    """Thread CPU seconds per step over all the images."""
    from curation.analysis.quality import image_signals, working_copy
    from curation.inference.imaging import at_min_side, decode_image
    from curation.inference.service.jobs import MODEL_SIDE, predict_batch
    from curation.inference.thumbnails import write_thumbnail

    side = getattr(backend, "input_side", MODEL_SIDE)  # the service decodes no larger than the model needs
    costs: dict[str, float] = {}

    def timed(step: str, fn, *args):
        t = time.thread_time()
        out = fn(*args)
        costs[step] = costs.get(step, 0.0) + time.thread_time() - t
        return out

    def read_and_hash(path: Path) -> bytes:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        return data

    def encode(thumb) -> bytes:
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=85)
        return out.getvalue()

    inputs = []
    for path in paths:
        timed("floor: read, draft decode, thumbnail, encode", support.thumbnail_floor, str(path))
        timed("(context) Pillow's default Image.thumbnail", pillow_default, str(path))
        data = timed("service: read + sha256", read_and_hash, path)
        dec = timed("service: draft decode (once)", decode_image, data, support.THUMB)
        thumb = timed("service: thumbnail resize", working_copy, dec.image)
        timed("service: quality signals (blur on the decode)", image_signals, thumb, dec.width, dec.height, dec.image)
        jpeg = timed("service: thumbnail JPEG encode", encode, thumb)
        inputs.append(timed("service: reduce to the model's side", at_min_side, dec, side))
        timed("store: write the thumbnail file", write_thumbnail, scratch / "t.jpg", jpeg)
    for start in range(0, len(inputs), BATCH):
        timed(f"service: model predict (batches of {BATCH})", backend.predict, inputs[start : start + BATCH])
    datas = [p.read_bytes() for p in paths]
    for start in range(0, len(datas), BATCH):
        work = [(backend, d, side, support.THUMB) for d in datas[start : start + BATCH]]
        timed("together: predict_batch (the service: steps in one call)", predict_batch, work)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="images (default 60)")
    ap.add_argument("--repeat", type=int, default=2, help="passes; the best of each step is kept (default 2)")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    args = ap.parse_args()
    from curation.inference.models.backends import load_backend
    from curation.settings import Settings

    settings = Settings()
    backend = load_backend(settings.model, settings)
    paths = support.image_cache(args.n, args.cache)
    support.read_into_page_cache(paths)
    scratch = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    try:
        passes = [one_pass(paths, backend, scratch) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ms = {step: 1000 * min(p[step] for p in passes) / args.n for step in passes[0]}
    floor = ms["floor: read, draft decode, thumbnail, encode"]
    steps = sum(v for k, v in ms.items() if k.startswith(("service:", "store:")))
    rows = [[k, f"{v:.2f}", f"{v / floor:.2f}"] for k, v in ms.items()]
    rows.append(["sum of the service: and store: steps", f"{steps:.2f}", f"{steps / floor:.2f}"])
    support.print_table(f"per-image CPU cost on one thread, N={args.n} synthetic 1920x1080 JPEGs, model "
                        f"{getattr(backend, 'name', settings.model)}, best of {args.repeat}",
                        ["step", "ms/img", "x floor"], rows)
    support.write_result("step-costs", {"n": args.n, "repeat": args.repeat, "model": getattr(backend, "name", None),
                                        **support.machine(), "ms_per_image": ms, "steps_sum_ms": steps})


if __name__ == "__main__":
    main()
