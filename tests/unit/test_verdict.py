"""The end-of-run verdict: better than guessing, on enough photos, or a plain warning."""

from pathlib import Path

import numpy as np
import pytest

from facetracker.evaluation.verdict import (
    MIN_VALIDATION_PHOTOS,
    comparison_line,
    run_verdict,
)


def photos(n, box=(0.3, 0.2, 0.7, 0.8), jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.array([box] * n, float) + rng.normal(0, jitter, (n, 4))
    return np.ones(n), boxes


def test_a_model_that_beats_the_average_box_on_enough_photos_gets_no_warning():
    val_has, val_boxes = photos(20, jitter=0.1, seed=1)
    train_has, train_boxes = photos(60, jitter=0.1, seed=2)
    verdict = run_verdict(0.85, val_has, val_boxes, train_has, train_boxes)
    assert verdict["warnings"] == [] and verdict["val_photos"] == 20
    assert 0.2 < verdict["mean_box_val_iou"] < 0.85


def test_a_model_no_better_than_the_average_box_is_called_so():
    val_has, val_boxes = photos(20, jitter=0.02, seed=1)  # faces always in the same place: guessing is easy
    train_has, train_boxes = photos(60, jitter=0.02, seed=2)
    verdict = run_verdict(0.70, val_has, val_boxes, train_has, train_boxes)
    assert verdict["mean_box_val_iou"] > 0.8
    assert any("no better than guessing" in w for w in verdict["warnings"])


def test_too_few_or_no_validation_photos_are_said_plainly():
    val_has, val_boxes = photos(MIN_VALIDATION_PHOTOS - 8, jitter=0.1)
    train_has, train_boxes = photos(30, jitter=0.1, seed=3)
    verdict = run_verdict(0.9, val_has, val_boxes, train_has, train_boxes)
    assert any("only 2 validation photos" in w for w in verdict["warnings"])
    verdict = run_verdict(0.9, train_has, train_boxes, train_has, train_boxes, validated_on_training=True)
    assert any("no validation photos" in w for w in verdict["warnings"])
    empty = run_verdict(0.0, np.zeros(12), np.zeros((12, 4)), train_has, train_boxes)  # no face to measure
    assert empty["mean_box_val_iou"] is None and empty["val_faces"] == 0


def test_a_model_clearly_worse_than_the_pre_labels_is_told_so_in_plain_words():
    val_has, val_boxes = photos(20, jitter=0.1, seed=1)
    train_has, train_boxes = photos(60, jitter=0.1, seed=2)
    worse = run_verdict(0.62, val_has, val_boxes, train_has, train_boxes, prelabel_val_iou=0.85)
    assert worse["prelabel_val_iou"] == 0.85
    assert any("worse than YuNet" in w and "0.85" in w and "0.62" in w for w in worse["warnings"])
    close = run_verdict(0.80, val_has, val_boxes, train_has, train_boxes, prelabel_val_iou=0.85)
    assert close["warnings"] == []  # a few hundredths apart on 20 photos is not a clear difference
    line = comparison_line(worse)
    assert line.startswith("your model: mean IoU 0.620 on the 20 validation photos; the same box on every photo: 0.")
    assert line.endswith("; YuNet, trained elsewhere: 0.850")
    unmeasured = run_verdict(0.8, val_has, val_boxes, train_has, train_boxes)
    assert unmeasured["prelabel_val_iou"] is None and "YuNet, trained elsewhere: not measured" in comparison_line(unmeasured)


def test_yunet_pre_labels_on_real_webcam_photos_fit_their_labels(webcam):
    """On real faces the pre-labeller is a strong reference: a model must come near it to be worth having."""
    from facetracker.data.datasets import load_dataset
    from facetracker.labelling.prelabel import yunet_prelabel_fit

    dataset = load_dataset(webcam, check_pixels=False)
    val = dataset.split("val")
    fit = yunet_prelabel_fit(dataset.split("train"), val)
    assert fit.mean_iou is not None and fit.mean_iou > 0.6  # found on 8 of the 10 faces, each with an IoU above 0.75
    assert fit.photos == sum(s.has_face for s in val) and fit.unreadable == 0
    assert yunet_prelabel_fit(dataset.split("train"), [s for s in val if not s.has_face]).mean_iou is None


def copied_split(webcam, target):
    """The webcam dataset copied (training deletes nothing of ../shared), and its train and val samples."""
    import shutil

    from facetracker.data.datasets import load_dataset

    shutil.copytree(webcam, target)
    dataset = load_dataset(target, check_pixels=False)
    return dataset.split("train"), dataset.split("val")


def test_validation_photos_deleted_during_training_are_left_out_not_scored_zero(webcam, tmp_path):
    from facetracker.labelling.prelabel import yunet_prelabel_fit

    train, val = copied_split(webcam, tmp_path / "faces")
    with_face = [s for s in val if s.has_face]
    whole = yunet_prelabel_fit(train, val)
    gone = with_face[:3]
    kept = [s for s in val if s not in gone]
    for sample in gone:
        Path(sample.image).unlink()
    fit = yunet_prelabel_fit(train, val)
    assert fit.unreadable == 3 and fit.photos == len(with_face) - 3
    assert fit.mean_iou == pytest.approx(yunet_prelabel_fit(train, kept).mean_iou), "the mean of the others"
    assert fit.mean_iou > 0.6 and whole.mean_iou > 0.6

    val_has = np.array([s.has_face for s in val], float)
    val_boxes = np.array([s.box or (0, 0, 0, 0) for s in val], float)
    train_has = np.array([s.has_face for s in train], float)
    train_boxes = np.array([s.box or (0, 0, 0, 0) for s in train], float)
    verdict = run_verdict(0.8, val_has, val_boxes, train_has, train_boxes, prelabel_val_iou=fit.mean_iou,
                          prelabel_photos=fit.photos, prelabel_unreadable=fit.unreadable)
    line = comparison_line(verdict)
    assert f"YuNet, trained elsewhere: {verdict['prelabel_val_iou']:.3f} on the {fit.photos} validation photos with a face it could read " \
           "(3 could not be read again and were left out)" in line, line


def test_when_no_validation_photo_can_be_read_the_pre_labels_get_no_score(webcam, tmp_path):
    """The dataset deleted during training: no 0.000 for YuNet, and the reason instead."""
    import shutil

    from facetracker.labelling.prelabel import yunet_prelabel_fit
    from facetracker.nn.train import _prelabel_figures, _prelabel_fit

    train, val = copied_split(webcam, tmp_path / "faces")
    shutil.rmtree(tmp_path / "faces")
    fit = yunet_prelabel_fit(train, val)
    assert fit.mean_iou is None and fit.photos == 0 and fit.unreadable == sum(s.has_face for s in val)

    class Cache:  # what the training step hands over: the samples it read
        def __init__(self, samples):
            self.samples = samples

    class NoStop:
        def check(self):
            return False

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    measured = _prelabel_fit(Cache(train), Cache(val), run_dir, NoStop(), log=lambda _: None)
    verdict = run_verdict(0.8, np.ones(len(val)), np.tile([0.3, 0.2, 0.7, 0.8], (len(val), 1)), np.ones(30),
                          np.tile([0.3, 0.2, 0.7, 0.8], (30, 1)), **_prelabel_figures(measured))
    assert verdict["prelabel_val_iou"] is None and verdict["prelabel_unreadable"] == fit.unreadable
    assert not any("worse than YuNet" in w for w in verdict["warnings"])
    line = comparison_line(verdict)
    assert "0.000" not in line
    assert (f"YuNet, trained elsewhere: not measured: none of the {fit.unreadable} validation photos with a face could be "
            "read again") in line, line
