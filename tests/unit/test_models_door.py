"""The one door that opens a model for a use (`facetracker.inference.models`), on the public-domain
photos kept with the tests: these run without the research photo sets."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from facetracker.boxes import iou
from facetracker.config.training import config_for
from facetracker.evaluation.evaluate import evaluate_every_face
from facetracker.inference import models
from facetracker.inference.dense import DEFAULT_THRESHOLD, LIVE_FRAME
from facetracker.inference.detect import HAAR, SINGLE_BOX_THRESHOLD, YUNET
from facetracker.runs import run_folder as runs
from tests.conftest import FIXTURE_FACES

ASTRONAUT_FACE = (180, 66, 268, 176)


def photo(name: str) -> np.ndarray:
    image = cv2.imread(str(FIXTURE_FACES / "images" / name))
    assert image is not None, name
    return image


@pytest.mark.parametrize("use", models.USES)
def test_yunet_finds_the_face_in_every_use_and_nothing_on_a_coffee_cup(use):
    detector = models.open_detector(YUNET, use)
    found = detector.detect(photo("astronaut.jpg"))
    assert len(found.faces) == 1 and iou(np.array(found.box), np.array(ASTRONAUT_FACE)) > 0.7, found
    assert detector.detect(photo("coffee.jpg")).faces == ()


def test_yunet_sees_a_live_frame_small_and_a_photo_whole():
    live, still = models.open_detector(YUNET, models.LIVE), models.open_detector(YUNET, models.PHOTO)
    assert live.yunet.max_side == models.REFERENCE_LIVE_SIDE and still.yunet.max_side is None
    assert models.open_detector(YUNET, models.VIDEO).yunet.max_side == models.REFERENCE_LIVE_SIDE
    assert type(models.open_detector(HAAR, models.PHOTO)).__name__ == "HaarDetector"
    with pytest.raises(ValueError, match="unknown use 'webcam'"):
        models.open_detector(YUNET, "webcam")


def test_a_run_is_read_without_loading_it(tmp_path):
    """Kind, threshold, input shape and name of a run's model come from its config.json."""
    dense, single = tmp_path / "every-face", tmp_path / "one-face"
    for run, preset in ((dense, "multi"), (single, "fast")):
        run.mkdir()
        (run / runs.CONFIG).write_text(config_for(str(FIXTURE_FACES), preset).to_json())
        (run / runs.MODEL).write_bytes(b"a model")
    assert models.finds_every_face(dense) and not models.finds_every_face(single)
    assert models.default_threshold(dense) == DEFAULT_THRESHOLD
    assert models.default_threshold(single) == models.default_threshold(YUNET) == SINGLE_BOX_THRESHOLD
    assert models.frame_for(dense, models.LIVE) == models.frame_for(dense, models.VIDEO) == LIVE_FRAME
    assert models.frame_for(dense, models.PHOTO) is None and models.frame_for(single, models.LIVE) is None
    assert models.exported_file(dense / runs.MODEL, LIVE_FRAME).name == "model.384x288.tflite"
    assert models.exported_file(single / runs.MODEL, None).name == "model.tflite"
    assert models.model_name(dense) == "every-face" and models.model_name(YUNET).startswith("YuNet")
    live, photo_key = models.model_version(dense, models.LIVE), models.model_version(dense, models.PHOTO)
    assert live[:3] == photo_key[:3] and live[3] == LIVE_FRAME and photo_key[3] is None
    assert models.model_version(single, models.LIVE) == models.model_version(single, models.PHOTO)


def test_a_missing_model_file_is_named(tmp_path):
    """A model file that is not there is named in the error, not looked for elsewhere."""
    with pytest.raises(FileNotFoundError, match="no such model file"):
        models.open_runtime(tmp_path / "absent.tflite", models.PHOTO)


def test_evaluate_scores_yunet_through_the_door_on_the_kept_photos(tmp_path):
    folder = tmp_path / "faces"
    shutil.copytree(FIXTURE_FACES, folder)
    result = evaluate_every_face(YUNET, folder)
    assert result.metrics["n_faces"] == 1 and result.metrics["recall"] == 1.0
    assert result.metrics["photo_accuracy"] == 1.0
