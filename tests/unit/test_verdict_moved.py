"""The verdict judges the model, not how still the person sat: the validation photos moved, and YuNet
scored only on labels it did not draw. No training here (tests/test_verdict_recordings.py trains)."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from facetracker.boxes import iou
from facetracker.evaluation.verdict import (
    MARGIN,
    MOVED_COPIES,
    comparison_line,
    meaning,
    moved_photos,
    run_verdict,
)


def still_faces(n, seed=0, box=(0.42, 0.12, 0.70, 0.76), jitter=0.01):
    """Faces of a person who barely moves: the same box give or take a camera's jitter."""
    rng = np.random.default_rng(seed)
    return np.ones(n), np.clip(np.array([box] * n) + rng.normal(0, jitter, (n, 4)), 0, 1)


def test_moved_photos_carry_their_face_with_them():
    """A bright square where the box says: after the crop, scale and mirror it is where the new box says."""
    side = 200
    images, boxes = [], []
    for x0, y0, x1, y1 in [(0.3, 0.2, 0.6, 0.7), (0.05, 0.05, 0.3, 0.35), (0.1, 0.1, 0.95, 0.95)]:
        image = np.zeros((side, side, 3), np.uint8)
        image[int(y0 * side):int(y1 * side), int(x0 * side):int(x1 * side)] = 255
        images.append(image)
        boxes.append((x0, y0, x1, y1))
    moved, moved_boxes = moved_photos(np.stack(images), np.array(boxes), seed=3)
    assert moved.shape == (3 * MOVED_COPIES, side, side, 3) and moved_boxes.shape == (3 * MOVED_COPIES, 4)
    for image, box in zip(moved, moved_boxes):
        ys, xs = np.nonzero(image[:, :, 0] > 127)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / side
        assert iou(found, box) > 0.9, (found, box)
    # the same photos moved again are the same: every run of a dataset is judged alike
    again, again_boxes = moved_photos(np.stack(images), np.array(boxes), seed=3)
    assert np.array_equal(again, moved) and np.allclose(again_boxes, moved_boxes)
    # a face that fits the crop is never cut: small faces stay whole
    assert np.all((moved_boxes[:6, 2] - moved_boxes[:6, 0]) > (0.25 - 1e-6))


def test_a_large_validation_split_is_moved_forty_photos_of_it_spread_over_it():
    """Every epoch predicts the moved photos: a few hundred validation portraits are not moved thrice."""
    from facetracker.evaluation.verdict import MOVED_PHOTOS_MOST
    from facetracker.nn.pipeline import ImageCache, moved_validation

    boxes = np.array([[0.1 + i / 1000, 0.2, 0.5 + i / 1000, 0.7] for i in range(300)], np.float32)
    cache = ImageCache(np.zeros((300, 64, 64, 3), np.uint8), boxes, np.r_[np.ones(290), np.zeros(10)].astype(np.float32), [])
    inputs, moved = moved_validation(cache, 48)
    assert inputs.shape == (MOVED_PHOTOS_MOST * MOVED_COPIES, 48, 48, 3) and len(moved) == len(inputs)
    few = ImageCache(np.zeros((4, 64, 64, 3), np.uint8), boxes[:4], np.array([1, 1, 0, 1], np.float32), [])
    assert len(moved_validation(few, 48)[0]) == 3 * MOVED_COPIES  # every photo with a face, none without


def test_on_real_webcam_frames_the_moved_face_is_where_yunet_finds_it(webcam):
    """Frames of the recording where the person sits still, letterboxed as training caches them, with
    the box YuNet finds on each, moved: YuNet finds each moved face where the moved box says, and the
    same box on every photo, which fits the still frames, stops fitting the moved ones."""
    from facetracker.data.datasets import load_dataset
    from facetracker.data.images import sample_pixels
    from facetracker.inference import models
    from facetracker.inference.dense import letterbox
    from facetracker.inference.detect import YUNET

    faces = [s for s in load_dataset(webcam, check_pixels=False).samples if s.has_face]
    centres = np.array([[(s.box[0] + s.box[2]) / 2, (s.box[1] + s.box[3]) / 2] for s in faces])
    middle = np.median(centres, axis=0)
    samples = [s for s, c in zip(faces, centres) if np.abs(c - middle).max() < 0.03][:8]
    assert len(samples) == 8
    detect = models.open_detector(YUNET, models.PHOTO, 0.5).detect
    images, boxes = [], []
    for sample in samples:
        image, _ = letterbox(sample_pixels(sample, max_side=448), 448)
        found = detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)).box
        assert found is not None, sample.image
        images.append(image)
        boxes.append(np.array(found, float) / 448)
    moved, moved_boxes = moved_photos(np.stack(images), np.array(boxes))
    overlaps = []
    for image, box in zip(moved, moved_boxes):
        found = detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)).box
        overlaps.append(0.0 if found is None else float(iou(np.array(found) / 448, box)))
    assert min(overlaps) > 0.7, overlaps
    boxes = np.array(boxes)
    same = iou(np.broadcast_to(boxes.mean(axis=0), boxes.shape), boxes).mean()
    moved_same = iou(np.broadcast_to(moved_boxes.mean(axis=0), moved_boxes.shape), moved_boxes).mean()
    assert moved_same < same - 0.15, (same, moved_same)


def test_a_still_person_is_judged_on_the_moved_photos_not_on_the_still_ones():
    """The same box scores 0.9 on a still person's photos; a model that finds the face on them and on
    the moved photos is not called a guess, and the page says why the still photos say little."""
    val_has, val_boxes = still_faces(12, seed=1)
    train_has, train_boxes = still_faces(40, seed=2)
    moved = moved_photos(np.zeros((12, 64, 64, 3), np.uint8), val_boxes)[1]
    guess = run_verdict(0.91, val_has, val_boxes, train_has, train_boxes)
    assert guess["mean_box_val_iou"] > 0.85 and any("no better than guessing" in w for w in guess["warnings"]), \
        "without the moved photos, a model that works looks like a guess here"
    verdict = run_verdict(0.91, val_has, val_boxes, train_has, train_boxes, model_moved_iou=0.84, moved_boxes=moved)
    assert verdict["warnings"] == [], verdict
    assert verdict["moved_photos"] == 12 * MOVED_COPIES and verdict["mean_box_moved_iou"] < 0.84 - MARGIN
    line = comparison_line(verdict)
    assert line.startswith("your model: mean IoU 0.910 on the 12 validation photos, 0.840 with the faces moved; "
                           "the same box on every photo: 0.9"), line
    assert f"{verdict['mean_box_moved_iou']:.3f} moved; YuNet, trained elsewhere: not measured" in line
    said = " ".join(meaning(verdict))
    assert "barely move" in said and "cannot tell a model that finds faces from one that learnt where the face sits" \
        in said


def test_a_model_that_only_learnt_where_the_face_sits_is_warned():
    val_has, val_boxes = still_faces(12, seed=1)
    train_has, train_boxes = still_faces(40, seed=2)
    moved = moved_photos(np.zeros((12, 64, 64, 3), np.uint8), val_boxes)[1]
    same = float(iou(np.broadcast_to(moved.mean(axis=0), moved.shape), moved).mean())
    verdict = run_verdict(0.93, val_has, val_boxes, train_has, train_boxes, model_moved_iou=same + 0.01,
                          moved_boxes=moved)
    assert len(verdict["warnings"]) == 1 and verdict["warnings"][0].startswith(
        "no better than guessing: with the faces moved"), verdict["warnings"]
    assert "check the labels" in verdict["warnings"][0]


def webcam_copy(webcam: Path, target: Path) -> Path:
    shutil.copytree(webcam, target)
    return target


def describe(label: Path, description: str) -> None:
    data = json.loads(label.read_text())
    for shape in data["shapes"]:
        shape["description"] = description
    label.write_text(json.dumps(data))


def test_yunet_is_not_scored_on_its_own_pre_labels(webcam, tmp_path):
    """Photos recorded on the Dataset page carry YuNet's boxes: scored on them YuNet only agrees with
    itself. It is scored on the labels it did not draw (a person's, or its own corrected by hand)."""
    from facetracker.data.datasets import load_dataset
    from facetracker.labelling.prelabel import drawn_by_yunet, yunet_prelabel_fit

    folder = webcam_copy(webcam, tmp_path / "faces")
    val_labels = sorted((folder / "val" / "labels").glob("*.json"))
    describe(val_labels[0], "pre-label: YuNet (OpenCV model zoo), boxes as this dataset draws them (learnt from 40 faces)")
    describe(val_labels[1], "pre-label: yunet")
    describe(val_labels[2], "corrected by hand")
    dataset = load_dataset(folder, check_pixels=False)
    train, val = dataset.split("train"), dataset.split("val")
    assert [drawn_by_yunet(s) for s in val if s.label in map(str, val_labels[:3])] == [True, True, False]
    fit = yunet_prelabel_fit(train, val)
    faces = sum(s.has_face for s in val)
    assert fit.own_labels == 2 and fit.photos == faces - 2 and fit.mean_iou > 0.6

    for label in val_labels:
        describe(label, "pre-label: yunet")
    val = load_dataset(folder, check_pixels=False).split("val")
    fit = yunet_prelabel_fit(train, val)
    assert fit.mean_iou is None and fit.own_labels == faces and fit.photos == 0
    val_has = np.array([s.has_face for s in val], float)
    val_boxes = np.array([s.box or (0, 0, 0, 0) for s in val], float)
    verdict = run_verdict(0.8, val_has, val_boxes, val_has, val_boxes, prelabel_val_iou=fit.mean_iou,
                          prelabel_photos=fit.photos, prelabel_own_labels=fit.own_labels)
    assert "YuNet, trained elsewhere: not compared: the validation labels are its own pre-labels" in \
        comparison_line(verdict)
    assert any("YuNet is no yardstick here" in sentence for sentence in meaning(verdict))
    assert verdict["prelabel_val_iou"] is None and not any("YuNet" in w for w in verdict["warnings"])
