"""COCO files: a folder's annotations/*.json, instances*.json or Roboflow's _annotations.coco.json."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable

from facetracker.boxes import Box
from facetracker.data.files import DatasetError, ImageError, LabelError, OutsideRoot
from facetracker.data.images import IMAGE_EXTENSIONS, image_size, read_image
from facetracker.data.labels import (
    FACE_LABELS,
    area,
    label_number,
    label_side,
    normalise,
    parse_label_json,
    shown,
)
from facetracker.data.samples import Dataset, Sample, Skipped

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
            parsed: object = parse_label_json(path, root)
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
    return f"{kind}[{index}]" + (f" (id {shown(ident)})" if ident is not None else "")


def _coco_box(annotation: dict) -> Box:
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise LabelError(f"its bbox is {shown(bbox)}, not [x, y, width, height]")
    x, y, width, height = (label_number(v, f"bbox[{i}]") for i, v in enumerate(bbox))
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
                raise LabelError(f"its id is {shown(ident)}, not a number or a text")
            file_name = image.get("file_name")
            if not isinstance(file_name, str) or not file_name.strip():
                raise LabelError(f"its file_name is {shown(file_name)}, not a file name")
            parts = file_name.replace("\\", "/").split("/")
            if file_name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", file_name):
                raise LabelError(f"its file_name {shown(file_name)} leads outside the dataset folder")
            claimed = None
            if image.get("width") is not None or image.get("height") is not None:
                claimed = (label_side(image.get("width"), "width"), label_side(image.get("height"), "height"))
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
        skipped.append(Skipped(where, f"its 'annotations' is {shown(annotations)}, not a list; "
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
            skipped.append(Skipped(where, f"{name}: its image_id {shown(image_id)} names no image "
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
    what = f"{image.entry} ({shown(image.file_name, 80)})"
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
        faces = tuple(normalise(b, width, height)
                      for b in sorted(image.boxes, key=area, reverse=True))
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
