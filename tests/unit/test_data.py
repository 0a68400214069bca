import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facetracker.data import datasets as data
from facetracker.data.images import model_input, sample_pixels
from tests.helpers.synthetic import face_image, labelme, make_labelme_dataset


def test_labelme_folder_boxes_are_normalised_by_the_real_image_size(tmp_path):
    made = make_labelme_dataset(tmp_path, n_faces=4, n_empty=2, size=(200, 100))
    dataset = data.load_dataset(tmp_path)
    assert dataset.layout == "labelme" and not dataset.has_splits
    assert len(dataset.samples) == 6 and dataset.skipped == []
    by_name = {s.name: s for s in dataset.samples}
    for stem, box in made:
        sample = by_name[stem]
        if box is None:
            assert sample.box is None
        else:
            expected = (box[0] / 200, box[1] / 100, box[2] / 200, box[3] / 100)
            assert sample.box == pytest.approx(expected)


def test_tutorial_layout_keeps_its_splits(tmp_path):
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        make_labelme_dataset(tmp_path, n_faces=n, n_empty=1, split=split)
    dataset = data.load_dataset(tmp_path)
    assert dataset.has_splits
    assert dataset.summary()["train"] == {"faces": 5, "no_face": 1}
    assert {s.split for s in dataset.samples} == {"train", "val", "test"}


def test_seeded_split_is_deterministic_and_stable_when_images_are_added(tmp_path):
    make_labelme_dataset(tmp_path, n_faces=40, n_empty=10)
    samples = data.load_dataset(tmp_path).samples
    first = {s.image: s.split for s in data.assign_splits(samples, seed=3)}
    assert first == {s.image: s.split for s in data.assign_splits(samples, seed=3)}
    assert set(first.values()) == {"train", "val", "test"}
    fewer = {s.image: s.split for s in data.assign_splits(samples[:25], seed=3)}
    assert all(first[k] == v for k, v in fewer.items())


def recording(n: int, no_face: set[int]) -> list[data.Sample]:
    """Frames of one recording, named in the order they were taken (listed here out of order)."""
    frames = [data.Sample(f"/rec/frame_{i:03d}.jpg", None if i in no_face else (0.3, 0.2, 0.6, 0.7))
              for i in range(n)]
    return frames[::-1]


def test_a_small_validation_split_is_topped_up_with_frames_spread_over_the_recording():
    samples = data.assign_splits(recording(30, no_face={4, 11, 19, 26}), seed=0)
    before = {s.image: s.split for s in samples}
    assert sum(v == "val" for v in before.values()) < 10
    topped, moved = data.top_up_validation(samples, minimum=10)
    after = {s.image: s.split for s in topped}
    assert sum(v == "val" for v in after.values()) == 10
    assert all(before[s.image] == "train" for s in moved) and len(moved) == 10 - sum(
        v == "val" for v in before.values())
    assert {k: v for k, v in after.items() if before[k] != "train"} == {
        k: v for k, v in before.items() if v != "train"}  # validation and test photos stay where they were
    assert any(s.split == "val" and not s.has_face for s in topped)  # the no-face photos are represented
    # Spread over the recording, not bunched: no stretch of it is more than twice the even spacing.
    train_order = sorted(k for k, v in before.items() if v == "train")
    positions = [-1] + sorted(train_order.index(s.image) for s in moved) + [len(train_order)]
    spacing = len(train_order) / len(moved)
    assert max(b - a for a, b in zip(positions, positions[1:])) <= 2 * spacing


def test_validation_is_topped_up_by_at_most_a_third_of_the_training_photos():
    samples = [dataclasses.replace(s, split="train") for s in recording(12, no_face=set())]
    topped, moved = data.top_up_validation(samples, minimum=10)
    assert len(moved) == 4 and sum(s.split == "train" for s in topped) == 8
    enough = data.assign_splits(recording(300, no_face={5}), seed=0)
    assert data.top_up_validation(enough, minimum=10) == (enough, [])


def test_embedded_image_data_without_an_image_file(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    ok, png = cv2.imencode(".png", face_image(64, 48, (10, 10, 40, 40)))
    (tmp_path / "labels" / "only_json.json").write_text(labelme("only_json.png", 64, 48, (10, 10, 40, 40), png.tobytes()))
    dataset = data.load_dataset(tmp_path)
    [sample] = dataset.samples
    assert sample.embedded and sample.box == pytest.approx((10 / 64, 10 / 48, 40 / 64, 40 / 48))
    assert sample_pixels(sample).shape == (48, 64, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_image_modes_decode_to_rgb(tmp_path, mode):
    rgb = Image.fromarray(face_image(40, 30, (5, 5, 20, 20))[:, :, ::-1])
    if mode == "I;16":
        path = tmp_path / "x.png"
        cv2.imwrite(str(path), np.asarray(rgb.convert("L"), np.uint16) * 257)  # a 16-bit grayscale PNG
        image = None
    elif mode == "CMYK":
        image, path = rgb.convert("CMYK"), tmp_path / "x.jpg"
    else:
        image, path = rgb.convert(mode), tmp_path / "x.png"
    if image is not None:
        image.save(path)
    pixels = data.read_image(path)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8


def test_voc_and_yolo_labels_keep_every_face_the_largest_first(tmp_path):
    voc = tmp_path / "voc"
    (voc / "images").mkdir(parents=True)
    (voc / "annotations").mkdir()
    cv2.imwrite(str(voc / "images" / "a.jpg"), face_image(100, 80, (10, 10, 50, 60)))
    objects = "".join(
        f"<object><name>face</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for b in ((60, 5, 70, 15), (10, 10, 50, 60)))
    (voc / "annotations" / "a.xml").write_text(
        f"<annotation><size><width>100</width><height>80</height></size>{objects}</annotation>")
    dataset = data.load_dataset(voc)
    assert dataset.layout == "voc"
    assert dataset.samples[0].box == pytest.approx((0.1, 0.125, 0.5, 0.75))
    assert [list(b) for b in dataset.samples[0].faces] == [pytest.approx([0.1, 0.125, 0.5, 0.75]), pytest.approx([0.6, 0.0625, 0.7, 0.1875])]
    assert dataset.notes == [] and "2 faces labelled, 1 images with several" in dataset.describe()

    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    cv2.imwrite(str(yolo / "images" / "b.jpg"), face_image(100, 80, (10, 10, 50, 60)))
    (yolo / "labels" / "b.txt").write_text("0 0.3 0.4375 0.4 0.625\n1 0.9 0.9 0.1 0.1\n")
    cv2.imwrite(str(yolo / "images" / "c.jpg"), face_image(100, 80, None))
    (yolo / "labels" / "c.txt").write_text("")
    dataset = data.load_dataset(yolo)
    boxes = {s.name: s.box for s in dataset.samples}
    assert boxes["b"] == pytest.approx((0.1, 0.125, 0.5, 0.75)) and boxes["c"] is None


def test_unusable_files_are_skipped_with_a_reason(tmp_path):
    make_labelme_dataset(tmp_path, n_faces=2, n_empty=0)
    images, labels = tmp_path / "images", tmp_path / "labels"
    (images / "broken.jpg").write_bytes(cv2.imencode(".jpg", face_image(80, 60, None))[1].tobytes()[:300])
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("hello")
    cv2.imwrite(str(images / "outside.jpg"), face_image(80, 60, None))
    (labels / "outside.json").write_text(labelme("outside.jpg", 80, 60, (10, 10, 200, 50)))
    cv2.imwrite(str(images / "notjson.jpg"), face_image(80, 60, None))
    (labels / "notjson.json").write_text("{not json")
    (labels / "orphan.json").write_text(labelme("orphan.jpg", 80, 60, (1, 1, 20, 20)))
    dataset = data.load_dataset(tmp_path)
    reasons = {Path(s.path).stem: s.reason for s in dataset.skipped}
    assert set(reasons) == {"broken", "empty", "text", "outside", "notjson", "orphan"}
    assert "broken" in reasons["broken"]
    assert "empty" in reasons["empty"] and "not an image" in reasons["text"]
    assert "outside" in reasons["outside"] and "JSON" in reasons["notjson"]
    assert "without an image" in reasons["orphan"]
    assert len(dataset.samples) == 2 and dataset.summary()["skipped"] == 6
    assert all(str(s).startswith("skipped ") and s.path in str(s) for s in dataset.skipped)


def test_an_unusable_folder_is_refused_clearly(tmp_path):
    with pytest.raises(data.DatasetError, match="no such folder"):
        data.load_dataset(tmp_path / "missing")
    with pytest.raises(data.DatasetError, match="no usable image"):
        data.load_dataset(tmp_path)


def test_model_input_stretches_the_whole_image_and_converts_bgr():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = (255, 0, 0)  # blue in BGR, left half
    prepared = model_input(frame, 120, bgr=True)
    assert prepared.shape == (120, 120, 3)
    assert tuple(prepared[60, 10]) == (0, 0, 255) and tuple(prepared[60, 110]) == (0, 0, 0)


def test_real_datasets_read_as_expected(helen, webcam):
    faces = data.load_dataset(helen)
    assert faces.summary()["faces"] == 739 and faces.summary()["no_face"] == 78 and not faces.skipped
    for sample in faces.samples[:50]:
        if sample.box:
            x0, y0, x1, y1 = sample.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    tutorial = data.load_dataset(webcam)
    summary = tutorial.summary()
    assert tutorial.has_splits and summary["no_face"] == 17 and summary["faces"] == 73
    assert summary["train"]["faces"] + summary["train"]["no_face"] == 63
    # Boxes are normalised by 1280x720, not the tutorial's fixed 640x480: every box stays inside [0, 1].
    assert all(0 <= v <= 1 for s in tutorial.samples if s.box for v in s.box)
    label = json.loads(Path(tutorial.samples[5].label or tutorial.samples[0].label).read_text())
    assert label["imageWidth"] == 1280


def test_real_photo_pixels_match_the_label_frame(helen, tmp_path):
    """A labelled photo decoded at reduced size keeps its aspect and face position."""
    sample = next(s for s in data.load_dataset(helen, check_pixels=False).samples if s.box)
    full = data.read_image(sample.image)
    small = data.read_image(sample.image, max_side=200)
    assert max(small.shape[:2]) <= 200
    assert abs(full.shape[1] / full.shape[0] - small.shape[1] / small.shape[0]) < 0.02
    shutil.copy(sample.image, tmp_path / "copy.jpg")
    assert data.image_size(tmp_path / "copy.jpg") == (full.shape[1], full.shape[0])


# ----------------------------------------------------------------------------------------------
# Labels that must never turn into a wrong or missing face


def _photo(path: Path, box=(20, 20, 60, 50), size=(100, 80)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), face_image(*size, box))


def test_a_label_whose_name_differs_only_in_case_is_matched_when_one_to_one(tmp_path):
    _photo(tmp_path / "images" / "Photo.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "photo.json").write_text(labelme("Photo.jpg", 100, 80, (20, 20, 60, 50)))
    dataset = data.load_dataset(tmp_path)
    [sample] = dataset.samples
    assert sample.box == pytest.approx((0.2, 0.25, 0.6, 0.625)) and dataset.skipped == []
    assert any("photo.json" in note and "ignoring case" in note for note in dataset.notes)


def test_a_label_matching_two_photos_ignoring_case_skips_both_naming_it(tmp_path):
    _photo(tmp_path / "images" / "Twin.jpg")
    _photo(tmp_path / "images" / "TWIN.jpg")
    _photo(tmp_path / "images" / "other.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "twin.json").write_text(labelme("Twin.jpg", 100, 80, (20, 20, 60, 50)))
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["other"]
    reasons = {Path(s.path).name: s.reason for s in dataset.skipped}
    assert set(reasons) == {"Twin.jpg", "TWIN.jpg"}
    assert all("twin.json" in r and "ignoring case" in r for r in reasons.values())


def test_a_yolo_polygon_becomes_its_bounding_box_and_other_counts_are_refused(tmp_path):
    for stem in ("poly", "six", "three"):
        _photo(tmp_path / "images" / f"{stem}.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "poly.txt").write_text("0 0.2 0.25 0.6 0.3 0.5 0.625 0.25 0.5\n")
    (tmp_path / "labels" / "six.txt").write_text("0 0.4 0.4 0.4 0.4 0.9\n")  # a box with a confidence
    (tmp_path / "labels" / "three.txt").write_text("0 0.4 0.4 0.4\n")
    dataset = data.load_dataset(tmp_path)
    [sample] = dataset.samples
    assert sample.name == "poly" and sample.box == pytest.approx((0.2, 0.25, 0.6, 0.625))
    assert any("polygon" in note and "bounding box" in note for note in dataset.notes)
    reasons = {Path(s.path).name: s.reason for s in dataset.skipped}
    assert set(reasons) == {"six.jpg", "three.jpg"}
    assert "line 1 holds 5 numbers" in reasons["six.jpg"] and "line 1 holds 3 numbers" in reasons["three.jpg"]


@pytest.mark.parametrize("points, field", [
    ([["12", 10], [60, 70]], "points[0][0] is '12', not a number"),
    ([[12, 10], [60, None]], "points[1][1] is None, not a number"),
    ([[12, True], [60, 70]], "points[0][1] is True, not a number"),
    ([[12, 10], [10**400, 70]], "points[1][0] is a 401-digit number"),
])
def test_labelme_coordinates_that_are_not_numbers_are_refused_naming_the_field(tmp_path, points, field):
    _photo(tmp_path / "images" / "a.jpg")
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "labels").mkdir()
    record = json.loads(labelme("a.jpg", 100, 80, None))
    record["shapes"] = [{"label": "face", "points": points, "shape_type": "rectangle"}]
    (tmp_path / "labels" / "a.json").write_text(json.dumps(record))
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["good"]
    [item] = dataset.skipped
    assert item.path.endswith("a.jpg") and field in item.reason


def _load_within(seconds: float, *args, **kwargs) -> data.Dataset:
    """load_dataset in a thread: a reader that blocks (on a FIFO, say) fails the test instead of hanging it."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(value=data.load_dataset(*args, **kwargs)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"load_dataset was still reading after {seconds} s"
    return result["value"]


def test_a_fifo_as_label_or_image_is_named_and_its_photo_skipped_without_blocking(tmp_path):
    _photo(tmp_path / "images" / "piped-label.jpg")
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "labels").mkdir()
    os.mkfifo(tmp_path / "labels" / "piped-label.json")
    os.mkfifo(tmp_path / "images" / "piped-image.jpg")
    (tmp_path / "labels" / "piped-image.json").write_text(labelme("piped-image.jpg", 100, 80, (20, 20, 60, 50)))
    dataset = _load_within(20, tmp_path)
    assert [s.name for s in dataset.samples] == ["good"], "a photo whose label cannot be read is no no-face photo"
    reasons = {Path(s.path).name: s.reason for s in dataset.skipped}
    assert set(reasons) == {"piped-label.jpg", "piped-image.jpg"}
    assert "piped-label.json" in reasons["piped-label.jpg"] and "FIFO" in reasons["piped-label.jpg"]
    assert "FIFO" in reasons["piped-image.jpg"]


@pytest.mark.parametrize("edit, field", [
    (lambda text: text.replace('"imageWidth": 100', '"imageWidth": 1e309'), "imageWidth is inf"),
    (lambda text: text.replace('"imageHeight": 80', '"imageHeight": NaN'), "imageHeight is nan"),
    (lambda text: text.replace('"imageHeight": 80', '"imageHeight": ' + "9" * 40), "imageHeight is 9999"),
    (lambda text: text.replace('"imageWidth": 100', '"imageWidth": "100"'), "imageWidth is '100', not a number"),
    (lambda text: text.replace('"imageWidth": 100', '"imageWidth": 100.5'), "imageWidth is 100.5, not a whole"),
    (lambda text: text.replace('"imageWidth": 100', '"imageWidth": ' + "9" * 5000), "not valid JSON"),
    (lambda text: "[" * 50_000 + "]" * 50_000, "nested too deeply"),
])
def test_a_bad_label_value_is_that_files_skip_line(tmp_path, edit, field):
    _photo(tmp_path / "images" / "a.jpg")
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.json").write_text(edit(labelme("a.jpg", 100, 80, (20, 20, 60, 50))))
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["good"]
    [item] = dataset.skipped
    assert item.path.endswith("a.jpg") and field in item.reason, item.reason


@pytest.mark.parametrize("image_data, reason", [
    ("%%% not base64 %%%", "not a base64 image"),
    (12345, "imageData is 12345, not a base64 text"),
    (["abc"], "not a base64 text"),
    ("aGVsbG8gd29ybGQ=", "not an image"),  # good base64 of "hello world"
])
def test_bad_embedded_image_data_is_that_labels_skip_line(tmp_path, image_data, reason):
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "labels").mkdir()
    record = json.loads(labelme("lonely.png", 100, 80, (20, 20, 60, 50)))
    record["imageData"] = image_data
    (tmp_path / "labels" / "lonely.json").write_text(json.dumps(record))
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["good"]
    [item] = dataset.skipped
    assert item.path.endswith("lonely.json") and reason in item.reason, item.reason


def test_a_file_name_that_is_not_utf8_is_skipped_and_every_line_stays_printable(tmp_path):
    _photo(tmp_path / "images" / "good.jpg")
    raw = os.fsencode(tmp_path / "images") + b"/caf\xe9.jpg"  # Latin-1, as an old camera might write it
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), face_image(100, 80, None))
    os.rename(tmp_path / "images" / "x.jpg", raw)
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["good"]
    [item] = dataset.skipped
    assert "not valid UTF-8" in item.reason and item.path.endswith("caf\\xe9.jpg")
    str(item).encode("utf-8")  # printing it, or writing it to status.json, must not fail
    json.dumps(data.split_manifest(data.assign_splits(dataset.samples)), ensure_ascii=False).encode("utf-8")


# ----------------------------------------------------------------------------------------------
# Symbolic links out of the data root (the app is confined to it; the command line is not)


@pytest.fixture
def linked_out(tmp_path) -> tuple[Path, Path]:
    """A data root whose dataset links to photos and a label outside it; returns (root, dataset)."""
    outside = tmp_path / "outside"
    _photo(outside / "secret.jpg")
    _photo(outside / "folder" / "far.jpg")
    (outside / "secret.json").write_text(labelme("linked-label.jpg", 100, 80, (20, 20, 60, 50)))
    root = tmp_path / "root"
    dataset = root / "faces"
    _photo(dataset / "images" / "good.jpg")
    _photo(dataset / "images" / "linked-label.jpg")
    (dataset / "labels").mkdir()
    os.symlink(outside / "secret.jpg", dataset / "images" / "linked-image.jpg")
    os.symlink(outside / "secret.json", dataset / "labels" / "linked-label.json")
    os.symlink(dataset / "images" / "good.jpg", dataset / "images" / "inside-link.jpg")  # stays inside: fine
    return root, dataset


def test_with_a_root_every_file_linking_out_of_it_is_skipped(linked_out):
    root, folder = linked_out
    dataset = data.load_dataset(folder, root=root)
    assert sorted(s.name for s in dataset.samples) == ["good", "inside-link"]
    reasons = {Path(s.path).name: s.reason for s in dataset.skipped}
    assert set(reasons) == {"linked-image.jpg", "linked-label.jpg"}
    assert "links outside the data root" in reasons["linked-image.jpg"]
    assert "linked-label.json" in reasons["linked-label.jpg"] and "outside the data root" in reasons["linked-label.jpg"]
    assert all(s.root == os.path.realpath(root) for s in dataset.samples)


def test_a_linked_images_folder_is_refused_file_by_file(linked_out, tmp_path):
    root, folder = linked_out
    other = root / "other"
    other.mkdir()
    os.symlink(tmp_path / "outside" / "folder", other / "images")
    with pytest.raises(data.DatasetError, match="no usable image.*outside the data root"):
        data.load_dataset(other, root=root)


def test_without_a_root_links_are_followed_as_the_command_line_documents(linked_out):
    _, folder = linked_out
    dataset = data.load_dataset(folder)
    assert sorted(s.name for s in dataset.samples) == ["good", "inside-link", "linked-image", "linked-label"]


def test_a_link_repointed_out_of_the_root_after_listing_is_refused_when_read(linked_out, tmp_path):
    root, folder = linked_out
    sample = next(s for s in data.load_dataset(folder, root=root).samples if s.name == "inside-link")
    os.remove(sample.image)
    os.symlink(tmp_path / "outside" / "secret.jpg", sample.image)
    with pytest.raises(data.OutsideRoot, match="outside the data root"):
        sample_pixels(sample)
    with pytest.raises(data.OutsideRoot):
        data.read_image(sample.image, root=root)
    assert data.read_image(sample.image).shape == (80, 100, 3)  # unconfined: the command line's reading


def test_evaluate_under_the_root_skips_links_out_of_it(linked_out, monkeypatch):
    """The Evaluate page passes the data root: a linked-out photo is neither read nor scored."""
    from types import SimpleNamespace

    from facetracker.evaluation import evaluate
    from facetracker.inference import models

    runtime = SimpleNamespace(input_wh=(32, 32), dense=False, predict=lambda batch: np.tile([0.9, 0.2, 0.25, 0.6, 0.6], (len(batch), 1)))
    monkeypatch.setattr(models, "open_runtime", lambda model, use: runtime)
    root, folder = linked_out
    result = evaluate.evaluate("model.keras", folder, root=root)
    assert {Path(s.path).name for s in result.skipped} == {"linked-image.jpg", "linked-label.jpg"}
    assert result.metrics["n_faces"] + result.metrics["n_empty"] == 2


@pytest.mark.parametrize("xml, reason", [
    ("<a>" * 50_000 + "</a>" * 50_000, "not a Pascal VOC file (its root element is <a>"),
    ("<annotation><size><width>" + "9" * 5000 + "</width><height>80</height></size></annotation>",
     "<size><width> is inf, not a finite number"),
    ("<annotation><size><width>100</width><height>eighty</height></size></annotation>",
     "<size><height> is 'eighty', not a number"),
    ("<annotation><object><name>face</name><bndbox><xmin>1e309</xmin><ymin>1</ymin><xmax>50</xmax>"
     "<ymax>50</ymax></bndbox></object></annotation>", "not a finite number"),
])
def test_a_bad_voc_label_is_that_photos_skip_line(tmp_path, xml, reason):
    _photo(tmp_path / "images" / "a.jpg")
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(xml)
    (tmp_path / "annotations" / "good.xml").write_text(
        "<annotation><size><width>0</width><height>0</height></size></annotation>")  # size unknown: fine
    dataset = data.load_dataset(tmp_path)
    assert [s.name for s in dataset.samples] == ["good"]
    [item] = dataset.skipped
    assert item.path.endswith("a.jpg") and reason in item.reason, item.reason


def test_an_unreadable_label_named_in_another_case_still_skips_its_photo(tmp_path):
    _photo(tmp_path / "images" / "Photo.jpg")
    _photo(tmp_path / "images" / "good.jpg")
    (tmp_path / "labels").mkdir()
    os.mkfifo(tmp_path / "labels" / "photo.json")
    dataset = _load_within(20, tmp_path)
    assert [s.name for s in dataset.samples] == ["good"], "Photo.jpg must not become a no-face photo"
    [item] = dataset.skipped
    assert item.path.endswith("Photo.jpg") and "photo.json" in item.reason and "FIFO" in item.reason


def test_a_dataset_folder_whose_path_is_not_utf8_is_refused_with_a_printable_message(tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.makedirs(folder + b"/images")
    with open(folder + b"/images/a.jpg", "wb") as handle:  # cv2.imwrite crashes on such a path
        handle.write(cv2.imencode(".jpg", face_image(100, 80, None))[1].tobytes())
    with pytest.raises(data.DatasetError, match="not valid UTF-8") as raised:
        data.load_dataset(os.fsdecode(folder))
    str(raised.value).encode("utf-8")


def test_a_run_the_app_starts_reads_its_dataset_under_the_data_root(linked_out, tmp_path):
    """The app's training runs are the command-line process with `data_root` in their config.json:
    what they read stays under the root, as on the app's pages."""
    from facetracker.config.training import TrainConfig
    from facetracker.nn.train import _split_samples

    root, folder = linked_out
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    logged: list[str] = []
    config = TrainConfig(data=str(folder), data_root=str(root))
    _, samples = _split_samples(config, run_dir, False, logged.append)
    assert sorted(s.name for s in samples) == ["good", "inside-link"]
    assert any("linked-image.jpg" in line and "outside the data root" in line for line in logged)
    _, unconfined = _split_samples(TrainConfig(data=str(folder)), run_dir, False, logged.append)
    assert len(unconfined) == 4  # the command line, as documented, follows links


def test_group_photos_keep_every_labelled_face(data_root):
    from tests.conftest import require

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    dataset = data.load_dataset(groups, check_pixels=False)
    summary = dataset.summary()
    assert summary["images"] == 81 and summary["labelled_faces"] == 233
    assert summary["several_faces"] >= 40 and "233 faces labelled" in dataset.describe()
    for sample in dataset.samples:
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in sample.faces]
        assert sample.box == sample.faces[0] and areas == sorted(areas, reverse=True)
        assert all(0 <= v <= 1 for b in sample.faces for v in b)
