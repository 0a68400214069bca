"""What a model knows: its training photos in figures, written into the run folder and said in words
on the Train page and under Detect's model picker, without loading the model."""

from __future__ import annotations

import os
import shutil
from unittest import mock

import pytest

from facetracker.config.training import config_for
from facetracker.data.datasets import load_dataset
from facetracker.evaluation.trained_on import (
    describe_training,
    knows,
    limits,
    read_trained_on,
)
from facetracker.runs import run_folder as runs
from tests.conftest import REPO


def test_a_webcam_recording_is_one_person_at_one_size_of_face(webcam):
    """The webcam recording's training split: faces a fifth to a half of the 1280x720 frame wide."""
    train = load_dataset(webcam, check_pixels=False).split("train")
    profile = describe_training(train, config_for(webcam, "quick"))
    faces = [s for s in train if s.has_face]
    assert profile["photos"] == 63 and profile["faces"] == len(faces) == 51 and profile["no_face_photos"] == 12
    assert profile["photo_sizes"] == {"1280x720": 63} and profile["one_recording"]
    low, middle, high = profile["face_width_px"]
    assert low == pytest.approx(min(s.box[2] - s.box[0] for s in faces) * 1280, abs=0.1) and low < middle < high
    said = knows(profile)
    assert said.startswith("Trained on 63 photos: 51 faces, ") and "and 12 photos without a face" in said
    assert "most likely one person, from one camera" in said
    doubts = limits(profile)
    # quick shrinks its photos up to 3 times (zoom-out), so the smallest face it saw is a third of the
    # smallest one, but no face narrower than a cell of its grid (8 of its 192 px) is found
    smallest = max(profile["face_width_fraction"][0] / 3, 8 / 192)
    assert profile["smallest_seen"] == pytest.approx(smallest, abs=1e-4)
    assert doubts[0].startswith(f"faces narrower than {smallest * 100:.0f}% of the frame (about "
                                f"{round(smallest * 640)} px of a 640 px webcam frame)")
    assert any(d.startswith("several people in view: every photo it trained on held one face") for d in doubts)
    assert any(d.startswith("other people") for d in doubts)


def test_a_single_box_model_on_group_photos_is_told_apart(data_root):
    """Group photos: several people, and a single-box preset that draws one box a frame whatever it saw."""
    groups = load_dataset(data_root / "faces-afw-groups", check_pixels=False).samples
    multi = describe_training(groups, config_for("d", "multi"))
    fast = describe_training(groups, config_for("d", "fast"))
    assert multi["several_faces_photos"] > 0 and not multi["one_recording"]
    assert "photos hold several faces" in knows(multi)
    assert not any(d.startswith("several people") for d in limits(multi))
    assert any(d == "several people in view: it draws one box a frame, on one of them" for d in limits(fast))
    assert any(d.startswith("an empty scene: it never saw a photo without a face") for d in limits(multi))
    # however small its training faces, a dense model finds none narrower than a cell of its grid
    assert multi["smallest_seen"] >= 8 / 320


def test_a_missing_or_hand_edited_file_is_read_as_nothing(webcam, tmp_path):
    profile = describe_training(load_dataset(webcam, check_pixels=False).split("train"), config_for(webcam, "quick"))
    assert read_trained_on(tmp_path) is None
    runs.write_json(tmp_path / runs.TRAINED_ON, profile)
    assert read_trained_on(tmp_path) == profile
    for broken in ({**profile, "faces": "many"}, {**profile, "face_width_px": [1, 2]}, [profile],
                   {k: v for k, v in profile.items() if k != "photos"}, {**profile, "smallest_seen": float("nan")}):
        (tmp_path / runs.TRAINED_ON).write_text(__import__("json").dumps(broken))
        assert read_trained_on(tmp_path) is None, broken
    (tmp_path / runs.TRAINED_ON).write_text("{not json")
    assert read_trained_on(tmp_path) is None


def test_the_train_and_detect_pages_say_what_the_model_knows(webcam, tmp_path):
    """A finished run with a (random) model and its trained_on.json: the Train page and the Detect
    page's model picker say what it was trained on and where it is not expected to work."""
    from streamlit.testing.v1 import AppTest

    from facetracker.nn.model import build_model, inference_copy

    root = tmp_path / "data"
    shutil.copytree(webcam, root / "webcam")
    run_dir = root / "runs" / "recorded"
    run_dir.mkdir(parents=True)
    config = config_for(root / "webcam", "fast", backbone="mobilenet-0.25", weights="none", epochs=3)
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    runs.write_json(run_dir / runs.STATUS, {"state": "finished", "pid": None, "epoch": 3, "epochs": 3,
                                            "best_val_iou": 0.8, "best_epoch": 3})
    inference_copy(build_model("mobilenet-0.25", "none", head="spatial")).save(run_dir / runs.MODEL)
    profile = describe_training(load_dataset(root / "webcam", check_pixels=False).split("train"), config)
    runs.write_json(run_dir / runs.TRAINED_ON, profile)
    with mock.patch.dict(os.environ, {"FACETRACKER_DATA_ROOT": str(root)}), \
            mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        train = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
        train.switch_page("app_pages/train.py")
        train.run()
        detect = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
        detect.switch_page("app_pages/detect.py")
        detect.run()
    for at in (train, detect):
        assert not at.exception, [e.value for e in at.exception]
    markdown = [m.value.replace("\\", "") for m in train.markdown]  # as shown: without literal()'s escapes
    assert any(m.startswith("**What this model knows.** Trained on 63 photos: 51 faces") for m in markdown), markdown
    assert any(m.startswith("**Where it is not expected to work:**") and "it draws one box a frame" in m
               for m in markdown), markdown
    assert detect.selectbox[0].value.startswith("recorded ")
    captions = [c.value.replace("\\", "") for c in detect.caption]
    assert any(c.startswith("Trained on 63 photos: 51 faces") and "Not expected to work on faces narrower than" in c
               for c in captions), captions
