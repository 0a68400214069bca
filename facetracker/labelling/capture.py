"""Collect training images from a camera: save a frame into a dataset folder, pre-labelled.

The original workflow took photos with a webcam and drew boxes in labelme. Here each frame is saved
as a JPEG in the dataset's `images/` with a labelme file in `labels/` whose boxes come from a
pre-labelling detector (see `facetracker.labelling.prelabel`); the person then corrects the box or marks the
frame as holding no face, which rewrites the label. A frame known to hold no face may be saved
without a label file, which is what a no-face sample is (see `facetracker.labelling.recording`).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from facetracker.boxes import PixelBox
from facetracker.config.jsonconfig import parse_json
from facetracker.data.datasets import SPLITS, OutsideRoot, real_path_inside
from facetracker.data.labelme import labelme_faces_json, labelme_json
from facetracker.io import atomic

JPEG_QUALITY = 92



@dataclasses.dataclass(frozen=True)
class Capture:
    image: Path
    label: Path | None
    """None when no label file was written: the image then counts as a no-face sample."""
    width: int
    height: int
    box: PixelBox | None
    """The (first) face box in pixels as saved, or None for a no-face sample."""
    boxes: tuple[PixelBox, ...] = ()
    """Every face box saved in the label."""


def capture_folder(dataset: str | Path, split: str | None = None) -> Path:
    """Where captures go: the dataset folder, or its `train/` when the dataset is split into folders.

    A split dataset ignores images outside its split folders, so a capture must land in one.
    """
    dataset = Path(dataset)
    if split is None and any((dataset / s / "images").is_dir() or (dataset / s / "labels").is_dir() for s in SPLITS):
        split = "train"
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return dataset / split if split else dataset


def clip_box(box, width: int, height: int) -> PixelBox | None:
    """The box in whole pixels inside a width x height image, corners in order; None stays None.
    Raises ValueError for a box with (almost) no area."""
    if box is None:
        return None
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = sorted((min(max(x0, 0), width), min(max(x1, 0), width)))
    y0, y1 = sorted((min(max(y0, 0), height), min(max(y1, 0), height)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"the face box ({x0}, {y0}, {x1}, {y1}) is empty; draw it larger or mark 'no face'")
    return (x0, y0, x1, y1)


def _inside(path: Path, root: str | Path | None, what: str) -> Path:
    """`path` with its links followed, refused (ValueError) when that leaves the root; unchanged without one."""
    try:
        return real_path_inside(path, root)
    except OutsideRoot:
        raise ValueError(f"{path}: {what} links outside the data root; nothing was written there") from None


def save_capture(dataset: str | Path, frame_bgr: np.ndarray, box: PixelBox | None, *, split: str | None = None,
                 source: str = "camera", prefix: str = "capture", root: str | Path | None = None) -> Capture:
    """Save a BGR frame as `images/<name>.jpg` with `labels/<name>.json` (one face box or none).

    With a `root` (the app's data root), folders whose real path leaves it are refused before
    anything is created or written, and the files are written into the real (resolved) folders.
    """
    name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return save_frame(dataset, frame_bgr, [] if box is None else [box], name, split=split, source=source, root=root)


def save_frame(dataset: str | Path, frame_bgr: np.ndarray, boxes: list[PixelBox] | None, name: str, *,
               split: str | None = None, source: str = "camera", root: str | Path | None = None) -> Capture:
    """Save a BGR frame as `images/<name>.jpg`, with `labels/<name>.json` holding a face rectangle per
    box (none for an empty list), or with no label file at all when `boxes` is None (a no-face sample).

    Both files are written atomically; a name already taken by an image or a label raises
    FileExistsError, so nothing is ever replaced. Folders are checked against `root` as in
    `save_capture`.
    """
    if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or min(frame_bgr.shape[:2]) < 8:
        raise ValueError("the frame is not a colour image (expected height x width x 3 pixels)")
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"{name!r} cannot name a photo: use a plain file name without folders")
    folder = capture_folder(dataset, split)
    images, labels = folder / "images", folder / "labels"
    # Checked before mkdir too: mkdir(parents=True) under a linked folder would create folders outside.
    for path, what in ((folder, "the dataset folder"), (images, "its images folder"), (labels, "its labels folder")):
        _inside(path, root, what)
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    # Written into the resolved folders (checked again now that they exist); the final rename of
    # an atomic write replaces a link of that name rather than writing through it.
    images, labels = _inside(images, root, "its images folder"), _inside(labels, root, "its labels folder")
    height, width = frame_bgr.shape[:2]
    clipped = None if boxes is None else tuple(clip_box(box, width, height) for box in boxes)
    image_path, label_path = images / f"{name}.jpg", labels / f"{name}.json"
    taken = [path for path in (image_path, label_path) if path.exists() or path.is_symlink()]
    if taken:
        raise FileExistsError(f"{taken[0]} already exists; nothing was replaced")
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(frame_bgr), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("could not encode the frame as JPEG")
    if clipped is None:
        atomic.write_bytes(image_path, encoded.tobytes())
    else:
        faces = [(box, f"pre-label: {source}") for box in clipped]
        _write_pair(image_path, encoded.tobytes(), label_path,
                    labelme_faces_json(f"../images/{image_path.name}", width, height, faces))
    return Capture(image_path, label_path if clipped is not None else None, width, height,
                   clipped[0] if clipped else None, clipped or ())


def _write_pair(image_path: Path, image: bytes, label_path: Path, label: str) -> None:
    """A photo and its label, both or neither. The photo's bytes go to disk first (a hidden temporary
    file), then the label, then the photo takes its name; a write that fails removes what was
    written of the pair. An image without its label would read as a no-face sample, so a kill
    between the last two steps leaves the label and the complete temporary photo, which
    `finish_interrupted_writes` puts in place."""
    staged = atomic.stage_bytes(image_path, image)
    try:
        atomic.write_text(label_path, label)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    try:
        os.replace(staged, image_path)
    except BaseException as error:
        label_path.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(image_path)) from None
        raise


def finish_interrupted_writes(dataset: str | Path, *, root: str | Path | None = None) -> dict[str, int]:
    """Tidy what writers killed mid-write (kill -9, a crash, a power cut) left in a dataset's
    images/ and labels/ folders, its split folders' too: the hidden temporary files of processes
    that no longer run are removed, except a photo whose label was written (see `_write_pair`),
    which gets its name. Temporary files of live writers are left alone. Returns how many files
    were removed and how many photos put in place."""
    done = {"removed": 0, "completed": 0}
    dataset = Path(dataset)
    for folder in [dataset, *(dataset / split for split in SPLITS)]:
        images, labels = folder / "images", folder / "labels"
        try:
            images, labels = _inside(images, root, "its images folder"), _inside(labels, root, "its labels folder")
        except ValueError:
            continue
        for temp, target in atomic.dead_temps(images):
            photo = images / target
            staged_by_this_app = atomic.temp_target(temp)[1] is not None  # older names: a half-written photo
            if (staged_by_this_app and (labels / f"{Path(target).stem}.json").is_file()
                    and not (photo.exists() or photo.is_symlink())):
                os.replace(temp, photo)
                done["completed"] += 1
            else:
                temp.unlink(missing_ok=True)
                done["removed"] += 1
        for temp, _ in atomic.dead_temps(labels):
            temp.unlink(missing_ok=True)
            done["removed"] += 1
    return done


def relabel(label_path: str | Path, box: PixelBox | None, note: str = "corrected by hand", *,
            root: str | Path | None = None) -> Capture:
    """Rewrite a capture's label with a corrected box, or none to mark the image as holding no face.

    With a `root`, a label, or an image it names, whose real path leaves the root is refused
    before anything is read or written.
    """
    label_path = _inside(Path(label_path), root, "the label")
    try:
        data = parse_json(label_path.read_text(encoding="utf-8"))
        width, height, image_ref = data["imageWidth"], data["imageHeight"], data["imagePath"]
        if not (isinstance(image_ref, str) and all(type(v) is int and 0 < v <= 100_000 for v in (width, height))):
            raise ValueError("imageWidth, imageHeight or imagePath is missing or of the wrong kind")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{label_path}: not a label this app wrote ({error})") from None
    image_path = _inside(label_path.parent / image_ref, root, "the image its label names")
    box = clip_box(box, width, height)
    atomic.write_text(label_path, labelme_json(image_ref, width, height, box, note))
    return Capture(image_path if root is not None else image_path.resolve(), label_path, width, height, box)


def discard(capture: Capture, *, root: str | Path | None = None) -> None:
    """Delete a capture the person does not want (image first: a lone label is merely skipped).

    With a `root`, files whose real path leaves it are refused and nothing is deleted."""
    image = _inside(capture.image, root, "the photo")
    label = None if capture.label is None else _inside(capture.label, root, "the label")
    image.unlink(missing_ok=True)
    if label is not None:
        label.unlink(missing_ok=True)
