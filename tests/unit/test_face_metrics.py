"""Per-face metrics: every predicted box matched to every labelled face."""

import json
import math

import cv2
import pytest

from facetracker.evaluation.face_metrics import PhotoResult, match, score_photos
from facetracker.inference.yunet import YuNetDetector
from tests.conftest import require


def test_each_labelled_face_takes_at_most_one_prediction():
    photo = PhotoResult.of(boxes=[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 70, 70]], scores=[0.9, 0.8, 0.7],
                           truth=[[0, 0, 10, 10], [50, 50, 70, 72]])
    right, found = match(photo)
    assert right.tolist() == [True, False, True]  # the duplicate is a false alarm
    assert found[0] == 1.0 and found[1] == pytest.approx(400 / 440)


def test_scores_of_a_set_of_photos():
    photos = [
        PhotoResult.of([[0, 0, 100, 100], [200, 0, 220, 20]], [0.9, 0.8], [[0, 0, 100, 100], [200, 0, 220, 20]]),
        PhotoResult.of([[0, 0, 10, 10]], [0.3], [[300, 300, 340, 340]]),  # a miss and a weak false alarm
        PhotoResult.of([], [], []),  # an empty photo, rightly empty
    ]
    metrics = score_photos(photos, threshold=0.5)
    assert metrics["n_photos"] == 3 and metrics["n_faces"] == 3
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["precision"] == 1.0  # the false alarm sits under the threshold
    assert metrics["ap50"] == pytest.approx(2 / 3)
    assert metrics["ap50_95"] == pytest.approx(2 / 3)  # the two found faces match exactly
    assert metrics["mean_iou"] == 1.0
    assert metrics["recall_small"] == 1.0 and metrics["n_small"] == 1  # the 20 px face
    assert metrics["recall_medium"] == 0.0 and metrics["recall_large"] == 1.0
    assert math.isnan(metrics["recall_tiny"])
    assert metrics["photo_accuracy"] == pytest.approx(2 / 3)  # photo 2 has a face and was called empty


def test_yunet_on_real_group_photos(data_root):
    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    detector = YuNetDetector(max_side=None)
    photos = []
    for label_file in sorted((groups / "labels").glob("*.json"))[:30]:
        faces = detector.detect_all(cv2.imread(str(groups / "images" / f"{label_file.stem}.jpg")))
        truth = [[*s["points"][0], *s["points"][1]] for s in json.loads(label_file.read_text())["shapes"]]
        truth = [[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in truth]
        photos.append(PhotoResult.of([f.box for f in faces], [f.score for f in faces], truth))
    metrics = score_photos(photos, threshold=0.6)
    assert metrics["n_faces"] > 60
    assert metrics["recall_medium"] >= 0.9 and metrics["recall_large"] >= 0.9
    assert 0.5 < metrics["ap50"] <= 1.0 and metrics["ap50_95"] < metrics["ap50"]
    assert metrics["mean_iou"] > 0.6


def test_evaluate_scores_the_reference_detectors_per_face(data_root, tmp_path):
    """`evaluate --model yunet` (and haar): every face of real group photos, from the command line."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    for label in sorted((groups / "labels").glob("*.json"))[:12]:
        for sub, name in (("labels", label.name), ("images", f"{label.stem}.jpg")):
            (tmp_path / "groups" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(groups / sub / name, tmp_path / "groups" / sub / name)
    figures = {}
    for model in ("yunet", "haar"):
        out = tmp_path / f"{model}.json"
        result = subprocess.run([sys.executable, "-m", "facetracker", "evaluate", "--model", model, "--data",
                                 str(tmp_path / "groups"), "--json", str(out)], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "every face (" in result.stdout
        figures[model] = json.loads(out.read_text())["faces"]
    assert figures["yunet"]["n_photos"] == 12 and figures["yunet"]["n_faces"] > 20
    assert figures["yunet"]["recall"] >= 0.9 and figures["yunet"]["recall"] > figures["haar"]["recall"]
