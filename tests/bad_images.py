"""Hostile and unusual inputs, generated in code (no binaries are committed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.images import jpeg_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_bilevel_png(width: int, height: int) -> bytes:
    """A genuine, fully decodable 1-bit PNG of width x height black pixels: tiny on disk, huge in memory.

    Rows are streamed through zlib, so building it never holds the image in memory.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter type 0 + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _pixels(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    return np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(900, size=(320, 240))
    return data[: len(data) // 2]


def cmyk_jpeg() -> bytes:
    return _save(Image.fromarray(_pixels(120, 90, 1)).convert("CMYK"), "JPEG")


def png_16bit() -> bytes:
    gray = (np.linspace(0, 65535, 100 * 80, dtype=np.float64).reshape(80, 100)).astype(np.uint16)
    img = Image.fromarray(gray)
    assert img.mode == "I;16", img.mode
    data = _save(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    return data


def palette_png_with_transparency() -> bytes:
    img = Image.fromarray(_pixels(100, 80, 2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(img, "PNG", transparency=0)


# Stored 200 wide x 100 high, with EXIF orientation 6 (rotate 90 degrees clockwise to display): 100 x 200 shown.
# The left half is red and the right half blue: after rotation the top is red and the bottom is blue.
EXIF_STORED = (200, 100)


def exif_rotated_jpeg() -> bytes:
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 100:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)


def one_pixel_png() -> bytes:
    return _save(Image.new("RGB", (1, 1), (200, 100, 50)), "PNG")


def very_wide_jpeg() -> bytes:
    return _save(Image.fromarray(_pixels(20000, 10, 3)), "JPEG")


def png_named_jpg() -> bytes:
    return jpeg_bytes(901, fmt="PNG")


# name -> (bytes, expectation). Expectation: "ok" (decodes; width, height, format checked where given)
# or ("error", substring of the per-image error).
def bad_inputs() -> dict[str, tuple[bytes, object]]:
    return {
        "bad/truncated.jpg": (truncated_jpeg(), ("error", "cannot decode image")),
        "bad/png_named.jpg": (png_named_jpg(), ("ok", 160, 120, "png")),
        "bad/text_named.png": (b"just some text, definitely not a PNG\n" * 4, ("error", "not a recognised image format")),
        "bad/cmyk.jpg": (cmyk_jpeg(), ("ok", 120, 90, "jpeg")),
        "bad/sixteen_bit.png": (png_16bit(), ("ok", 100, 80, "png")),
        "bad/palette_transparent.png": (palette_png_with_transparency(), ("ok", 100, 80, "png")),
        "bad/exif_rotated.jpg": (exif_rotated_jpeg(), ("ok", 100, 200, "jpeg")),
        "bad/one_pixel.png": (one_pixel_png(), ("ok", 1, 1, "png")),
        "bad/very_wide.jpg": (very_wide_jpeg(), ("ok", 20000, 10, "jpeg")),
        # 4e8 pixels: over twice Pillow's limit (Image.open itself refuses).
        "bad/bomb_20000.png": (huge_bilevel_png(20000, 20000), ("error", "too large to decode safely")),
        # 1e8 pixels: over the limit but under twice it (Pillow only warns there; we must refuse).
        "bad/bomb_10000.png": (huge_bilevel_png(10000, 10000), ("error", "too large to decode safely")),
        # Awkward names, all valid images.
        "names/with space and  two.jpg": (jpeg_bytes(910), ("ok", 160, 120, "jpeg")),
        "straße/日本.jpg": (jpeg_bytes(911), ("ok", 160, 120, "jpeg")),
        "names/hash#tag.jpg": (jpeg_bytes(912), ("ok", 160, 120, "jpeg")),
        "names/question?mark.jpg": (jpeg_bytes(913), ("ok", 160, 120, "jpeg")),
        "names/percent%20literal%2F.jpg": (jpeg_bytes(914), ("ok", 160, 120, "jpeg")),
        "names/mixed #?% ü.PNG": (jpeg_bytes(915, fmt="PNG"), ("ok", 160, 120, "png")),
        "a/b/c/d/e/f/img.jpg": (jpeg_bytes(916), ("ok", 160, 120, "jpeg")),
    }


# Blobs rejected at validation: name -> (bytes, reason).
def rejected_inputs() -> dict[str, tuple[bytes, str]]:
    return {
        "bad/zero.jpg": (b"", "empty (0 bytes)"),
        "other/notes.txt": (b"hello", "unsupported extension '.txt'"),
        "other/meta.json": (b'{"a": 1}', "unsupported extension '.json'"),
        "other/no_extension": (b"data", "unsupported extension '(none)'"),
    }
