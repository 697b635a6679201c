"""Image in and out: any common file to an upright 8-bit RGB array, with clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgedistill.errors import EdgedistillError

MAX_PIXELS = 100_000_000  # larger images are refused, not decoded into many GB of memory
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes of any format Pillow reads -> (height, width, 3) uint8 RGB, EXIF rotation applied.

    CMYK, palette, grayscale, 16-bit and alpha images are converted; an alpha channel is dropped
    (use `decode_rgba` to keep it).
    """
    return np.asarray(_open(data, name).convert("RGB"))


def decode_rgba(data: bytes, name: str = "image") -> np.ndarray:
    """Like `decode_image` but (height, width, 4), keeping transparency (cut-outs for compositing)."""
    return np.asarray(_open(data, name).convert("RGBA"))


def _open(data: bytes, name: str) -> Image.Image:
    if not data:
        raise EdgedistillError(f"{name} is empty (0 bytes)", "pass a JPEG, PNG or other image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise EdgedistillError(f"{name} is {image.width}x{image.height}: too large to load",
                                       f"downscale it below {MAX_PIXELS // 1_000_000} megapixels")
            image.load()
    except EdgedistillError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise EdgedistillError(f"{name} is not an image that can be read ({error.__class__.__name__})",
                               "check that it is a JPEG, PNG, BMP, WEBP or TIFF file") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise EdgedistillError(f"{name} is damaged or truncated ({error})",
                               "copy the file again, or remove it from the folder") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits by its own range rather than clipping at 255
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray((array / peak * 255).astype(np.uint8), "L")
    return image


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise EdgedistillError(f"image {path} does not exist", "check the path")
    return decode_image(path.read_bytes(), name=str(path))


def image_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an RGB(A) uint8 array; PNG keeps composites exact, JPEG is smaller for photos."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 92} if fmt.upper() == "JPEG" else {}))
    return buffer.getvalue()
