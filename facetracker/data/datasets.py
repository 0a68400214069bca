"""Loading a dataset folder: labelme, Pascal VOC, YOLO and COCO labels, with or without train/val/test
splits; assigning splits. Reading one image (`images`), one label file (`labels`, `coco`) and a file
inside the data root (`files`) live beside this module.

A dataset is a list of `Sample`s: an image and, where it holds a face, one box normalised to the
image's real size as `[x_min, y_min, x_max, y_max]` in [0, 1]. Everything that cannot be used is
skipped with a `Skipped(path, reason)` so that the caller can print one line per file.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

from facetracker.boxes import Box
from facetracker.data.coco import find_coco, load_coco
from facetracker.data.files import (
    DatasetError,
    ImageError,
    LabelError,
    OutsideRoot,
    not_regular,
    printable,
    real_path_inside,
)
from facetracker.data.images import (
    IMAGE_EXTENSIONS,
    decode_image_data,
    image_size,
    read_image,
)
from facetracker.data.labels import (
    area,
    normalise,
    read_labelme,
    read_voc,
    read_yolo,
    shown,
)
from facetracker.data.samples import SPLITS, Dataset, Sample, Skipped

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
            refuse(entry, not_regular(mode))
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
        boxes, claimed_size, labelme_data = read_labelme(labelme_path, root)
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
                raise LabelError(f"its imagePath names {shown(referenced, 80)}, not {image_path.name!r}")
    elif voc_path is not None:
        boxes, claimed_size = read_voc(voc_path, root)

    pixels_source = decode_image_data(labelme_data.get("imageData")) if embedded else image_path
    try:
        width, height = image_size(pixels_source, root=root)
        if check_pixels:
            read_image(pixels_source, max_side=256, root=root)
    except (ValueError, TypeError) as error:
        if embedded and not isinstance(error, ImageError):
            raise LabelError("its imageData is not a base64 image") from None
        raise
    if yolo_path is not None and labelme_path is None and voc_path is None:
        boxes, note = read_yolo(yolo_path, width, height, root)
    if claimed_size and boxes and claimed_size != (width, height):
        raise LabelError(
            f"the label is for a {claimed_size[0]}x{claimed_size[1]} image but the image is "
            f"{width}x{height}; relabel it or fix imageWidth/imageHeight"
        )
    faces = tuple(normalise(b, width, height) for b in sorted(boxes, key=area, reverse=True))
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
