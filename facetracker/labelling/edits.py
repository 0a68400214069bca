"""Changing one photo of a dataset so that nothing is lost: delete it, mark it as holding no face, or
set its face box; and undo any of these.

Every change first puts what it replaces into the dataset's `.deleted/` folder, one entry per change:

    <dataset>/.deleted/<date>-<time>-<code>/action.json    what was done, to which photo, when
    <dataset>/.deleted/<date>-<time>-<code>/files/<path>    each file as it was, at its path in the dataset

Deleting a photo moves it there with its label files; marking it "no face" moves its label files
there (a photo without a label is a no-face photo); setting its box keeps a copy of the label it
rewrites (in the label's own format: labelme, YOLO or Pascal VOC) and notes the label it writes.
`restore` puts an entry's files back, first moving whatever stands in their place (the rewritten
label, say) into an entry of its own. Reading a dataset passes over folders whose name starts with
a dot, so what was set aside is out of the dataset and out of training until it is restored.

A COCO file holds every photo's boxes in one file: its photos are refused here, with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath

from facetracker.boxes import PixelBox
from facetracker.config.jsonconfig import parse_json
from facetracker.data import datasets as data_lib
from facetracker.data.formats import voc_xml
from facetracker.data.images import sample_pixels
from facetracker.data.labelme import labelme_faces_json
from facetracker.data.labels import FACE_LABELS
from facetracker.io import atomic
from facetracker.labelling.capture import clip_box

TRASH = ".deleted"
"""The folder inside a dataset that holds what was set aside (its leading dot keeps it out of the dataset)."""
MANIFEST = "action.json"
KEPT = "files"

DELETED = "deleted"
NO_FACE = "marked as no face"
BOX_SET = "box set by hand"
REPLACED = "replaced when an earlier version was restored"

LABEL_PLACES = (("labels", ".json"), ("labels", ".txt"), ("labels", ".xml"), ("annotations", ".xml"))
"""Where `load_dataset` looks for a photo's label, beside its images/ folder (and labelme beside the photo)."""


class CannotEdit(ValueError):
    """A change that cannot be made; the message names the file and says why. Nothing was changed."""


@dataclasses.dataclass(frozen=True)
class SetAside:
    """One entry of a dataset's `.deleted/` folder: one change, and the files it set aside."""

    entry: Path
    action: str
    photo: str
    """The photo changed, relative to the dataset folder."""
    kept: tuple[str, ...]
    """The files kept in the entry, relative to the dataset folder (where `restore` puts them back)."""
    written: tuple[str, ...]
    """Files the change wrote, relative to the dataset folder (`restore` sets them aside in turn)."""
    at: float
    """When, in seconds since the epoch."""

    @property
    def name(self) -> str:
        return self.entry.name

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        files = ", ".join(self.kept) if self.kept else "no file"
        return f"{self.photo}: {self.action} on {when} (kept: {files})"


@dataclasses.dataclass(frozen=True)
class Restored:
    restored: tuple[str, ...]
    """Files put back, relative to the dataset folder."""
    replaced: SetAside | None
    """The entry that took the files which stood in their place, if any."""


# ----------------------------------------------------------------------------------------------
# The three changes


def label_files(dataset: str | Path, sample: data_lib.Sample) -> list[Path]:
    """Every label file `load_dataset` could pair with the sample's photo (its own label first), that
    exists. A labelme file that holds its photo (imageData) is the photo itself: none."""
    if sample.embedded:
        return []
    image = Path(sample.image)
    base = _base(dataset, sample)
    places = [Path(sample.label)] if sample.label else []
    places += [base / folder / f"{image.stem}{suffix}" for folder, suffix in LABEL_PLACES]
    places.append(image.parent / f"{image.stem}.json")
    found: list[Path] = []
    seen: set[str] = set()
    for path in places:
        key = os.path.join(os.path.realpath(path.parent), path.name)
        if key not in seen and (path.exists() or path.is_symlink()):
            seen.add(key)
            found.append(path)
    return found


def delete_photo(dataset: str | Path, sample: data_lib.Sample, *, root: str | Path | None = None) -> SetAside:
    """Move the photo and its label files into a new entry of the dataset's `.deleted/` folder."""
    _refuse_shared_label(sample)
    image = Path(sample.image)
    files = [image] + [path for path in label_files(dataset, sample) if path != image]
    return _set_aside(dataset, DELETED, image, files, root=root)


def mark_no_face(dataset: str | Path, sample: data_lib.Sample, *, root: str | Path | None = None) -> SetAside:
    """Move the photo's label files into a new entry of `.deleted/`: without a label it is a no-face photo."""
    _refuse_shared_label(sample)
    name = Path(sample.image).name
    if sample.embedded:
        raise CannotEdit(f"{sample.image}: this photo is stored inside its labelme file (imageData), so its label "
                         "cannot be set aside without it; delete it instead")
    labels = label_files(dataset, sample)
    if not labels:
        raise CannotEdit(f"{name} is a no-face photo already: it has no label file")
    return _set_aside(dataset, NO_FACE, Path(sample.image), labels, root=root)


def set_face_box(dataset: str | Path, sample: data_lib.Sample, box: PixelBox, *, root: str | Path | None = None,
                 note: str = "corrected by hand") -> SetAside:
    """Make `box` (pixel corners on the upright photo) the photo's largest face box, keeping its other
    faces; a photo without a label gets one in the dataset's label format. The label as it was is
    kept in a new entry of `.deleted/`."""
    _refuse_shared_label(sample)
    image = Path(sample.image)
    try:
        if sample.embedded:
            height, width = sample_pixels(sample).shape[:2]
        else:
            width, height = data_lib.image_size(image, root=root)
    except (ValueError, OSError) as error:
        raise CannotEdit(f"{image}: cannot read the photo ({_reason(error)})") from None
    try:
        box = clip_box(box, width, height)
    except ValueError as error:
        raise CannotEdit(f"{image.name}: {error}") from None
    label = Path(sample.label) if sample.label else new_label_path(dataset, sample)
    exists = label.exists() or label.is_symlink()
    _inside_root(label, root, "its label")
    if exists:
        content = _rewritten(label, box, width, height, note, root)
    else:
        content = _new_label(label, image, box, width, height, note)
    dataset_real = _real(dataset)
    rel = _relative(dataset_real, label)
    entry = _new_entry(dataset_real, BOX_SET, _relative(dataset_real, image), kept=[rel] if exists else [],
                       written=[rel])
    try:
        if exists:
            copy = entry.entry / KEPT / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(label, copy)
        label.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(label, content)
    except OSError as error:
        _remove_entry(entry.entry)
        raise CannotEdit(f"{label}: cannot write it ({_reason(error)}); nothing was changed") from None
    return entry


def new_label_path(dataset: str | Path, sample: data_lib.Sample) -> Path:
    """Where a photo without a label gets one: beside the dataset's other labels, in their format
    (labelme in labels/ or beside the photos, YOLO .txt in labels/, Pascal VOC .xml in annotations/
    or labels/); labelme in labels/ for a dataset without labels."""
    image = Path(sample.image)
    base = _base(dataset, sample)
    photo_stems = {p.stem for p in _listing(image.parent) if p.suffix.lower() in data_lib.IMAGE_EXTENSIONS}

    def holds(folder: Path, suffix: str, beside_photos: bool = False) -> bool:
        return any(p.suffix.lower() == suffix and (not beside_photos or p.stem in photo_stems)
                   for p in _listing(folder))

    labels = base / "labels"
    if holds(labels, ".json"):
        return labels / f"{image.stem}.json"
    if image.parent != labels and holds(image.parent, ".json", beside_photos=True):
        return image.parent / f"{image.stem}.json"
    if holds(labels, ".txt"):
        return labels / f"{image.stem}.txt"
    for folder in (base / "annotations", labels):
        if holds(folder, ".xml"):
            return folder / f"{image.stem}.xml"
    return labels / f"{image.stem}.json"


# ----------------------------------------------------------------------------------------------
# Undoing them


def set_aside_entries(dataset: str | Path) -> list[SetAside]:
    """The entries of the dataset's `.deleted/` folder, newest first."""
    trash = Path(dataset) / TRASH
    entries = [_read_entry(path) for path in _listing(trash) if path.is_dir() and not path.name.startswith(".")]
    return sorted(entries, key=lambda entry: (entry.at, entry.name), reverse=True)


def restore(dataset: str | Path, entry: str, *, root: str | Path | None = None) -> Restored:
    """Put the files of one `.deleted/` entry back where they were. Files standing in their place now
    (and files the change wrote) are first moved into an entry of their own, so a restore loses nothing
    either. The emptied entry is removed."""
    if not entry or Path(entry).name != entry or entry.startswith("."):
        raise CannotEdit(f"{entry!r} names no entry of {TRASH}/")
    dataset_real = _real(dataset)
    folder = dataset_real / TRASH / entry
    if not folder.is_dir():
        raise CannotEdit(f"{folder}: no such entry (restored already?)")
    aside = _read_entry(folder)
    for rel in aside.kept:
        _inside_root((dataset_real / rel).parent, root, "its folder")
    in_place = [rel for rel in dict.fromkeys(aside.kept + aside.written)
                if (dataset_real / rel).exists() or (dataset_real / rel).is_symlink()]
    replaced = None
    if in_place:
        replaced = _set_aside(dataset_real, REPLACED, dataset_real / aside.photo,
                              [dataset_real / rel for rel in in_place], root=root)
    back: list[str] = []
    try:
        for rel in aside.kept:
            target = dataset_real / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder / KEPT / rel, target)
            back.append(rel)
    except OSError as error:
        raise CannotEdit(f"{dataset_real / rel}: cannot put it back ({_reason(error)}); restored so far: "
                         f"{', '.join(back) or 'nothing'}; the rest stays in {folder}") from None
    _remove_entry(folder)
    return Restored(tuple(back), replaced)


# ----------------------------------------------------------------------------------------------
# Helpers


def _base(dataset: str | Path, sample: data_lib.Sample) -> Path:
    """The folder holding the sample's images/ and labels/: its split folder, or the dataset's."""
    split = Path(dataset) / sample.split if sample.split else None
    return split if split is not None and split.is_dir() else Path(dataset)


def _listing(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder) if not entry.name.startswith(".")]
    except OSError:
        return []


def _refuse_shared_label(sample: data_lib.Sample) -> None:
    if sample.label and not sample.embedded and Path(sample.label).stem.lower() != Path(sample.image).stem.lower():
        raise CannotEdit(f"{Path(sample.image).name}: its boxes are in {Path(sample.label).name}, which holds the "
                         "boxes of other photos too (COCO); change them with your labelling tool: the app rewrites "
                         "only a photo's own label file")


def _real(dataset: str | Path) -> Path:
    real = Path(os.path.realpath(dataset))
    if not real.is_dir():
        raise CannotEdit(f"{dataset}: no such dataset folder")
    return real


def _relative(dataset_real: Path, path: Path) -> str:
    """`path` relative to the dataset (its folder's links followed, not the file's: a link is moved as a link)."""
    located = Path(os.path.realpath(path.parent)) / path.name
    try:
        return PurePosixPath(located.relative_to(dataset_real)).as_posix()
    except ValueError:
        raise CannotEdit(f"{path}: not inside the dataset folder {dataset_real}; nothing was changed") from None


def _inside_root(path: Path, root: str | Path | None, what: str) -> None:
    try:
        data_lib.real_path_inside(path, root)
    except data_lib.OutsideRoot:
        raise CannotEdit(f"{path}: {what} links outside the data root; nothing was changed") from None


def _reason(error: BaseException) -> str:
    return (error.strerror or str(error)) if isinstance(error, OSError) else str(error)


def _trash(dataset_real: Path) -> Path:
    trash = dataset_real / TRASH
    try:
        trash.mkdir(exist_ok=True)
    except OSError as error:
        raise CannotEdit(f"{trash}: cannot make it ({_reason(error)}); nothing was changed") from None
    if os.path.realpath(trash) != str(trash) or not trash.is_dir():
        raise CannotEdit(f"{trash}: not a folder of this dataset (a link, or a file); nothing was changed")
    return trash


def _new_entry(dataset_real: Path, action: str, photo: str, kept: list[str], written: list[str]) -> SetAside:
    at = time.time()
    folder = _trash(dataset_real) / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(at))}-{uuid.uuid4().hex[:6]}"
    try:
        folder.mkdir()
        atomic.write_text(folder / MANIFEST, json.dumps({"action": action, "photo": photo, "kept": kept,
                                                         "written": written, "at": at}, indent=1))
    except OSError as error:
        _remove_entry(folder)
        raise CannotEdit(f"{folder}: cannot write it ({_reason(error)}); nothing was changed") from None
    return SetAside(folder, action, photo, tuple(kept), tuple(written), at)


def _set_aside(dataset: str | Path, action: str, photo: Path, files: list[Path], *,
               root: str | Path | None) -> SetAside:
    """Move `files` (of the dataset) into a new entry; all of them or, after a failure, none."""
    dataset_real = _real(dataset)
    for path in files:
        _inside_root(path, root, "the file")
    rels = [_relative(dataset_real, path) for path in files]
    entry = _new_entry(dataset_real, action, _relative(dataset_real, photo), kept=rels, written=[])
    moved: list[tuple[Path, Path]] = []
    try:
        for rel in rels:
            source, target = dataset_real / rel, entry.entry / KEPT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)
            moved.append((source, target))
    except OSError as error:
        for source, target in reversed(moved):
            os.rename(target, source)
        _remove_entry(entry.entry)
        raise CannotEdit(f"{dataset_real / rel}: cannot move it into {TRASH}/ ({_reason(error)}); nothing was "
                         "changed") from None
    return entry


def _remove_entry(folder: Path) -> None:
    """Remove an entry's manifest and its empty folders; a file still inside stays, and so does its folder."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [folder]:
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:
                pass


def _read_entry(folder: Path) -> SetAside:
    kept_root = folder / KEPT
    kept = sorted(PurePosixPath(p.relative_to(kept_root)).as_posix() for p in kept_root.rglob("*")
                  if p.is_file() or p.is_symlink())
    try:
        manifest = parse_json((folder / MANIFEST).read_text(encoding="utf-8"))
        action, photo, at = manifest["action"], manifest["photo"], float(manifest["at"])
        written = tuple(str(rel) for rel in manifest.get("written", ()) if _plain_relative(str(rel)))
        if not (isinstance(action, str) and isinstance(photo, str) and _plain_relative(photo)):
            raise TypeError("action and photo must be text, the photo a path inside the dataset")
    except (OSError, ValueError, KeyError, TypeError):  # a manifest lost or damaged: the files still tell
        action, photo, written = "set aside", kept[0] if kept else folder.name, ()
        try:
            at = folder.stat().st_mtime
        except OSError:
            at = 0.0
    return SetAside(folder, action, photo, tuple(kept), written, at)


def _plain_relative(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts


# ----------------------------------------------------------------------------------------------
# Label formats


def _area(box) -> float:
    x0, y0, x1, y1 = box
    return abs(x1 - x0) * abs(y1 - y0)


def _largest(boxes: dict[int, tuple[float, float, float, float]]) -> int | None:
    return max(boxes, key=lambda index: _area(boxes[index])) if boxes else None


def _rewritten(label: Path, box: PixelBox, width: int, height: int, note: str, root: str | Path | None) -> str:
    """The label's text with its largest face box replaced by `box` (or `box` added), all else kept."""
    try:
        text = data_lib.real_path_inside(label, root).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CannotEdit(f"{label}: cannot read it ({_reason(error)})") from None
    suffix = label.suffix.lower()
    if suffix == ".json":
        return _labelme(label, text, box, width, height, note)
    if suffix == ".txt":
        return _yolo(text, box, width, height)
    if suffix == ".xml":
        return _voc(label, text, box, width, height)
    raise CannotEdit(f"{label}: not a label format the app writes (labelme .json, YOLO .txt, Pascal VOC .xml)")


def _labelme(label: Path, text: str, box: PixelBox, width: int, height: int, note: str) -> str:
    try:
        data = parse_json(text)
    except ValueError as error:
        raise CannotEdit(f"{label}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise CannotEdit(f"{label}: not a labelme file (no 'shapes' list)")
    shapes = data["shapes"]
    faces = {}
    for index, shape in enumerate(shapes):
        if isinstance(shape, dict) and str(shape.get("label", "")).lower() in FACE_LABELS:
            try:
                (x0, y0), (x1, y1) = shape["points"]
                faces[index] = (float(x0), float(y0), float(x1), float(y1))
            except (KeyError, TypeError, ValueError):
                faces[index] = (0.0, 0.0, 0.0, 0.0)
    x0, y0, x1, y1 = (float(v) for v in box)
    new = {"points": [[x0, y0], [x1, y1]], "shape_type": "rectangle", "description": note}
    chosen = _largest(faces)
    if chosen is None:
        shapes.insert(0, {"label": "face", "group_id": None, "flags": {}, "mask": None, **new})
    else:
        shapes[chosen] = {**shapes[chosen], **new}
    data["imageWidth"], data["imageHeight"] = int(width), int(height)  # the box is in the photo's own pixels
    return json.dumps(data, indent=1, ensure_ascii=False)


def _yolo_line(box: PixelBox, width: int, height: int) -> str:
    x0, y0, x1, y1 = box
    centre_x, centre_y = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    return f"0 {centre_x:.6f} {centre_y:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"


def _yolo(text: str, box: PixelBox, width: int, height: int) -> str:
    lines = text.splitlines()
    faces = {}
    for index, line in enumerate(lines):
        fields = line.split()
        try:
            if fields and int(fields[0]) == 0:
                values = [float(v) for v in fields[1:]]
                if len(values) == 4:
                    faces[index] = (0.0, 0.0, values[2], values[3])
                elif len(values) >= 6:
                    faces[index] = (min(values[0::2]), min(values[1::2]), max(values[0::2]), max(values[1::2]))
        except ValueError:
            continue
    chosen = _largest(faces)
    if chosen is None:
        lines.insert(0, _yolo_line(box, width, height))
    else:
        lines[chosen] = _yolo_line(box, width, height)
    return "".join(line + "\n" for line in lines)


def _voc(label: Path, text: str, box: PixelBox, width: int, height: int) -> str:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise CannotEdit(f"{label}: not valid XML ({error})") from None
    if root.tag != "annotation":
        raise CannotEdit(f"{label}: not a Pascal VOC file (no <annotation>)")
    faces = {}
    objects = [obj for obj in root.iter("object") if (obj.findtext("name") or "").strip().lower()
               in FACE_LABELS]
    for index, obj in enumerate(objects):
        try:
            faces[index] = tuple(float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            faces[index] = (0.0, 0.0, 0.0, 0.0)
    chosen = _largest(faces)
    if chosen is None:
        made = ElementTree.fromstring(voc_xml("photo", width, height, [box])).find("object")
        root.append(made)
    else:
        bndbox = objects[chosen].find("bndbox")
        if bndbox is None:
            bndbox = ElementTree.SubElement(objects[chosen], "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            element = bndbox.find(key)
            if element is None:
                element = ElementTree.SubElement(bndbox, key)
            element.text = str(int(value))
    size = root.find("size")
    if size is None:
        size = ElementTree.SubElement(root, "size")
    for key, value in (("width", width), ("height", height)):
        element = size.find(key)
        if element is None:
            element = ElementTree.SubElement(size, key)
        element.text = str(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def _new_label(label: Path, image: Path, box: PixelBox, width: int, height: int, note: str) -> str:
    suffix = label.suffix.lower()
    if suffix == ".txt":
        return _yolo_line(box, width, height) + "\n"
    if suffix == ".xml":
        return voc_xml(image.name, width, height, [box], folder=image.parent.name)
    return labelme_faces_json(os.path.relpath(image, label.parent).replace(os.sep, "/"), width, height, [(box, note)])
