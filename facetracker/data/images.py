"""Reading images: size checked before decoding, EXIF orientation applied, RGB out; the one way an
image becomes a model's input."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

from facetracker.data.files import ImageError, LabelError, OutsideRoot, open_regular
from facetracker.data.labels import parse_label_json, shown
from facetracker.data.samples import Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Larger images are refused before decoding: a 20000 x 20000 photo would take 1.2 GB as RGB.
MAX_IMAGE_PIXELS = 40_000_000




def _too_large(what: str) -> ImageError:
    return ImageError(f"the image is {what}, larger than the {MAX_IMAGE_PIXELS // 1_000_000} "
                      "megapixels this app reads; scale it down first")


@contextlib.contextmanager
def _opened_image(source: str | Path | bytes, root: str | Path | None = None) -> Iterator[Image.Image]:
    """The image with only its header read, its size checked; the file is closed on leaving."""
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(source, bytes):
                if not source:
                    raise ImageError("the embedded image data is empty")
                handle: BinaryIO = io.BytesIO(source)
            else:
                handle = stack.enter_context(open_regular(source, root))
                if os.fstat(handle.fileno()).st_size == 0:
                    raise ImageError("the file is empty (0 bytes)")
            with warnings.catch_warnings():
                # PIL warns from 89 megapixels and refuses from 179; our own limit is lower and is
                # checked just below from the same header, so its warning adds nothing.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = stack.enter_context(Image.open(handle))
        except (ImageError, OutsideRoot):
            raise
        except Image.DecompressionBombError as error:
            claimed = re.search(r"\((\d+) pixels\)", str(error))
            raise _too_large(f"{int(claimed.group(1)) / 1e6:,.0f} megapixels" if claimed else "huge") from None
        except FileNotFoundError:
            raise ImageError("the file does not exist") from None
        except OSError as error:
            if isinstance(error, Image.UnidentifiedImageError):
                raise ImageError("not an image (its content is no image format we read)") from None
            if error.errno is None:  # PIL's own decoding errors, e.g. a file cut short in its header
                raise ImageError(f"the image data is broken ({error})") from None
            raise ImageError(f"cannot read it ({error.strerror or error})") from None
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(f"{width}x{height} px")
        if width < 8 or height < 8:
            raise ImageError(f"the image is only {width}x{height} px")
        yield image


_ROTATED_ORIENTATIONS = {5, 6, 7, 8}


def image_size(source: str | Path | bytes, *, root: str | Path | None = None) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF rotation, read from the header only.

    With a `root`, a file whose real path lies outside it is refused (`OutsideRoot`)."""
    with _opened_image(source, root) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block is not worth refusing the image for
            orientation = 1
    return (height, width) if orientation in _ROTATED_ORIENTATIONS else (width, height)


def read_image(source: str | Path | bytes, max_side: int | None = None, *,
               root: str | Path | None = None) -> np.ndarray:
    """Decode an image file (or bytes) to an RGB uint8 array, upright as labelme shows it.

    Handles grayscale, RGBA, palette, CMYK and 16-bit images. With `max_side`, JPEGs are decoded
    at a reduced scale (much faster for big photos) and the result is at most that size. With a
    `root`, a file whose real path lies outside it is refused (`OutsideRoot`).
    """
    with _opened_image(source, root) as image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if max_side and image.format == "JPEG":
                    image.draft("RGB", (max_side, max_side))
                image.load()
                image = ImageOps.exif_transpose(image) or image
            except Image.DecompressionBombError as error:
                raise _too_large(f"over PIL's limit ({error})") from None
            except (OSError, SyntaxError, ValueError) as error:
                raise ImageError(f"the image data is broken ({error})") from None
        return _to_rgb(image, max_side)


def _to_rgb(image: Image.Image, max_side: int | None) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if array.max() > 255 else 255.0
        array = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        rgb = np.stack([array] * 3, axis=-1)
    else:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
            image = background
        rgb = np.asarray(image.convert("RGB"))
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def sample_pixels(sample: Sample, max_side: int | None = None) -> np.ndarray:
    """The RGB pixels of a sample, from its image file or its label's embedded imageData.

    A sample read under a data root is read again under it: a link changed since is refused."""
    if sample.embedded:
        return read_image(embedded_bytes(Path(sample.image), sample.root), max_side)
    return read_image(sample.image, max_side, root=sample.root)


def model_input(image: np.ndarray, size: int, *, bgr: bool = False) -> np.ndarray:
    """The one way an image becomes the model's input: the whole image stretched to size x size RGB.

    Training, evaluation, prediction and the live Detector all call this, so a box normalised to
    the image stays valid and what the model sees never depends on the caller.
    """
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if not bgr else cv2.COLOR_GRAY2BGR)
    if min(image.shape[:2]) > 2 * size:
        # INTER_AREA over a whole camera frame was a large share of the live frame path. Bilinear
        # to twice the size, then an exact 2x2 average, costs a fraction of it and stays close to
        # it (bilinear straight to the size skips most pixels and aliases); see
        # docs/notes/2026-11-28-what-makes-it-fast.md.
        image = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if bgr:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return resized


def embedded_bytes(label_path: Path, root: str | Path | None = None) -> bytes:
    try:
        data = parse_label_json(label_path, root)
        if not isinstance(data, dict):
            raise LabelError("not a labelme file (expected a JSON object)")
        return decode_image_data(data.get("imageData"))
    except LabelError as error:  # the label is this sample's image: its problem is an image problem
        raise ImageError(str(error)) from None


def decode_image_data(value: object) -> bytes:
    if not isinstance(value, str):
        raise LabelError(f"its imageData is {shown(value)}, not a base64 text")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise LabelError("its imageData is not a base64 image") from None
