"""Datasets out as COCO, YOLO and Pascal VOC and back, COCO in, on real faces; peer readers agree."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.data import formats
from facetracker.data.coco import ROBOFLOW_COCO
from tests.conftest import REPO, require

# Exported boxes are written to 0.01 px: read back, a corner may move that much.
PIXEL_TOLERANCE = 0.011


@pytest.fixture(scope="module")
def afw(data_root) -> Path:
    """Group photos: 233 labelled faces in 81 photos, up to a dozen a photo, no split folders."""
    return require(data_root / "faces-afw-groups", "faces-afw-groups")


@pytest.fixture(scope="module")
def loaded(afw, webcam) -> dict[str, data.Dataset]:
    return {"afw": data.load_dataset(afw), "webcam": data.load_dataset(webcam)}


def faces_in_pixels(dataset: data.Dataset) -> dict[tuple, np.ndarray]:
    """(split, photo name) -> every face in pixels of the photo."""
    out = {}
    for sample in dataset.samples:
        width, height = data.image_size(sample.image)
        out[(sample.split, Path(sample.image).name)] = np.array(sample.faces).reshape(-1, 4) * [width, height, width, height]
    return out


@pytest.mark.parametrize("fmt", formats.FORMATS)
@pytest.mark.parametrize("name", ["afw", "webcam"])
def test_a_real_dataset_comes_back_from_each_format_with_the_same_photos_splits_and_boxes(
        fmt, name, loaded, afw, webcam, tmp_path):
    source = {"afw": afw, "webcam": webcam}[name]
    original = loaded[name]
    result = formats.export_dataset(source, fmt, tmp_path / fmt)
    assert result.images == len(original.samples) and result.skipped == []
    assert result.faces == sum(len(s.faces) for s in original.samples)
    back = data.load_dataset(tmp_path / fmt)
    assert back.layout == fmt and back.skipped == [] and back.has_splits == original.has_splits
    assert back.summary() == {**original.summary(), "layout": fmt}  # photos, faces, no-face photos, per split
    before, after = faces_in_pixels(original), faces_in_pixels(back)
    assert before.keys() == after.keys()
    for key, faces in before.items():
        assert after[key].shape == faces.shape, key
        assert np.abs(after[key] - faces).max(initial=0) <= PIXEL_TOLERANCE, key


def test_the_no_face_photos_are_kept_as_each_format_allows(webcam, tmp_path):
    empty = [s for s in data.load_dataset(webcam, check_pixels=False).samples if not s.faces]
    assert len(empty) == 17
    photo = empty[0]
    for fmt in formats.FORMATS:
        formats.export_dataset(webcam, fmt, tmp_path / fmt)
    coco = json.loads((tmp_path / "coco" / "annotations" / f"instances_{photo.split}.json").read_text())
    entry = next(i for i in coco["images"] if i["file_name"] == Path(photo.image).name)
    assert not [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
    assert (tmp_path / "coco" / photo.split / Path(photo.image).name).is_file()
    assert (tmp_path / "yolo" / photo.split / "labels" / f"{photo.name}.txt").read_text() == ""
    xml = (tmp_path / "voc" / photo.split / "annotations" / f"{photo.name}.xml").read_text()
    assert "<annotation>" in xml and "<object>" not in xml and "<width>1280</width>" in xml


def test_the_coco_export_loads_in_pycocotools_with_every_photo_and_face(afw, webcam, loaded, tmp_path):
    from pycocotools.coco import COCO

    for name, source in (("afw", afw), ("webcam", webcam)):
        formats.export_dataset(source, "coco", tmp_path / name)
        images = faces = 0
        for instances in sorted((tmp_path / name / "annotations").glob("*.json")):
            coco = COCO(str(instances))
            images += len(coco.getImgIds())
            faces += len(coco.getAnnIds(catIds=coco.getCatIds(catNms=["face"])))
            for image in coco.loadImgs(coco.getImgIds()):  # every file_name is a photo of its split's folder
                assert (tmp_path / name / instances.stem.removeprefix("instances_") / image["file_name"]).is_file() \
                    or (tmp_path / name / "images" / image["file_name"]).is_file()
        assert images == len(loaded[name].samples)
        assert faces == sum(len(s.faces) for s in loaded[name].samples)


def test_the_yolo_export_reads_as_ultralytics_reads_it(webcam, loaded, tmp_path):
    """supervision (whose DetectionDataset reads YOLO) pulls in opencv-python beside our
    opencv-python-headless: the check here follows Ultralytics' own rules instead, independently of our
    reader: data.yaml names each split's photo folder, a photo's label is the path with /images/ made
    /labels/ and a .txt suffix, each line `class cx cy w h` normalised."""
    import yaml

    formats.export_dataset(webcam, "yolo", tmp_path / "yolo")
    spec = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert spec["names"] == {0: "face"} and {"train", "val", "test"} <= set(spec)
    images = faces = 0
    for split in ("train", "val", "test"):
        for photo in sorted((tmp_path / "yolo" / spec[split]).iterdir()):
            label = Path(str(photo).replace("/images/", "/labels/")).with_suffix(".txt")
            rows = np.loadtxt(label, ndmin=2) if label.stat().st_size else np.zeros((0, 5))
            assert rows.shape[1] == 5 and (rows[:, 0] == 0).all() and ((rows[:, 1:] > 0) & (rows[:, 1:] <= 1)).all()
            images += 1
            faces += len(rows)
    assert images == len(loaded["webcam"].samples) == 90
    assert faces == sum(len(s.faces) for s in loaded["webcam"].samples) == 73


def test_a_photo_embedded_in_its_labelme_file_is_written_out_as_a_photo(afw, tmp_path):
    sample = next(s for s in data.load_dataset(afw, check_pixels=False).samples if len(s.faces) > 2)
    label = json.loads(Path(sample.label).read_text())
    label["imageData"] = base64.b64encode(Path(sample.image).read_bytes()).decode()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "group.json").write_text(json.dumps(label))  # no image file: the label holds it
    result = formats.export_dataset(tmp_path / "src", "yolo", tmp_path / "out")
    assert result.images == 1 and result.faces == len(sample.faces)
    back = data.load_dataset(tmp_path / "out").samples[0]
    assert Path(back.image).name == "group.jpg"
    assert np.allclose(back.faces, sample.faces, atol=1e-5)


def test_an_export_never_replaces_a_folder_or_lands_inside_its_dataset(afw, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        formats.export_dataset(afw, "coco", taken)
    assert (taken / "notes.txt").read_text() == "mine"
    copy = tmp_path / "copy"
    shutil.copytree(afw, copy)
    with pytest.raises(ValueError, match="inside the dataset"):
        formats.export_dataset(copy, "voc", copy / "voc")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_the_zip_for_a_download_holds_the_export_under_one_folder(webcam, tmp_path):
    result = formats.export_zip(webcam, "yolo", tmp_path / "webcam-yolo.zip")
    names = zipfile.ZipFile(tmp_path / "webcam-yolo.zip").namelist()
    assert result.images == 90 and "webcam-tutorial-yolo/data.yaml" in names
    assert sum(n.endswith(".txt") for n in names) == 90 and sum(n.endswith(".jpg") for n in names) == 90


# ----------------------------------------------------------------------------------------------
# COCO in


def coco_folder(afw: Path, tmp_path: Path, photos: int = 4) -> tuple[Path, dict, list[data.Sample]]:
    """A COCO dataset made by hand from real group photos: (folder, its instances.json, the samples)."""
    samples = [s for s in data.load_dataset(afw, check_pixels=False).samples if s.faces][:photos]
    folder = tmp_path / "coco"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "person"}, {"id": 7, "name": "Face"}]}
    for index, sample in enumerate(samples, start=1):
        shutil.copy(sample.image, folder / "images")
        width, height = data.image_size(sample.image)
        coco["images"].append({"id": index, "file_name": Path(sample.image).name, "width": width, "height": height})
        for x0, y0, x1, y1 in sample.faces:
            box = [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index, "category_id": 7,
                                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return folder, coco, samples


def write(folder: Path, coco: dict, name: str = "instances_default.json") -> Path:
    path = folder / "annotations" / name
    path.write_text(json.dumps(coco))
    return path


def test_a_coco_file_reads_as_a_dataset_with_every_face(afw, webcam, tmp_path):
    folder, coco, samples = coco_folder(afw, tmp_path)
    coco["annotations"].append({"id": 99, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 0})
    room = next(s for s in data.load_dataset(webcam, check_pixels=False).samples if not s.faces)
    shutil.copy(room.image, folder / "images" / "room.jpg")
    coco["images"].append({"id": 50, "file_name": "room.jpg", "width": 1280, "height": 720})  # no annotation
    write(folder, coco)
    dataset = data.load_dataset(folder)
    assert dataset.layout == "coco" and dataset.skipped == [] and not dataset.has_splits
    by_name = {Path(s.image).name: s for s in dataset.samples}
    assert by_name["room.jpg"].faces == ()  # a COCO image without annotations is a no-face photo
    for sample in samples:  # the person box is not a face
        assert np.allclose(sorted(by_name[Path(sample.image).name].faces), sorted(sample.faces), atol=1e-9)


def test_bad_coco_entries_are_skipped_one_by_one_each_named(afw, tmp_path):
    folder, coco, samples = coco_folder(afw, tmp_path, photos=6)
    names = [Path(s.image).name for s in samples]
    coco["annotations"][0]["bbox"] = [10, 20]  # photo 1 loses a face: the photo is skipped, named
    coco["annotations"].append({"id": 501, "image_id": 404, "category_id": 7, "bbox": [1, 1, 5, 5]})
    coco["annotations"].append({"id": 502, "image_id": 2, "category_id": 7, "bbox": [1, 1, 50, 50], "iscrowd": 1})
    coco["annotations"].append("not an annotation")
    coco["images"][2]["file_name"] = "../../etc/passwd"
    coco["images"][3]["width"] += 10  # says another size than the photo's
    coco["images"].append({"id": 77, "file_name": "missing.jpg"})
    coco["images"].append({"file_name": names[4]})  # no id
    coco_path = write(folder, coco)
    (folder / "annotations" / "broken.json").write_text("{not json")
    dataset = data.load_dataset(folder)
    lines = [str(item) for item in dataset.skipped]
    expected = [
        (names[0], "annotations[0] (id 1): its bbox is [10, 20], not [x, y, width, height]"),
        (str(coco_path), "annotations[", "(id 501): its image_id 404 names no image"),
        (names[1], "(id 502): it is a crowd region"),
        (str(coco_path), "not a JSON object"),
        (str(coco_path), "images[2] (id 3): its file_name '../../etc/passwd' leads outside the dataset folder"),
        (names[3], "images[3] (id 4) says"),
        (str(coco_path), "images[6] (id 77) ('missing.jpg'): no such photo"),
        (str(coco_path), "images[7]: its id is None"),
        ("broken.json", "not valid JSON"),
    ]
    for parts in expected:
        assert any(all(part in line for part in parts) for line in lines), (parts, lines)
    assert len(lines) == len(expected)
    kept = {Path(s.image).name: s for s in dataset.samples}
    assert sorted(kept) == sorted([names[4], names[5]])  # the rest read on
    assert np.allclose(sorted(kept[names[5]].faces), sorted(samples[5].faces), atol=1e-9)


def test_a_coco_file_without_a_face_category_is_named(afw, tmp_path):
    folder, coco, _ = coco_folder(afw, tmp_path, photos=2)
    coco["categories"] = [{"id": 7, "name": "person"}]
    path = write(folder, coco)
    with pytest.raises(data.DatasetError, match="no category is named 'face' .its categories: person") as error:
        data.load_dataset(folder)
    assert str(path) in str(error.value)


def test_roboflow_and_coco2017_layouts_give_their_splits(afw, tmp_path):
    folder, coco, samples = coco_folder(afw, tmp_path, photos=4)
    def part(images: list[dict]) -> dict:
        ids = {image["id"] for image in images}
        return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}

    train, val = part(coco["images"][:3]), part(coco["images"][3:])
    roboflow = tmp_path / "roboflow"
    for split, part in (("train", train), ("valid", val)):  # photos beside each split's file
        (roboflow / split).mkdir(parents=True)
        for image in part["images"]:
            shutil.copy(folder / "images" / image["file_name"], roboflow / split)
        (roboflow / split / ROBOFLOW_COCO).write_text(json.dumps(part))
    coco2017 = tmp_path / "coco2017"
    (coco2017 / "annotations").mkdir(parents=True)
    for split, part in (("train2017", train), ("val2017", val)):  # annotations/instances_<split>.json, <split>/
        (coco2017 / split).mkdir()
        for image in part["images"]:
            shutil.copy(folder / "images" / image["file_name"], coco2017 / split)
        (coco2017 / "annotations" / f"instances_{split}.json").write_text(json.dumps(part))
    for layout in (roboflow, coco2017):
        dataset = data.load_dataset(layout)
        assert dataset.has_splits and dataset.skipped == [], layout
        assert dataset.summary()["train"] == {"faces": 3, "no_face": 0}
        assert dataset.summary()["val"] == {"faces": 1, "no_face": 0}
        assert sum(len(s.faces) for s in dataset.samples) == sum(len(s.faces) for s in samples)


def test_the_dataset_export_command(afw, tmp_path):
    command = [sys.executable, "-m", "facetracker", "dataset", "export", str(afw), "--format", "coco",
               "--out", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "81 photos (81 with faces, 0 without), 233 faces, 0 skipped" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is no terminal
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists and is not an empty folder" in again.stderr
    inspect = subprocess.run([sys.executable, "-m", "facetracker", "inspect", str(tmp_path / "out")], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert "81 images (81 with a face, 0 without), 233 faces labelled" in inspect.stdout, inspect.stdout
