"""Image in and out: any common file to an upright 8-bit RGB array, with clear errors; and into a
model's input (letterbox or stretch) with the placement that maps boxes back."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
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


# -- into a model's input ------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Where an image sits inside a model input: input pixels = image pixels * ratio + offset."""

    ratio_x: float
    ratio_y: float
    offset_x: float
    offset_y: float

    def to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x * self.ratio_x + self.offset_x, y * self.ratio_y + self.offset_y

    def to_original(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x - self.offset_x) / self.ratio_x, (y - self.offset_y) / self.ratio_y

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) x0, y0, x1, y1 in input pixels -> in image pixels."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x0, y0 = self.to_original(boxes[:, 0], boxes[:, 1])
        x1, y1 = self.to_original(boxes[:, 2], boxes[:, 3])
        return np.stack([x0, y0, x1, y1], axis=1)


def placement(width: int, height: int, input_width: int, input_height: int, letterbox: bool = True) -> Placement:
    """Letterbox: scaled to fit by one ratio and centred (the rest is padding); else stretched."""
    if not letterbox:
        return Placement(input_width / width, input_height / height, 0.0, 0.0)
    ratio = min(input_width / width, input_height / height)
    new_width, new_height = max(1, round(width * ratio)), max(1, round(height * ratio))
    return Placement(ratio, ratio, (input_width - new_width) // 2, (input_height - new_height) // 2)


def place(image: np.ndarray, input_width: int, input_height: int, letterbox: bool = True, pad_value: int = 0,
          interpolation: int = cv2.INTER_AREA) -> tuple[np.ndarray, Placement]:
    """A uint8 image (h, w, channels) resized into a (input_height, input_width, channels) canvas, and
    where it sits: the one letterbox of every model here (FOMO, teachers, YOLO)."""
    height, width = image.shape[:2]
    where = placement(width, height, input_width, input_height, letterbox)
    new_width, new_height = max(1, round(width * where.ratio_x)), max(1, round(height * where.ratio_y))
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    channels = image.shape[2] if image.ndim == 3 else 1
    canvas = np.full((input_height, input_width, channels), pad_value, np.uint8)
    top, left = int(where.offset_y), int(where.offset_x)
    canvas[top:top + new_height, left:left + new_width] = resized.reshape(new_height, new_width, channels)
    return canvas, where
