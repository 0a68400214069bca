"""Dataset folders: labelme, Pascal VOC and YOLO labels, with or without train/val/test splits.

A dataset is a list of `Sample`s: an image and, where it holds a face, one box normalised to the
image's real size as `[x_min, y_min, x_max, y_max]` in [0, 1]. Everything that cannot be used is
skipped with a `Skipped(path, reason)` so that the caller can print one line per file.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
FACE_LABELS = ("face",)
# Larger images are refused before decoding: a 20000 x 20000 photo would take 1.2 GB as RGB.
MAX_IMAGE_PIXELS = 40_000_000
# labelme lets a corner sit a little outside the image when dragged to the edge.
EDGE_TOLERANCE = 0.02

Box = tuple[float, float, float, float]

Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a clearer message


class DatasetError(ValueError):
    """A dataset folder that cannot be used at all."""


class ImageError(ValueError):
    """An image file that cannot be decoded; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class Sample:
    image: str
    """Path of the image file, or of the label file whose embedded `imageData` holds the image."""
    box: Box | None
    """Normalised face box, or None for a no-face image."""
    split: str | None = None
    label: str | None = None
    embedded: bool = False
    """The pixels come from the label's base64 `imageData`, not from an image file."""

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
        per_split = [f"{k} {s[k]['faces'] + s[k]['no_face']}" for k in SPLITS if k in s]
        if per_split:
            parts.append("split " + " / ".join(per_split))
        parts.append(f"{s['skipped']} skipped")
        return f"{self.root}: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Reading images


def _open_image(source: str | Path | bytes) -> Image.Image:
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageError("the embedded image data is empty")
            image = Image.open(io.BytesIO(source))
        else:
            if os.path.getsize(source) == 0:
                raise ImageError("the file is empty (0 bytes)")
            image = Image.open(source)
    except ImageError:
        raise
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
        raise ImageError(
            f"the image is {width}x{height} px, larger than the {MAX_IMAGE_PIXELS // 1_000_000} "
            "megapixels this app reads; scale it down first"
        )
    if width < 8 or height < 8:
        raise ImageError(f"the image is only {width}x{height} px")
    return image


_ROTATED_ORIENTATIONS = {5, 6, 7, 8}


def image_size(source: str | Path | bytes) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF rotation, read from the header only."""
    image = _open_image(source)
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth refusing the image for
        orientation = 1
    return (height, width) if orientation in _ROTATED_ORIENTATIONS else (width, height)


def read_image(source: str | Path | bytes, max_side: int | None = None) -> np.ndarray:
    """Decode an image file (or bytes) to an RGB uint8 array, upright as labelme shows it.

    Handles grayscale, RGBA, palette, CMYK and 16-bit images. With `max_side`, JPEGs are decoded
    at a reduced scale (much faster for big photos) and the result is at most that size.
    """
    image = _open_image(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if max_side and image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = ImageOps.exif_transpose(image) or image
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"the image data is broken ({error})") from None
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
    """The RGB pixels of a sample, from its image file or its label's embedded imageData."""
    if sample.embedded:
        return read_image(_embedded_bytes(Path(sample.image)), max_side)
    return read_image(sample.image, max_side)


def model_input(image: np.ndarray, size: int, *, bgr: bool = False) -> np.ndarray:
    """The one way an image becomes the model's input: the whole image stretched to size x size RGB.

    Training, evaluation, prediction and the live Detector all call this, so a box normalised to
    the image stays valid and what the model sees never depends on the caller.
    """
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if not bgr else cv2.COLOR_GRAY2BGR)
    if min(image.shape[:2]) > 2 * size:
        # INTER_AREA over a whole camera frame costs ~1.2 ms (640x480 -> 120), a third of the live
        # frame path. Bilinear to twice the size, then an exact 2x2 average, costs ~0.25 ms and
        # differs from it by 0.4 grey levels on average (bilinear straight to the size: 2.0, as it
        # skips most pixels and aliases).
        image = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if bgr:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return resized


def _embedded_bytes(label_path: Path) -> bytes:
    data = json.loads(label_path.read_text(encoding="utf-8"))
    return base64.b64decode(data["imageData"])


# ----------------------------------------------------------------------------------------------
# Labels: each reader returns (boxes in pixels, (width, height) the label claims or None)


class LabelError(ValueError):
    """A label file that cannot be used; the message is the reason."""


def _read_labelme(path: Path) -> tuple[list[Box], tuple[int, int] | None, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    except json.JSONDecodeError as error:
        raise LabelError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
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
            box = (float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1)))
        except (TypeError, ValueError):
            raise LabelError("the 'face' rectangle does not have two [x, y] points") from None
        boxes.append(box)
    size = None
    if isinstance(data.get("imageWidth"), (int, float)) and isinstance(data.get("imageHeight"), (int, float)):
        size = (int(data["imageWidth"]), int(data["imageHeight"]))
    return boxes, size, data


def _read_voc(path: Path) -> tuple[list[Box], tuple[int, int] | None]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise LabelError(f"not valid XML ({error})") from None
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
    size = None
    try:
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    except (TypeError, ValueError):
        pass
    return boxes, size


def _read_yolo(path: Path, width: int, height: int) -> list[Box]:
    boxes: list[Box] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:5])
        except (ValueError, IndexError):
            raise LabelError(f"line {number} is not 'class cx cy w h'") from None
        if cls != 0:
            continue
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return boxes


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


def _largest(boxes: list[Box]) -> Box:
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


# ----------------------------------------------------------------------------------------------
# Folders


def list_files(folder: Path, suffixes: Iterable[str], skipped: list[Skipped]) -> dict[str, Path]:
    """Files in one folder (not recursive) by stem; unreadable entries and symlink loops are skipped."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list the folder ({error.strerror or error})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        suffix = os.path.splitext(entry.name)[1].lower()
        if suffix not in suffixes:
            continue
        try:
            if not entry.is_file():  # follows symlinks; a loop raises OSError
                if entry.is_symlink() and not os.path.exists(entry.path):
                    skipped.append(Skipped(entry.path, "a symbolic link to a file that does not exist"))
                continue
        except OSError as error:
            if error.errno == errno.ELOOP:
                skipped.append(Skipped(entry.path, "a symbolic link loop (it leads back to itself)"))
            else:
                skipped.append(Skipped(entry.path, f"cannot open it ({error.strerror or error})"))
            continue
        stem = os.path.splitext(entry.name)[0]
        if stem in found:
            skipped.append(Skipped(entry.path, f"another image has the same name {found[stem].name}"))
            continue
        found[stem] = Path(entry.path)
    return found


def _find_split_folders(root: Path) -> list[tuple[str | None, Path]]:
    split_dirs = [(s, root / s) for s in SPLITS if (root / s / "images").is_dir() or (root / s / "labels").is_dir()]
    return split_dirs or [(None, root)]


def load_dataset(folder: str | Path, *, check_pixels: bool = True) -> Dataset:
    """Read a dataset folder. Files that cannot be used are listed in `Dataset.skipped`.

    Layouts: `images/` with `labels/*.json` (labelme), `labels/*.txt` (YOLO) or
    `annotations/*.xml` (Pascal VOC); labelme JSON next to the images also works; the same inside
    `train/ val/ test/`. With `check_pixels`, every image is decoded once so that a truncated file
    is reported now rather than in the middle of training.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")

    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    layouts: set[str] = set()
    split_folders = _find_split_folders(root)
    for split, base in split_folders:
        images_dir = base / "images" if (base / "images").is_dir() else base
        already_reported = len(skipped)
        images = list_files(images_dir, IMAGE_EXTENSIONS, skipped)
        # An image skipped while listing (a symlink loop, say) already has its line; its label needs none.
        unlisted_images = {Path(item.path).stem for item in skipped[already_reported:]}
        labelme = list_files(base / "labels", (".json",), skipped) or list_files(images_dir, (".json",), skipped)
        yolo = list_files(base / "labels", (".txt",), skipped)
        voc = list_files(base / "annotations", (".xml",), skipped) or list_files(base / "labels", (".xml",), skipped)
        layouts.update(name for name, found in (("labelme", labelme), ("yolo", yolo), ("voc", voc)) if found)
        for stem in sorted(set(images) | set(labelme)):
            image_path = images.get(stem)
            if image_path is None and stem in unlisted_images:
                continue
            try:
                sample, note = _make_sample(stem, image_path, labelme.get(stem), yolo.get(stem), voc.get(stem), split, check_pixels)
            except (LabelError, ImageError) as error:
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
            f"{root}: no usable image found (expected images/ with labels/*.json, "
            f"or train/ val/ test/ folders holding them){reasons}"
        )
    has_splits = split_folders[0][0] is not None
    return Dataset(str(root), samples, skipped, notes, "+".join(sorted(layouts)) or "images only", has_splits)


def _make_sample(stem, image_path, labelme_path, yolo_path, voc_path, split, check_pixels) -> tuple[Sample, str]:
    embedded = False
    note = ""
    labelme_data: dict = {}
    boxes: list[Box] = []
    claimed_size = None
    label_path = labelme_path or voc_path or yolo_path
    if labelme_path is not None:
        boxes, claimed_size, labelme_data = _read_labelme(labelme_path)
        image_ref = labelme_data.get("imagePath")
        if image_path is None:
            if labelme_data.get("imageData"):
                embedded = True
            else:
                raise LabelError("label without an image (no image file of that name and no imageData)")
        elif isinstance(image_ref, str) and image_ref:
            referenced = os.path.basename(image_ref.replace("\\", "/"))
            if os.path.splitext(referenced)[0] != stem:
                raise LabelError(f"its imagePath names {referenced!r}, not {image_path.name!r}")
    elif voc_path is not None:
        boxes, claimed_size = _read_voc(voc_path)

    pixels_source = base64.b64decode(labelme_data["imageData"]) if embedded else image_path
    try:
        width, height = image_size(pixels_source)
        if check_pixels:
            read_image(pixels_source, max_side=256)
    except (ValueError, TypeError) as error:
        if embedded and not isinstance(error, ImageError):
            raise LabelError("its imageData is not a base64 image") from None
        raise
    if yolo_path is not None and labelme_path is None and voc_path is None:
        boxes = _read_yolo(yolo_path, width, height)
    if claimed_size and boxes and claimed_size != (width, height):
        raise LabelError(
            f"the label is for a {claimed_size[0]}x{claimed_size[1]} image but the image is "
            f"{width}x{height}; relabel it or fix imageWidth/imageHeight"
        )
    box = None
    if boxes:
        if len(boxes) > 1:
            note = f"{len(boxes)} faces labelled, kept the largest"
        box = _normalise(_largest(boxes), width, height)
    return Sample(str(labelme_path if embedded else image_path), box, split, str(label_path) if label_path else None, embedded), note


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


def split_manifest(samples: list[Sample]) -> dict[str, list[str]]:
    return {split: [s.image for s in samples if s.split == split] for split in SPLITS}
