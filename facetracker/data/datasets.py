"""Dataset folders: labelme, Pascal VOC, YOLO and COCO labels, with or without train/val/test splits.

A dataset is a list of `Sample`s: an image and, where it holds a face, one box normalised to the
image's real size as `[x_min, y_min, x_max, y_max]` in [0, 1]. Everything that cannot be used is
skipped with a `Skipped(path, reason)` so that the caller can print one line per file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

from facetracker.boxes import Box
from facetracker.config.jsonconfig import NestedTooDeep, parse_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
FACE_LABELS = ("face",)
# Larger images are refused before decoding: a 20000 x 20000 photo would take 1.2 GB as RGB.
MAX_IMAGE_PIXELS = 40_000_000
# labelme lets a corner sit a little outside the image when dragged to the edge.
EDGE_TOLERANCE = 0.02
# imageWidth / imageHeight beyond this are not a photo's size but a broken or hostile label.
MAX_LABEL_SIDE = 1_000_000
OUTSIDE_ROOT = "it links outside the data root (the app reads only files inside it)"



class DatasetError(ValueError):
    """A dataset folder that cannot be used at all."""


class ImageError(ValueError):
    """An image file that cannot be decoded; the message is the reason."""


class OutsideRoot(ValueError):
    """A file whose real path (after following symbolic links) lies outside the data root."""


def printable(text: str) -> str:
    """`text` with undecodable bytes of a file name shown as escapes: it can then be printed, written to
    JSON or shown in a browser (a name that is not UTF-8 reaches Python as lone surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are no escaped byte, e.g. from a JSON "\ud800"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def real_path_inside(path: str | Path, root: str | Path | None) -> Path:
    """The path to open: with a root, `path` with every symbolic link followed, refused (`OutsideRoot`)
    when that lies outside the root; without one, `path` as it is (the command line is unconfined)."""
    if root is None:
        return Path(path)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise OutsideRoot(OUTSIDE_ROOT)
    return Path(real)


def _open_regular(path: str | Path, root: str | Path | None) -> BinaryIO:
    """Open a file for reading, inside the root (when given), refusing anything but a regular file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    """
    real = real_path_inside(path, root)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if root is not None:  # the checked path has no link left in it: one that appears since is refused
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(real, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(_not_regular(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_regular(mode: int) -> str:
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "something else")
    return f"{kind}, not a regular file"


def _read_bytes(path: str | Path, root: str | Path | None) -> bytes:
    try:
        with _open_regular(path, root) as handle:
            return handle.read()
    except ImageError as error:  # a label that is not a regular file: the same words, as a label problem
        raise LabelError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class Sample:
    image: str
    """Path of the image file, or of the label file whose embedded `imageData` holds the image."""
    box: Box | None
    """Normalised box of the largest face (what a single-box model learns), or None for a no-face image."""
    split: str | None = None
    label: str | None = None
    embedded: bool = False
    """The pixels come from the label's base64 `imageData`, not from an image file."""
    root: str | None = None
    """The data root the files must stay inside when read again (the app's), or None (unconfined)."""
    faces: tuple[Box, ...] = ()
    """Every labelled face, normalised, the largest first (`box` is the first)."""

    def __post_init__(self) -> None:
        if not self.faces and self.box is not None:
            object.__setattr__(self, "faces", (self.box,))

    @property
    def has_face(self) -> bool:
        return self.box is not None

    @property
    def name(self) -> str:
        return Path(self.image).stem


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 must not make printing, JSON or the page fail on this line.
        object.__setattr__(self, "path", printable(str(self.path)))
        object.__setattr__(self, "reason", printable(str(self.reason)))

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


@dataclasses.dataclass
class Dataset:
    root: str
    samples: list[Sample]
    skipped: list[Skipped]
    notes: list[str]
    layout: str
    has_splits: bool

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def summary(self) -> dict:
        counts = {
            "images": len(self.samples),
            "faces": sum(s.has_face for s in self.samples),
            "no_face": sum(not s.has_face for s in self.samples),
            "labelled_faces": sum(len(s.faces) for s in self.samples),
            "several_faces": sum(len(s.faces) > 1 for s in self.samples),
            "skipped": len(self.skipped),
            "layout": self.layout,
        }
        for split in SPLITS:
            members = self.split(split)
            if members:
                counts[split] = {
                    "faces": sum(s.has_face for s in members),
                    "no_face": sum(not s.has_face for s in members),
                }
        return counts

    def describe(self) -> str:
        """One line for people: what was found and what was skipped."""
        s = self.summary()
        parts = [f"{s['images']} images ({s['faces']} with a face, {s['no_face']} without)"]
        if s["several_faces"]:
            parts.append(f"{s['labelled_faces']} faces labelled, {s['several_faces']} images with several")
        per_split = [f"{k} {s[k]['faces'] + s[k]['no_face']}" for k in SPLITS if k in s]
        if per_split:
            parts.append("split " + " / ".join(per_split))
        parts.append(f"{s['skipped']} skipped")
        return f"{self.root}: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Reading images


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
                handle = stack.enter_context(_open_regular(source, root))
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
        return read_image(_embedded_bytes(Path(sample.image), sample.root), max_side)
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


def _embedded_bytes(label_path: Path, root: str | Path | None = None) -> bytes:
    try:
        data = _parse_json(label_path, root)
        if not isinstance(data, dict):
            raise LabelError("not a labelme file (expected a JSON object)")
        return _decode_image_data(data.get("imageData"))
    except LabelError as error:  # the label is this sample's image: its problem is an image problem
        raise ImageError(str(error)) from None


def _decode_image_data(value: object) -> bytes:
    if not isinstance(value, str):
        raise LabelError(f"its imageData is {_shown(value)}, not a base64 text")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise LabelError("its imageData is not a base64 image") from None


# ----------------------------------------------------------------------------------------------
# Labels: each reader returns (boxes in pixels, (width, height) the label claims or None)


class LabelError(ValueError):
    """A label file that cannot be used; the message is the reason."""


def _shown(value: object, limit: int = 40) -> str:
    text = printable(repr(value))
    return text if len(text) <= limit else text[:limit] + "…"


def _number(value: object, what: str) -> float:
    """A label's number as a finite float; anything else is the label's problem, named."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LabelError(f"{what} is {_shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise LabelError(f"{what} is a {len(str(value))}-digit number, not a coordinate") from None
    if not math.isfinite(number):
        raise LabelError(f"{what} is {number}, not a finite number")
    return number


def _side(value: object, what: str) -> int:
    number = _number(value, what)
    if number != int(number) or not 1 <= number <= MAX_LABEL_SIDE:
        raise LabelError(f"{what} is {_shown(value)}, not a whole number of pixels from 1 to {MAX_LABEL_SIDE:,}")
    return int(number)


def _parse_json(path: Path, root: str | Path | None) -> object:
    try:
        return parse_json(_read_bytes(path, root).decode("utf-8"))
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    except json.JSONDecodeError as error:
        raise LabelError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    except NestedTooDeep as error:  # a labelme or a COCO file: neither nests past a few levels
        raise LabelError(f"its JSON is nested too deeply to read ({error})") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise LabelError(f"not valid JSON ({error})") from None


def _read_labelme(path: Path, root: str | Path | None = None) -> tuple[list[Box], tuple[int, int] | None, dict]:
    data = _parse_json(path, root)
    if not isinstance(data, dict):
        raise LabelError("not a labelme file (expected a JSON object)")
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise LabelError("not a labelme file (no 'shapes' list)")
    boxes: list[Box] = []
    for shape in shapes:
        if not isinstance(shape, dict) or str(shape.get("label", "")).lower() not in FACE_LABELS:
            continue
        kind = shape.get("shape_type", "rectangle")
        if kind != "rectangle":
            raise LabelError(f"the 'face' shape is a {kind}, expected a rectangle")
        points = shape.get("points")
        try:
            (x0, y0), (x1, y1) = points
        except (TypeError, ValueError):
            raise LabelError("the 'face' rectangle does not have two [x, y] points") from None
        # Checked one by one: "12" compares with 9 as text, and a NaN or a 400-digit integer
        # would fail far from here without naming the label.
        x0, y0, x1, y1 = (_number(v, f"the 'face' rectangle's {name}") for v, name in
                          ((x0, "points[0][0]"), (y0, "points[0][1]"), (x1, "points[1][0]"), (y1, "points[1][1]")))
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    size = None
    if data.get("imageWidth") is not None or data.get("imageHeight") is not None:
        size = (_side(data.get("imageWidth"), "imageWidth"), _side(data.get("imageHeight"), "imageHeight"))
    return boxes, size, data


def face_descriptions(sample: Sample) -> list[str]:
    """The descriptions of a labelme label's face rectangles, which say what drew each box
    ("pre-label: <detector>", "corrected by hand"); [] for another format or a label that cannot be
    read now."""
    if not (sample.label and sample.label.lower().endswith(".json")):
        return []
    try:
        _, _, data = _read_labelme(Path(sample.label), sample.root)
    except (LabelError, ImageError, OSError, ValueError):
        return []
    return [str(shape.get("description") or "") for shape in data.get("shapes", [])
            if isinstance(shape, dict) and str(shape.get("label", "")).lower() in FACE_LABELS]


def _read_voc(path: Path, data_root: str | Path | None = None) -> tuple[list[Box], tuple[int, int] | None]:
    try:
        root = ElementTree.fromstring(_read_bytes(path, data_root))
    except ElementTree.ParseError as error:
        raise LabelError(f"not valid XML ({error})") from None
    if root.tag != "annotation":  # any other XML would read as a photo without a face
        raise LabelError(f"not a Pascal VOC file (its root element is <{_shown(root.tag)[1:-1]}>, "
                         "expected <annotation>)")
    boxes: list[Box] = []
    for obj in root.iter("object"):
        if (obj.findtext("name") or "").strip().lower() not in FACE_LABELS:
            continue
        bndbox = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise LabelError("an object 'face' has no usable <bndbox>") from None
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    texts = [root.findtext(f"size/{side}") for side in ("width", "height")]
    if all(text is None or text.strip() in ("", "0") for text in texts):
        return boxes, None  # no size, or 0 x 0: what some tools write when they do not know it
    numbers = []
    for text, side in zip(texts, ("width", "height")):
        try:
            numbers.append(float((text or "").strip()))
        except ValueError:
            raise LabelError(f"<size><{side}> is {_shown(text)}, not a number") from None
    return boxes, (_side(numbers[0], "<size><width>"), _side(numbers[1], "<size><height>"))


def _read_yolo(path: Path, width: int, height: int, root: str | Path | None = None) -> tuple[list[Box], str]:
    """The face boxes in pixels, and a note when a segmentation polygon was reduced to its bounding box."""
    boxes: list[Box] = []
    polygons = []
    try:
        text = _read_bytes(path, root).decode("utf-8")
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except (ValueError, IndexError):
            raise LabelError(f"line {number} is not 'class cx cy w h'") from None
        if len(values) == 4:
            cx, cy, w, h = values
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:
            # A YOLO segmentation line: class x1 y1 x2 y2 ... (a polygon of 3 or more points).
            xs, ys = values[0::2], values[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
            if cls == 0:
                polygons.append(number)
        else:
            raise LabelError(f"line {number} holds {len(values)} numbers after the class; expected 'class cx cy w h' "
                             "(4) or a segmentation polygon 'class x1 y1 x2 y2 ...' (6 or more, in pairs)")
        if cls != 0:
            continue
        boxes.append((box[0] * width, box[1] * height, box[2] * width, box[3] * height))
    note = ""
    if polygons:
        note = f"line {', '.join(map(str, polygons))} is a segmentation polygon; its bounding box is the face box"
    return boxes, note


def _normalise(box: Box, width: int, height: int) -> Box:
    if not all(math.isfinite(v) for v in box):  # json, XML and YOLO text all let NaN and Infinity through
        raise LabelError("the face box has a corner that is not a finite number")
    x0, y0, x1, y1 = box
    tol_x, tol_y = EDGE_TOLERANCE * width, EDGE_TOLERANCE * height
    if x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y:
        raise LabelError(
            f"the face box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) lies outside the "
            f"{width}x{height} image"
        )
    x0, x1 = np.clip([x0, x1], 0, width) / width
    y0, y1 = np.clip([y0, y1], 0, height) / height
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        raise LabelError("the face box has zero size")
    return (float(x0), float(y0), float(x1), float(y1))


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


# ----------------------------------------------------------------------------------------------
# COCO files: a folder's annotations/*.json, instances*.json or Roboflow's _annotations.coco.json


ROBOFLOW_COCO = "_annotations.coco.json"
# Words of a COCO file's name (or its folder's) that say which split it holds: instances_train2017.json,
# Roboflow's valid/ folder.
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def _split_named(*names: str) -> str | None:
    for name in names:
        for word in re.split(r"[^a-z]+", name.lower()):
            if word in SPLIT_WORDS:
                return SPLIT_WORDS[word]
    return None


def _candidate_coco_files(folder: Path) -> list[Path]:
    """Files that may be COCO: every JSON in annotations/, and the usual COCO names beside the photos."""
    found: list[Path] = []

    def add(where: Path, keep: Callable[[str], bool]) -> None:
        try:
            entries = sorted(os.scandir(where), key=lambda e: e.name)
        except OSError:
            return
        found.extend(Path(e.path) for e in entries
                     if e.name.lower().endswith(".json") and not e.name.startswith(".") and keep(e.name))

    add(folder / "annotations", lambda name: True)
    usual = lambda name: name == ROBOFLOW_COCO or name.lower().startswith("instances")  # noqa: E731
    add(folder, usual)
    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        subfolders = []
    for sub in subfolders:  # Roboflow: train/_annotations.coco.json beside the photos
        if sub.name != "annotations":
            add(sub, lambda name: name == ROBOFLOW_COCO)
    return found


def find_coco(folder: str | Path, root: str | Path | None = None) -> list[tuple[Path, object]]:
    """The COCO files of a dataset folder, each with its parsed JSON (or the `LabelError` that stopped
    it being read). A file is taken for COCO when it is a JSON object with an `images` list, or, in
    annotations/, when it cannot be read at all (its line then says why). Empty: not a COCO folder."""
    files: list[tuple[Path, object]] = []
    for path in _candidate_coco_files(Path(folder)):
        try:
            parsed: object = _parse_json(path, root)
        except (LabelError, OutsideRoot, OSError) as error:
            if path.parent.name == "annotations":
                files.append((path, LabelError(str(error) if not isinstance(error, OSError)
                                               else f"cannot read it ({error.strerror or error})")))
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("images"), list):
            files.append((path, parsed))
    if not any(isinstance(parsed, dict) for _, parsed in files):
        return []
    return files


def _image_folders(folder: Path, coco_file: Path) -> list[Path]:
    """Where a COCO file's `file_name`s are looked for: beside it, in the folder named after its split
    (instances_train2017.json: train2017/), in images/, and in the dataset folder."""
    named = coco_file.stem[len("instances_"):] if coco_file.stem.lower().startswith("instances_") else ""
    split = _split_named(coco_file.stem) or ""
    places = [coco_file.parent]
    for name in dict.fromkeys(n for n in (named, split) if n):
        places += [folder / name, folder / name / "images", folder / "images" / name]
    places += [folder / "images", folder]
    unique = []
    for place in places:
        if place not in unique and place.is_dir():
            unique.append(place)
    return unique


def _entry(kind: str, index: int, entry: object) -> str:
    """How a line names an entry of a COCO file: its list, its place and its id."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{kind}[{index}]" + (f" (id {_shown(ident)})" if ident is not None else "")


def _coco_box(annotation: dict) -> Box:
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise LabelError(f"its bbox is {_shown(bbox)}, not [x, y, width, height]")
    x, y, width, height = (_number(v, f"bbox[{i}]") for i, v in enumerate(bbox))
    if width <= 0 or height <= 0:
        raise LabelError(f"its bbox has a width or height of {min(width, height):g} (not a box)")
    return x, y, x + width, y + height


def _face_categories(coco: dict) -> set:
    categories = coco.get("categories")
    if not isinstance(categories, list):
        raise LabelError("no 'categories' list")
    faces = {c.get("id") for c in categories
             if isinstance(c, dict) and str(c.get("name", "")).strip().lower() in FACE_LABELS}
    if not faces:
        names = ", ".join(sorted(str(c.get("name")) for c in categories if isinstance(c, dict))[:8])
        raise LabelError(f"no category is named 'face' (its categories: {names or 'none'})")
    return faces


@dataclasses.dataclass
class _CocoImage:
    entry: str
    file_name: str
    claimed_size: tuple[int, int] | None
    boxes: list[Box] = dataclasses.field(default_factory=list)
    problem: str | None = None


def _coco_images(coco: dict, skipped: list[Skipped], where: str) -> tuple[dict[object, _CocoImage], set]:
    """The image entries by id, and the ids of the entries that cannot be used: each of those gets a
    line, and its annotations none."""
    images: dict[object, _CocoImage] = {}
    reused: set = set()
    refused: set = set()
    for index, image in enumerate(coco["images"]):
        name = _entry("images", index, image)
        if isinstance(image, dict) and isinstance(image.get("id"), (int, str)):
            refused.add(image["id"])  # until it proves usable
        try:
            if not isinstance(image, dict):
                raise LabelError("not a JSON object")
            ident = image.get("id")
            if not isinstance(ident, (int, str)) or isinstance(ident, bool):
                raise LabelError(f"its id is {_shown(ident)}, not a number or a text")
            file_name = image.get("file_name")
            if not isinstance(file_name, str) or not file_name.strip():
                raise LabelError(f"its file_name is {_shown(file_name)}, not a file name")
            parts = file_name.replace("\\", "/").split("/")
            if file_name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", file_name):
                raise LabelError(f"its file_name {_shown(file_name)} leads outside the dataset folder")
            claimed = None
            if image.get("width") is not None or image.get("height") is not None:
                claimed = (_side(image.get("width"), "width"), _side(image.get("height"), "height"))
        except LabelError as error:
            skipped.append(Skipped(where, f"{name}: {error}"))
            continue
        if ident in images or ident in reused:
            reused.add(ident)
            first = images.pop(ident, None)
            if first is not None:
                skipped.append(Skipped(where, f"{first.entry}: its id is used by {name} too; "
                                              "neither is read (their faces could belong to either)"))
            skipped.append(Skipped(where, f"{name}: its id is used by another image entry too"))
            continue
        images[ident] = _CocoImage(name, "/".join(parts), claimed)
    return images, refused - set(images)


def _add_annotations(coco: dict, images: dict[object, _CocoImage], refused: set, faces: set,
                     skipped: list[Skipped], where: str) -> None:
    """Each face annotation's box onto its image. A face annotation that cannot be used marks its image
    as skipped: training on it without that face would teach the face as background."""
    annotations = coco.get("annotations", [])
    if not isinstance(annotations, list):
        skipped.append(Skipped(where, f"its 'annotations' is {_shown(annotations)}, not a list; "
                                      "every image is read as a photo without a face"))
        return
    for index, annotation in enumerate(annotations):
        name = _entry("annotations", index, annotation)
        if not isinstance(annotation, dict):
            skipped.append(Skipped(where, f"{name}: not a JSON object"))
            continue
        image_id = annotation.get("image_id")
        image = images.get(image_id) if isinstance(image_id, (int, str)) else None
        if image is None and isinstance(image_id, (int, str)) and image_id in refused:
            continue  # its image's line says why neither is read
        if image is None:
            skipped.append(Skipped(where, f"{name}: its image_id {_shown(image_id)} names no image "
                                          "of this file"))
            continue
        if annotation.get("category_id") not in faces:
            continue
        try:
            if annotation.get("iscrowd"):
                raise LabelError("it is a crowd region (iscrowd 1): the faces in it are not boxed one by one")
            image.boxes.append(_coco_box(annotation))
        except LabelError as error:
            image.problem = image.problem or f"{name}: {error}"


def load_coco(folder: str | Path, files: list[tuple[Path, object]] | None = None, *, check_pixels: bool = True,
              root: str | Path | None = None, progress: Callable[[int, int | None], None] | None = None) -> Dataset:
    """A dataset from the COCO files of a folder (`find_coco`), as `data.load_dataset` returns one.

    The split of each file comes from its name or its folder's (instances_val2017.json, valid/);
    photos in the folder that no COCO file lists are not part of the dataset (a note counts them)."""
    folder = Path(folder)
    files = find_coco(folder, root) if files is None else files
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    listed: dict[str, str] = {}
    splits: dict[Path, str | None] = {}
    for coco_file, coco in files:
        where = str(coco_file)
        if isinstance(coco, LabelError):
            skipped.append(Skipped(where, str(coco)))
            continue
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            skipped.append(Skipped(where, "not a COCO file (no 'images' list)"))
            continue
        try:
            faces = _face_categories(coco)
        except LabelError as error:
            skipped.append(Skipped(where, f"{error}; none of its {len(coco['images'])} images is read"))
            continue
        split = _split_named(coco_file.stem) or (_split_named(coco_file.parent.name)
                                                 if coco_file.parent != folder else None)
        splits[coco_file] = split
        images, refused = _coco_images(coco, skipped, where)
        _add_annotations(coco, images, refused, faces, skipped, where)
        places = _image_folders(folder, coco_file)
        for image in images.values():
            if progress:
                progress(len(samples) + len(skipped), None)
            sample = _coco_sample(image, places, split, coco_file, check_pixels, root, listed, skipped)
            if sample is not None:
                samples.append(sample)
                listed[os.path.realpath(sample.image)] = where
    has_splits = bool(splits) and all(split is not None for split in splits.values())
    if splits and not has_splits and any(splits.values()):
        named = ", ".join(p.name for p, s in splits.items() if s is None)
        notes.append(f"{named}: no split in its name, so the files' splits are not used (training splits the "
                     "photos by a seeded hash of their names)")
        samples = [dataclasses.replace(s, split=None) for s in samples]
    unlisted = _unlisted_photos(folder, listed)
    if unlisted:
        notes.append(f"{unlisted} photo(s) in the folder are in no COCO file and are not used")
    if (folder / "labels").is_dir() and any(p.suffix.lower() in (".json", ".txt") for p in (folder / "labels").iterdir()):
        notes.append(f"{folder / 'labels'}: its labels are not read; the COCO file(s) are this folder's labels")
    if not samples:
        reasons = f"; {len(skipped)} entries could not be used, e.g. {skipped[0]}" if skipped else ""
        raise DatasetError(f"{folder}: no usable image in its COCO file(s){reasons}")
    return Dataset(str(folder), samples, skipped, notes, "coco", has_splits)


def _coco_sample(image: _CocoImage, places: list[Path], split: str | None, coco_file: Path, check_pixels: bool,
                 root: str | Path | None, listed: dict[str, str], skipped: list[Skipped]) -> Sample | None:
    path = next((place / image.file_name for place in places if (place / image.file_name).is_file()), None)
    what = f"{image.entry} ({_shown(image.file_name, 80)})"
    if path is None:
        folders = ", ".join(str(p) for p in places[:4])
        skipped.append(Skipped(str(coco_file), f"{what}: no such photo in {folders}"))
        return None
    if image.problem:
        skipped.append(Skipped(str(path), f"{image.problem} (in {coco_file.name})"))
        return None
    if os.path.realpath(path) in listed:
        skipped.append(Skipped(str(path), f"{what}: already listed in {Path(listed[os.path.realpath(path)]).name}"))
        return None
    try:
        width, height = image_size(path, root=root)
        if check_pixels:
            read_image(path, max_side=256, root=root)
        if image.claimed_size and image.claimed_size != (width, height):
            raise LabelError(f"{image.entry} says {image.claimed_size[0]}x{image.claimed_size[1]} but the image is "
                             f"{width}x{height}")
        faces = tuple(_normalise(b, width, height)
                      for b in sorted(image.boxes, key=_area, reverse=True))
    except LabelError as error:
        skipped.append(Skipped(str(path), f"{error} (in {coco_file.name})"))
        return None
    except (ImageError, OutsideRoot) as error:
        skipped.append(Skipped(str(path), str(error)))
        return None
    except OSError as error:
        skipped.append(Skipped(str(path), f"cannot read it ({error.strerror or error})"))
        return None
    return Sample(str(path), faces[0] if faces else None, split, str(coco_file), False,
                  str(root) if root is not None else None, faces)


def _unlisted_photos(folder: Path, listed: dict[str, str]) -> int:
    count = 0
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if path.suffix.lower() in IMAGE_EXTENSIONS and not hidden:
            count += os.path.realpath(path) not in listed
    return count


# ----------------------------------------------------------------------------------------------
# Folders


def list_files(folder: Path, suffixes: Iterable[str], skipped: list[Skipped], *, root: str | Path | None = None,
               unreadable: dict[str, Skipped] | None = None) -> dict[str, Path]:
    """Files in one folder (not recursive) by stem; entries that cannot be used are skipped.

    Skipped with a line: symlink loops, dangling links, names that are not UTF-8, entries that are
    no regular file (a FIFO, a folder named like a photo) and, with a `root`, entries whose real
    path lies outside it. With `unreadable`, those lines go there by stem instead, so that the
    image a bad label belongs to can be skipped in its place.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list the folder ({error.strerror or error})") from None

    def refuse(entry: os.DirEntry, reason: str) -> None:
        item = Skipped(entry.path, reason)
        if unreadable is not None:
            unreadable[os.path.splitext(entry.name)[0]] = item
        else:
            skipped.append(item)

    for entry in entries:
        if entry.name.startswith("."):
            continue
        suffix = os.path.splitext(entry.name)[1].lower()
        if suffix not in suffixes:
            continue
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:  # it would list fine, then fail where the name is written as text
            skipped.append(Skipped(entry.path, "its name is not valid UTF-8; rename it"))
            continue
        try:
            mode = os.stat(entry.path).st_mode  # follows symlinks; a loop raises OSError
        except OSError as error:
            if error.errno == errno.ELOOP:
                refuse(entry, "a symbolic link loop (it leads back to itself)")
            elif entry.is_symlink() and error.errno == errno.ENOENT:
                refuse(entry, "a symbolic link to a file that does not exist")
            else:
                refuse(entry, f"cannot open it ({error.strerror or error})")
            continue
        if root is not None:
            try:
                real_path_inside(entry.path, root)
            except OutsideRoot as error:
                refuse(entry, str(error))
                continue
        if not stat.S_ISREG(mode):
            refuse(entry, _not_regular(mode))
            continue
        stem = os.path.splitext(entry.name)[0]
        if stem in found:
            skipped.append(Skipped(entry.path, f"another image has the same name {found[stem].name}"))
            continue
        found[stem] = Path(entry.path)
    return found


def _match_ignoring_case(images: dict[str, Path], labels: dict[str, Path], notes: list[str],
                         ambiguous: dict[str, str]) -> dict[str, Path]:
    """Labels re-keyed by the image they belong to when their names differ only in case.

    `Photo.jpg` with `labels/photo.json` would otherwise read as a no-face photo plus a lone label.
    A label is matched only when it is no other image's by exact name and the match is one to one;
    otherwise each image concerned goes into `ambiguous` with the reason, and its labels are used
    for nothing.
    """
    free_labels: dict[str, list[str]] = {}
    for stem in labels:
        if stem not in images:
            free_labels.setdefault(stem.lower(), []).append(stem)
    if not free_labels:
        return labels
    unlabelled: dict[str, list[str]] = {}
    for stem in images:
        if stem not in labels:
            unlabelled.setdefault(stem.lower(), []).append(stem)
    matched = dict(labels)
    for key, image_stems in unlabelled.items():
        label_stems = free_labels.get(key)
        if not label_stems:
            continue
        label_paths = [matched.pop(stem) for stem in label_stems]
        if len(image_stems) == 1 and len(label_stems) == 1:
            matched[image_stems[0]] = label_paths[0]
            notes.append(f"{label_paths[0]}: matched to {images[image_stems[0]].name} by name ignoring case")
        else:
            names = ", ".join(p.name for p in label_paths)
            for stem in image_stems:
                ambiguous[stem] = (f"no label of exactly its name, and the labels {names} match "
                                   f"{len(image_stems)} image(s) only ignoring case; rename them to match exactly")
    return matched


def _find_split_folders(root: Path) -> list[tuple[str | None, Path]]:
    split_dirs = [(s, root / s) for s in SPLITS if (root / s / "images").is_dir() or (root / s / "labels").is_dir()]
    return split_dirs or [(None, root)]


def load_dataset(folder: str | Path, *, check_pixels: bool = True, root: str | Path | None = None,
                 progress: Callable[[int, int | None], None] | None = None) -> Dataset:
    """Read a dataset folder. Files that cannot be used are listed in `Dataset.skipped`.

    Layouts: `images/` with `labels/*.json` (labelme), `labels/*.txt` (YOLO) or
    `annotations/*.xml` (Pascal VOC); labelme JSON next to the images also works; the same inside
    `train/ val/ test/`; a folder holding COCO files (`find_coco`) is read as COCO (`load_coco`).
    With `check_pixels`, every image is decoded once so that a truncated file is reported now
    rather than in the middle of training. With a `root` (the app's data root),
    every image and label whose real path (symbolic links followed) lies outside it is skipped,
    and the samples keep the root so that reading their pixels later checks it again. `progress`
    is told the count of photos read so far (the total is not known in advance).
    """
    root_dir = Path(folder).expanduser()
    if not root_dir.exists():
        raise DatasetError(f"{root_dir}: no such folder")
    if not root_dir.is_dir():
        raise DatasetError(f"{root_dir}: not a folder")
    try:
        str(root_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(f"{printable(str(root_dir))}: the folder's path is not valid UTF-8; rename it") from None
    if root is not None:
        root = os.path.realpath(root)
        try:
            real_path_inside(root_dir, root)
        except OutsideRoot:
            raise DatasetError(f"{root_dir}: the folder lies outside {root}, where datasets must be") from None

    coco = find_coco(root_dir, root)
    if coco:
        return load_coco(root_dir, coco, check_pixels=check_pixels, root=root, progress=progress)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    layouts: set[str] = set()
    split_folders = _find_split_folders(root_dir)
    for split, base in split_folders:
        images_dir = base / "images" if (base / "images").is_dir() else base
        already_reported = len(skipped)
        images = list_files(images_dir, IMAGE_EXTENSIONS, skipped, root=root)
        # An image skipped while listing (a symlink loop, say) already has its line; its label needs none.
        unlisted_images = {Path(item.path).stem for item in skipped[already_reported:]}
        # A label that cannot be read is its image's problem: that image is skipped, not taken as no-face.
        bad_labels: dict[str, Skipped] = {}

        def labels_in(where: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
            return list_files(where, suffixes, skipped, root=root, unreadable=bad_labels)

        labelme = labels_in(base / "labels", (".json",)) or labels_in(images_dir, (".json",))
        yolo = labels_in(base / "labels", (".txt",))
        voc = labels_in(base / "annotations", (".xml",)) or labels_in(base / "labels", (".xml",))
        layouts.update(name for name, found in (("labelme", labelme), ("yolo", yolo), ("voc", voc)) if found)
        ambiguous: dict[str, str] = {}
        labelme, yolo, voc = (_match_ignoring_case(images, labels, notes, ambiguous) for labels in (labelme, yolo, voc))
        # An unreadable label belongs to the image of its name, or, failing that, to the one image
        # whose name differs only in case and that has no readable label of its own.
        unlabelled = [stem for stem in images if not any(stem in found for found in (labelme, yolo, voc))]
        owner_of_bad_label: dict[str, str] = {}
        for stem in bad_labels:
            if stem in images:
                owner_of_bad_label[stem] = stem
            else:
                owners = [image for image in unlabelled if image.lower() == stem.lower()]
                if len(owners) == 1:
                    owner_of_bad_label[owners[0]] = stem
        claimed_bad_labels = set(owner_of_bad_label.values())
        for stem, item in sorted(bad_labels.items()):
            if stem not in claimed_bad_labels and stem not in unlisted_images:
                skipped.append(item)
        for stem in sorted(set(images) | set(labelme)):
            if progress:
                progress(len(samples) + len(skipped), None)
            image_path = images.get(stem)
            if image_path is None and stem in unlisted_images:
                continue
            if image_path is not None and stem in owner_of_bad_label:
                label = bad_labels[owner_of_bad_label[stem]]
                skipped.append(Skipped(str(image_path), f"its label {Path(label.path).name} cannot be read: "
                                                        f"{label.reason}"))
                continue
            if stem in ambiguous:
                skipped.append(Skipped(str(image_path or labelme.get(stem)), ambiguous[stem]))
                continue
            try:
                sample, note = _make_sample(stem, image_path, labelme.get(stem), yolo.get(stem), voc.get(stem), split,
                                            check_pixels, root)
            except (LabelError, ImageError, OutsideRoot) as error:
                skipped.append(Skipped(str(image_path or labelme.get(stem)), str(error)))
                continue
            except OSError as error:
                skipped.append(Skipped(str(image_path or labelme.get(stem)), f"cannot read it ({error.strerror or error})"))
                continue
            samples.append(sample)
            if note:
                notes.append(f"{sample.label or sample.image}: {note}")
        for stem in sorted((set(yolo) | set(voc)) - set(images) - unlisted_images):
            skipped.append(Skipped(str(yolo.get(stem) or voc.get(stem)), "label without an image"))

    if not samples:
        reasons = f"; {len(skipped)} file(s) could not be used, e.g. {skipped[0]}" if skipped else ""
        raise DatasetError(
            f"{root_dir}: no usable image found (expected images/ with labels/*.json, "
            f"or train/ val/ test/ folders holding them){reasons}"
        )
    has_splits = split_folders[0][0] is not None
    return Dataset(str(root_dir), samples, skipped, notes, "+".join(sorted(layouts)) or "images only", has_splits)


def _make_sample(stem, image_path, labelme_path, yolo_path, voc_path, split, check_pixels,
                 root: str | None = None) -> tuple[Sample, str]:
    embedded = False
    note = ""
    labelme_data: dict = {}
    boxes: list[Box] = []
    claimed_size = None
    label_path = labelme_path or voc_path or yolo_path
    if labelme_path is not None:
        boxes, claimed_size, labelme_data = _read_labelme(labelme_path, root)
        image_ref = labelme_data.get("imagePath")
        if image_path is None:
            if labelme_data.get("imageData"):
                embedded = True
            else:
                raise LabelError("label without an image (no image file of that name and no imageData)")
        elif isinstance(image_ref, str) and image_ref:
            referenced = os.path.basename(image_ref.replace("\\", "/"))
            referenced_stem = os.path.splitext(referenced)[0]
            # A label matched ignoring case may name its image in either spelling.
            same = referenced_stem == stem or (labelme_path.stem != stem and referenced_stem.lower() == stem.lower())
            if not same:
                raise LabelError(f"its imagePath names {_shown(referenced, 80)}, not {image_path.name!r}")
    elif voc_path is not None:
        boxes, claimed_size = _read_voc(voc_path, root)

    pixels_source = _decode_image_data(labelme_data.get("imageData")) if embedded else image_path
    try:
        width, height = image_size(pixels_source, root=root)
        if check_pixels:
            read_image(pixels_source, max_side=256, root=root)
    except (ValueError, TypeError) as error:
        if embedded and not isinstance(error, ImageError):
            raise LabelError("its imageData is not a base64 image") from None
        raise
    if yolo_path is not None and labelme_path is None and voc_path is None:
        boxes, note = _read_yolo(yolo_path, width, height, root)
    if claimed_size and boxes and claimed_size != (width, height):
        raise LabelError(
            f"the label is for a {claimed_size[0]}x{claimed_size[1]} image but the image is "
            f"{width}x{height}; relabel it or fix imageWidth/imageHeight"
        )
    faces = tuple(_normalise(b, width, height) for b in sorted(boxes, key=_area, reverse=True))
    image = str(labelme_path if embedded else image_path)
    return Sample(image, faces[0] if faces else None, split, str(label_path) if label_path else None, embedded, root,
                  faces), note


# ----------------------------------------------------------------------------------------------
# Splits


def assign_splits(samples: list[Sample], seed: int = 0, val: float = 0.1, test: float = 0.1) -> list[Sample]:
    """Give every sample without a split one, by a seeded hash of its file name.

    A hash (not a shuffle) keeps each image in its split when images are added or removed.
    """
    out = []
    for sample in samples:
        if sample.split is None:
            digest = hashlib.sha1(f"{seed}:{Path(sample.image).name}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2**64
            split = "test" if u < test else "val" if u < test + val else "train"
            sample = dataclasses.replace(sample, split=split)
        out.append(sample)
    return out


def top_up_validation(samples: list[Sample], minimum: int) -> tuple[list[Sample], list[Sample]]:
    """Move training photos to the validation split until it holds `minimum` photos (or a third of
    the training photos have moved, whichever comes first); returns the samples and those moved.

    Photos from a recording are near-duplicates of their neighbours, so the ones moved are spread
    evenly over the training photos in name order (the order they were recorded in), not picked at
    random: each stands for a different stretch of the recording. When the dataset has no-face
    photos and validation holds none, one of them is among those moved.
    """
    val = [s for s in samples if s.split == "val"]
    train = sorted((s for s in samples if s.split == "train"), key=lambda s: Path(s.image).name)
    wanted = min(minimum - len(val), len(train) // 3)
    if wanted <= 0:
        return samples, []
    positions = [int((i + 0.5) * len(train) / wanted) for i in range(wanted)]
    no_face = [i for i, s in enumerate(train) if not s.has_face]
    if no_face and not any(not s.has_face for s in val + [train[i] for i in positions]):
        # The pick nearest a no-face photo gives way to it: the spread barely changes.
        _, pick, photo = min((abs(p - i), n, i) for n, p in enumerate(positions) for i in no_face)
        positions[pick] = photo
    chosen = [train[i] for i in positions]
    moved = {s.image for s in chosen}
    out = [dataclasses.replace(s, split="val") if s.image in moved and s.split == "train" else s for s in samples]
    return out, chosen


def split_manifest(samples: list[Sample]) -> dict[str, list[str]]:
    return {split: [s.image for s in samples if s.split == split] for split in SPLITS}
