import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facetracker import data
from tests.synthetic import face_image, labelme, make_labelme_dataset


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


def test_embedded_image_data_without_an_image_file(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    ok, png = cv2.imencode(".png", face_image(64, 48, (10, 10, 40, 40)))
    (tmp_path / "labels" / "only_json.json").write_text(labelme("only_json.png", 64, 48, (10, 10, 40, 40), png.tobytes()))
    dataset = data.load_dataset(tmp_path)
    [sample] = dataset.samples
    assert sample.embedded and sample.box == pytest.approx((10 / 64, 10 / 48, 40 / 64, 40 / 48))
    assert data.sample_pixels(sample).shape == (48, 64, 3)


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


def test_voc_and_yolo_labels_keep_the_largest_face(tmp_path):
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
    assert "kept the largest" in dataset.notes[0]

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
    prepared = data.model_input(frame, 120, bgr=True)
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
