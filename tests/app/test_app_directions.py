"""The app's directions match what it does: Home and Evaluate point to the preset the Train page
chooses, Home to the detector Detect runs, and Evaluate says when a split is too small to judge."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
from streamlit.testing.v1 import AppTest

from facetracker.config.training import SMALL_DATASET_PHOTOS, config_for
from facetracker.evaluation.verdict import MIN_VALIDATION_PHOTOS
from facetracker.inference.detect import HAAR_LABEL, YUNET_LABEL
from facetracker.runs import run_folder as runs
from tests.conftest import REPO


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    with mock.patch.dict(os.environ, {"FACETRACKER_DATA_ROOT": str(folder)}), \
            mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        yield folder


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def copy_frames(webcam: Path, target: Path, faces: int, empty: int, split: str = "train") -> None:
    """`faces` frames of the webcam recording with their labels and `empty` without a face."""
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "labels").mkdir(parents=True, exist_ok=True)
    frames = sorted((webcam / split / "images").glob("*.jpg"))
    labelled = [f for f in frames if (webcam / split / "labels" / f"{f.stem}.json").exists()][:faces]
    unlabelled = [f for f in frames if not (webcam / split / "labels" / f"{f.stem}.json").exists()][:empty]
    for frame in labelled + unlabelled:
        shutil.copy(frame, target / "images" / frame.name)
        label = webcam / split / "labels" / f"{frame.stem}.json"
        if label.exists():
            shutil.copy(label, target / "labels" / label.name)


def test_home_without_a_dataset_offers_the_detector_that_detect_runs(root):
    at = open_page("app_pages/home.py")
    links = [link.label for link in at.get("page_link")]
    assert any(YUNET_LABEL in label and "webcam" in label for label in links), links
    assert not any(HAAR_LABEL in label for label in links)
    detect = open_page("app_pages/detect.py")
    assert any("YuNet runs" in i.value for i in detect.info)


def test_home_and_evaluate_point_to_the_preset_the_train_page_chooses(root, webcam):
    copy_frames(webcam, root / "recording", faces=20, empty=4)
    home = open_page("app_pages/home.py")
    steps = next(m.value for m in home.markdown if "3. Train a model" in m.value)
    assert f"fewer than {SMALL_DATASET_PHOTOS} photos" in steps and "`quick` preset" in steps, steps
    assert "`fast`" not in steps
    evaluate = open_page("app_pages/evaluate.py")
    said = next(i.value for i in evaluate.info if "No trained model yet" in i.value)
    assert "`quick` preset" in said and "`fast`" not in said
    train = open_page("app_pages/train.py")
    assert train.selectbox[[s.label for s in train.selectbox].index("Preset")].value == "quick"
    assert any("`quick` preset" in i.value for i in train.info)


def test_evaluate_warns_that_a_split_of_a_few_photos_cannot_judge_the_model(root, webcam):
    """A test split of 4 photos, two with a face: every figure is 1.000 or 0.000 by luck, and said so;
    all 14 photos are enough to be shown without the warning."""
    from facetracker.nn.model import build_model, inference_copy

    faces = root / "faces"
    copy_frames(webcam, faces / "train", faces=8, empty=2)
    copy_frames(webcam, faces / "test", faces=2, empty=2, split="test")
    run_dir = root / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    runs.write_json(run_dir / runs.CONFIG, config_for(faces, "fast", backbone="mobilenet-0.25", weights="none",
                                                      epochs=1).to_dict())
    runs.write_json(run_dir / runs.STATUS, {"state": "finished", "pid": None, "epoch": 1, "epochs": 1})
    inference_copy(build_model("mobilenet-0.25", "none", head="spatial")).save(run_dir / runs.MODEL)

    at = open_page("app_pages/evaluate.py")
    assert at.selectbox(key="eval_split_faces").value == "test"
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Only 4 photos (2 with a face) in the test split: too few to judge the model") and
               f"at least {MIN_VALIDATION_PHOTOS}" in w for w in warnings), warnings
    at.selectbox(key="eval_split_faces").set_value("all images").run()
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert {m.label for m in at.metric} >= {"Mean IoU", "Faces found"}
    assert not any("too few to judge" in w.value for w in at.warning)


def test_the_command_line_warns_likewise(webcam, tmp_path, capsys):
    from facetracker.cli import main

    copy_frames(webcam, tmp_path / "few", faces=3, empty=1)
    assert main(["evaluate", "--model", "yunet", "--data", str(tmp_path / "few")]) == 0
    out = capsys.readouterr().out
    assert "warning: only 4 photos: too few to judge the model" in out and f"(at least {MIN_VALIDATION_PHOTOS})" in out
    copy_frames(webcam, tmp_path / "enough", faces=9, empty=2)
    assert main(["evaluate", "--model", "yunet", "--data", str(tmp_path / "enough")]) == 0
    assert "too few to judge" not in capsys.readouterr().out
