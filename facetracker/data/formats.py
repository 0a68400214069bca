"""Datasets out in the field's formats: COCO, YOLO and Pascal VOC.

(Reading them, COCO files included, is `datasets.load_dataset`'s job.) `export_dataset` writes a dataset folder (any layout `load_dataset` reads) as

    coco  annotations/instances_<split>.json, the photos in <split>/          (as COCO 2017 lays them out)
    yolo  <split>/images/, <split>/labels/<photo>.txt (class 0 = face), data.yaml  (Ultralytics)
    voc   <split>/images/, <split>/annotations/<photo>.xml

with the dataset's split folders kept (`images` stands for the split in a folder without them). A
no-face photo is a COCO image without annotations, an empty YOLO .txt and a VOC file without an
<object>. Each layout reads back with `load_dataset` to the same photos and boxes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path
from typing import Callable

from facetracker.boxes import Box
from facetracker.data import datasets as data_lib
from facetracker.data.datasets import Sample, Skipped
from facetracker.data.files import open_regular
from facetracker.data.images import embedded_bytes

FORMATS = ("coco", "yolo", "voc")
COCO_CATEGORY = {"id": 1, "name": "face", "supercategory": "face"}

Progress = Callable[[int, int], None]


# ----------------------------------------------------------------------------------------------
# Out


@dataclasses.dataclass
class ExportResult:
    out: Path
    format: str
    images: int = 0
    faces: int = 0
    no_face: int = 0
    splits: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{self.images} photos ({self.images - self.no_face} with faces, {self.no_face} without), "
                 f"{self.faces} faces"]
        if len(self.splits) > 1 or "images" not in self.splits:
            parts.append("split " + " / ".join(f"{k} {v}" for k, v in self.splits.items()))
        parts.append(f"{len(self.skipped)} skipped")
        return f"{self.format} -> {self.out}: " + ", ".join(parts)


def _pixel(value: float) -> float:
    return round(float(value), 2)


def _written_name(sample: Sample) -> tuple[str, bytes | None]:
    """The photo's file name in the export, and its bytes when they come from a label's imageData."""
    if not sample.embedded:
        return Path(sample.image).name, None
    content = embedded_bytes(Path(sample.image), sample.root)
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        kind = (image.format or "png").lower()
    return f"{Path(sample.image).stem}.{'jpg' if kind == 'jpeg' else kind}", content


class _Writer:
    """Collects the photos of one export and writes its label files at the end."""

    def __init__(self, staging: Path, fmt: str, has_splits: bool):
        self.staging, self.fmt, self.has_splits = staging, fmt, has_splits
        self.coco: dict[str, dict] = {}

    def photo_folder(self, group: str) -> Path:
        if self.fmt == "coco":
            return self.staging / group
        return self.staging / group / "images" if self.has_splits else self.staging / "images"

    def add(self, group: str, name: str, width: int, height: int, faces: list[Box]) -> None:
        if self.fmt == "coco":
            coco = self.coco.setdefault(group, {"images": [], "annotations": []})
            image_id = len(coco["images"]) + 1
            coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
            for x0, y0, x1, y1 in faces:
                box = [_pixel(x0), _pixel(y0), _pixel(x1 - x0), _pixel(y1 - y0)]
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                            "category_id": COCO_CATEGORY["id"], "bbox": box,
                                            "area": round(box[2] * box[3], 2), "iscrowd": 0, "segmentation": []})
            return
        base = self.staging / group if self.has_splits else self.staging
        stem = Path(name).stem
        if self.fmt == "yolo":
            lines = [f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} "
                     f"{(y1 - y0) / height:.6f}" for x0, y0, x1, y1 in faces]
            target = base / "labels" / f"{stem}.txt"
            text = "".join(line + "\n" for line in lines)
        else:
            target = base / "annotations" / f"{stem}.xml"
            text = voc_xml(name, width, height, faces, folder=self.photo_folder(group).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def finish(self, groups: list[str]) -> None:
        if self.fmt == "coco":
            (self.staging / "annotations").mkdir(exist_ok=True)
            for group, coco in self.coco.items():
                name = f"instances_{group}.json" if self.has_splits else "instances.json"
                content = {"info": {"description": "faces, exported by FaceTracker", "version": "1.0",
                                    "date_created": time.strftime("%Y-%m-%d")},
                           "licenses": [], "categories": [COCO_CATEGORY], **coco}
                (self.staging / "annotations" / name).write_text(json.dumps(content), encoding="utf-8")
        elif self.fmt == "yolo":
            (self.staging / "data.yaml").write_text(yolo_yaml(groups, self.has_splits), encoding="utf-8")


def voc_xml(file_name: str, width: int, height: int, faces: list[Box], folder: str = "images") -> str:
    """A Pascal VOC annotation: one `face` object per box (pixel corners)."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = folder
    ElementTree.SubElement(root, "filename").text = file_name
    size = ElementTree.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ElementTree.SubElement(size, key).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for box in faces:
        obj = ElementTree.SubElement(root, "object")
        for key, value in (("name", "face"), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ElementTree.SubElement(obj, key).text = value
        bndbox = ElementTree.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ElementTree.SubElement(bndbox, key).text = f"{_pixel(value):g}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def yolo_yaml(groups: list[str], has_splits: bool) -> str:
    """Ultralytics' dataset file: where each split's photos are, and the one class. Without `path`, the
    folder holding this file is the dataset's."""
    lines = ["# one class: face. Labels: <split>/labels/<photo>.txt beside <split>/images/"]
    if has_splits:
        for split in data_lib.SPLITS:
            if split in groups:
                lines.append(f"{split}: {split}/images")
        if "val" not in groups and "train" in groups:
            lines.append("val: train/images  # the dataset has no validation photos")
    else:
        lines += ["# no split folders in the source dataset: every photo serves both", "train: images", "val: images"]
    lines += ["names:", "  0: face", ""]
    return "\n".join(lines)


def _check_out(folder: Path, out: Path) -> None:
    source, target = os.path.realpath(folder), os.path.realpath(out)
    if target == source or target.startswith(source.rstrip(os.sep) + os.sep):
        raise ValueError(f"{out}: inside the dataset {folder}; the export would become part of it. "
                         "Choose a folder elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose a new one")


def export_dataset(folder: str | Path, fmt: str, out: str | Path, *, root: str | Path | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """Write the dataset in `folder` as `fmt` (coco, yolo or voc) into the new folder `out`.

    The photos are copied as they are. What cannot be read is skipped (`ExportResult.skipped`, the
    dataset's own skipped files first). The export is made beside `out` and renamed into place, so a
    failure or an interruption leaves no half-written folder. `progress` counts the photos read, then
    those written (of their total)."""
    if fmt not in FORMATS:
        raise ValueError(f"{fmt!r} is not a format this exports; choose one of {', '.join(FORMATS)}")
    folder, out = Path(folder), Path(out)
    _check_out(folder, out)
    dataset = data_lib.load_dataset(folder, check_pixels=True, root=root, progress=progress)
    result = ExportResult(out, fmt, skipped=list(dataset.skipped))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        writer = _Writer(staging, fmt, dataset.has_splits)
        for done, sample in enumerate(dataset.samples, start=1):
            group = sample.split if dataset.has_splits and sample.split else "images"
            try:
                _export_photo(writer, group, sample)
            except (ValueError, OSError) as error:
                reason = str(error) if isinstance(error, ValueError) else f"cannot copy it ({error.strerror or error})"
                result.skipped.append(Skipped(sample.image, reason))
            else:
                result.images += 1
                result.faces += len(sample.faces)
                result.no_face += not sample.faces
                result.splits[group] = result.splits.get(group, 0) + 1
            if progress:
                progress(done, len(dataset.samples))
        writer.finish(list(result.splits))
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        if out.exists():
            out.rmdir()  # checked empty above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _export_photo(writer: _Writer, group: str, sample: Sample) -> None:
    name, content = _written_name(sample)
    source: str | bytes = content if content is not None else sample.image
    width, height = data_lib.image_size(source, root=None if content is not None else sample.root)
    target = writer.photo_folder(group) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise ValueError(f"another photo of the export is named {name} too")
    if content is not None:
        target.write_bytes(content)
    else:
        with open_regular(sample.image, sample.root) as handle, open(target, "wb") as copy:
            shutil.copyfileobj(handle, copy)
    faces = [(x0 * width, y0 * height, x1 * width, y1 * height) for x0, y0, x1, y1 in sample.faces]
    writer.add(group, name, width, height, faces)


def export_zip(folder: str | Path, fmt: str, zip_path: str | Path, *, root: str | Path | None = None,
               progress: Progress | None = None) -> ExportResult:
    """`export_dataset` packed into one zip file (the folder's name at its top), for a download."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=zip_path.parent) as work:
        top = f"{Path(folder).name}-{fmt}"
        result = export_dataset(folder, fmt, Path(work) / top, root=root, progress=progress)
        with zipfile.ZipFile(zip_path, "w") as archive:
            for path in sorted((Path(work) / top).rglob("*")):
                if path.is_file():  # photos are compressed already; the label files are text
                    method = zipfile.ZIP_STORED if path.suffix.lower() in data_lib.IMAGE_EXTENSIONS else zipfile.ZIP_DEFLATED
                    archive.write(path, path.relative_to(work).as_posix(), compress_type=method)
    return dataclasses.replace(result, out=zip_path)
