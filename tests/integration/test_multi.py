"""The `multi` preset end to end on real photos: train on portraits, find several faces per group photo.

The training photos are faces-helen portraits (one face each); the group photos are faces-afw-groups,
which no model here trains on.
"""

import json
import shutil

import cv2
import numpy as np
import pytest

from facetracker.config.training import PRESETS
from facetracker.data.datasets import load_dataset
from facetracker.data.images import sample_pixels
from facetracker.evaluation.face_metrics import PhotoResult, match
from facetracker.inference.dense import input_for_frame
from facetracker.runs import run_folder as runs
from tests.helpers.cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def multi_run(short_multi_run):
    """The session's short multi run (see conftest): 200 helen portraits and 40 no-face photos, 6 epochs."""
    return short_multi_run


def test_a_short_multi_run_finds_several_faces_in_real_group_photos(multi_run, data_root):
    from facetracker.inference.detect import Detector
    from facetracker.inference.runtimes import load_runtime

    run_dir, result = multi_run
    status = runs.read_status(run_dir)
    assert status["state"] == "finished", result.stdout[-2000:]
    epochs = [r for r in runs.read_metrics(run_dir) if r["kind"] == "epoch"]
    assert len(epochs) == 6 and all("val_ap50" in r and "val_face_recall" in r for r in epochs)
    groups = load_dataset(data_root / "faces-afw-groups", check_pixels=False).samples
    crowded = [s for s in groups if len(s.faces) >= 3][:12]
    assert len(crowded) == 12
    runtime = load_runtime(run_dir)
    found = {}
    for look_closer in (False, True):
        detector = Detector(runtime, threshold=0.3, look_closer=look_closer)
        found[look_closer] = []
        for sample in crowded:
            rgb = sample_pixels(sample, max_side=640)
            height, width = rgb.shape[:2]
            detection = detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            truth = np.array(sample.faces) * [width, height, width, height]
            photo = PhotoResult.of([f.box for f in detection.faces], [f.score for f in detection.faces], truth)
            found[look_closer].append(int((match(photo, 0.5)[1] >= 0.5).sum()))
    found_per_photo = found[False]
    print(f"\n[multi] faces found at IoU 0.5 in {len(crowded)} group photos: {found_per_photo}, looking closer "
          f"{found[True]} (labelled: {[len(s.faces) for s in crowded]})")
    # Faces found at IoU 0.5 against the labels, not merely boxes drawn.
    assert np.mean(found_per_photo) > 1.5, found_per_photo
    assert sum(found >= 2 for found in found_per_photo) >= 6, found_per_photo
    # Looking closer at the photos finds the smaller faces too.
    assert sum(found[True]) > sum(found_per_photo), found


def test_a_multi_model_exports_to_tflite_with_its_decoding_and_predicts_every_face(multi_run, data_root, tmp_path):
    from facetracker.inference.detect import Detector
    from facetracker.inference.runtimes import load_runtime

    run_dir, _ = multi_run
    group = next(s for s in load_dataset(data_root / "faces-afw-groups", check_pixels=False).samples
                 if len(s.faces) >= 4)
    frame = cv2.cvtColor(sample_pixels(group, max_side=640), cv2.COLOR_RGB2BGR)
    camera_frame = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA)
    keras = Detector(load_runtime(run_dir), threshold=0.3)
    # What the live path runs (the ONNX exporter is tested in test_export_detect): TFLite at the square
    # input it trained at (photos), and shaped for 640x480 camera frames, seen 1.2 times as large.
    side = PRESETS["multi"]["image_size"]
    live_wh = input_for_frame(side, 640, 480)
    cli("export", "--model", run_dir, "--format", "tflite")
    cli("export", "--model", run_dir, "--format", "tflite", "--frame", "640x480")
    square = load_runtime(run_dir / "model.tflite")
    shaped = load_runtime(run_dir / f"model.{live_wh[0]}x{live_wh[1]}.tflite")
    assert square.dense and square.input_wh == (side, side)
    assert shaped.dense and shaped.input_wh == live_wh == (384, 288)
    for image in (frame, camera_frame):
        faces = Detector(square, threshold=0.3).detect(image).faces
        assert [f.box for f in faces] == pytest.approx([f.box for f in keras.detect(image).faces], abs=2)
    # The Keras model run as the live path runs it (evaluate's whole-frame figures) is the same network.
    live_keras = load_runtime(run_dir, frame=(640, 480))
    assert live_keras.input_wh == live_wh
    live_faces = Detector(live_keras, threshold=0.3).detect(camera_frame).faces
    assert len(live_faces) >= 2
    assert [f.box for f in Detector(shaped, threshold=0.3).detect(camera_frame).faces] == pytest.approx(
        [f.box for f in live_faces], abs=2)
    keras_faces = keras.detect(frame).faces
    # predict writes every face it finds into the labelme file, for pre-labelling group photos
    images = tmp_path / "group"
    images.mkdir()
    shutil.copy(group.image, images)
    cli("predict", "--model", run_dir, "--images", images, "--out", tmp_path / "labels", "--threshold", "0.3")
    written = json.loads(next((tmp_path / "labels").glob("*.json")).read_text())
    # as for any photo, it also looks closer (in tiles at twice the scale)
    closer_faces = Detector(load_runtime(run_dir), threshold=0.3, look_closer=True).detect(frame).faces
    assert len(written["shapes"]) == len(closer_faces) >= len(keras_faces) >= 2

