"""Decoding images once, safely: EXIF orientation applied, reduced-size JPEG decodes, bomb guard."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_DEEP_GRAY = {"I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit grayscale (PNG) as Pillow opens it


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB; 16-bit grayscale is scaled to 8 bits first (Pillow's convert clips it, making it nearly white)."""
    if img.mode in _DEEP_GRAY:
        img = Image.fromarray((np.asarray(img).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8))
    return img.convert("RGB")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, oriented, possibly reduced by draft mode
    width: int  # full size as the viewer sees it (after EXIF orientation)
    height: int
    format: str


def decode_image(data: bytes, min_side: int | None = None) -> DecodedImage:
    """Decode bytes into an oriented RGB image.

    With min_side, JPEGs are decoded at a reduced scale (draft mode) that still keeps at least
    min_side pixels on the short side, which is several times faster for large photos.
    """
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "unknown").lower()
            width, height = img.size
            # Pillow only errors at twice its pixel limit; refuse from the limit on, before decoding.
            if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{width}x{height} pixels is over the limit")
            orientation = img.getexif().get(0x0112, 1)
            if orientation in _ROTATED:
                width, height = height, width
            if min_side and fmt == "jpeg":
                scale = max(1, min(img.size) // min_side)
                img.draft("RGB", (img.size[0] // scale, img.size[1] // scale))
            img.load()
            oriented = ImageOps.exif_transpose(img)
            rgb = _to_rgb(oriented)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused: image too large to decode safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from None
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


_DRAFT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg decodes to (Pillow's JpegImageFile.draft)


def draft_scale(width: int, height: int, min_side: int) -> int:
    """The JPEG draft reduction decode_image asks for when it keeps min_side pixels on the short side."""
    scale = max(1, min(width, height) // max(1, min_side))
    ratio = min(width // max(1, width // scale), height // max(1, height // scale))
    return next(s for s in _DRAFT_SCALES if ratio >= s)


def at_min_side(decoded: DecodedImage, min_side: int) -> Image.Image:
    """The decoded image as `decode_image(data, min_side)` would have made it, from a larger decode of the same JPEG.

    A JPEG decoded in draft mode at a small reduction is box-reduced to the larger reduction a decode at min_side
    would have used (libjpeg's DCT scaling is a box average too, so the two agree to rounding); other formats are
    decoded whole either way and come back as they are. Lets one decode serve a thumbnail and a model's input."""
    image = decoded.image
    if decoded.format != "jpeg":
        return image
    done = next(
        (s for s in _DRAFT_SCALES if -(-decoded.width // s) == image.width and -(-decoded.height // s) == image.height),
        1,
    )
    wanted = draft_scale(decoded.width, decoded.height, min_side)
    return image.reduce(wanted // done) if wanted > done else image
