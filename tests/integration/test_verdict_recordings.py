"""The verdict on real recordings: a person who sat still, one who moved, and photos whose boxes were
given to other photos. Each trains `quick` for a few epochs (about a minute on 2 cores) and is judged
as the Train page shows it: green for the two models that work, yellow for the mislabelled one.

`python -m pytest tests/test_verdict_recordings.py -n 0 -s` prints each run's figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetracker.data.datasets import load_dataset, read_image
from facetracker.data.labelme import labelme_json
from facetracker.runs import run_folder as runs
from tests.conftest import REPO, SHARED_WEIGHTS, require

pytestmark = pytest.mark.slow

WIDTH = 640
"""Frames are written 640 px wide: training caches them at 224 px, and smaller files decode faster."""


def recorded_frames(webcam: Path) -> list:
    """Every frame of the webcam recording in the order it was taken (by name)."""
    return sorted(load_dataset(webcam, check_pixels=False).samples, key=lambda s: Path(s.image).name)


def smaller(sample) -> np.ndarray:
    rgb = read_image(sample.image)
    return cv2.resize(rgb, (WIDTH, WIDTH * rgb.shape[0] // rgb.shape[1]), interpolation=cv2.INTER_AREA)


def write_photo(folder: Path, name: str, rgb: np.ndarray, box=None) -> None:
    """A photo, and its labelme label when it has a box (normalised)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if box is not None:
        height, width = rgb.shape[:2]
        pixels = tuple(float(v) * side for v, side in zip(box, (width, height, width, height)))
        (folder / "labels" / f"{name}.json").write_text(labelme_json(f"../images/{name}.jpg", width, height, pixels))


def still_recording(webcam: Path, target: Path, copies: int = 6, seed: int = 0) -> Path:
    """A person who barely moves, as a few seconds of sitting still in front of a webcam record them:
    the frames of the recording where the face stays in one place (its centre within 0.02 of the
    stretch's median), each `copies` times shifted by at most half a percent of the frame (a camera's
    jitter), with their labels moved alike, and the stretch's frames without a face."""
    rng = np.random.default_rng(seed)
    frames = recorded_frames(webcam)
    stretch = frames[next(i for i, s in enumerate(frames) if Path(s.image).name.startswith("dd93")):]
    centres = np.array([[(s.box[0] + s.box[2]) / 2, (s.box[1] + s.box[3]) / 2] for s in stretch if s.box])
    middle = np.median(centres, axis=0)
    for sample in stretch:
        rgb = smaller(sample)
        if sample.box is None:
            write_photo(target, Path(sample.image).stem, rgb)
            continue
        centre = np.array([(sample.box[0] + sample.box[2]) / 2, (sample.box[1] + sample.box[3]) / 2])
        if np.abs(centre - middle).max() > 0.02:
            continue
        height, width = rgb.shape[:2]
        for copy in range(copies):
            dx, dy = rng.uniform(-0.005, 0.005, 2)
            shifted = cv2.warpAffine(rgb, np.float32([[1, 0, dx * width], [0, 1, dy * height]]), (width, height),
                                     borderMode=cv2.BORDER_REPLICATE)
            box = np.clip(np.array(sample.box) + [dx, dy, dx, dy], 0.0, 1.0)
            write_photo(target, f"{Path(sample.image).stem}-{copy}", shifted, box)
    return target


def moving_recording(webcam: Path, target: Path) -> Path:
    """The whole recording, labelled by hand: the person turns, leans and comes closer."""
    for sample in recorded_frames(webcam):
        write_photo(target, Path(sample.image).stem, smaller(sample), sample.box)
    return target


def mislabelled(source: Path, target: Path, seed: int = 0) -> Path:
    """The same photos with each box given to another photo at random: labels that do not sit on the
    faces (the photos without a face keep no label)."""
    shutil.copytree(source, target)
    labels = sorted((target / "labels").glob("*.json"))
    points = [json.loads(path.read_text())["shapes"][0]["points"] for path in labels]
    for path, other in zip(labels, np.random.default_rng(seed).permutation(len(labels))):
        data = json.loads(path.read_text())
        data["shapes"][0]["points"] = points[other]
        path.write_text(json.dumps(data))
    return target


EPOCHS = {"still": 5, "moving": 8, "mislabelled": 4}
"""Short runs of `quick` (its 20 epochs take two to three minutes); the moving person's needs more
epochs than the still one's to come near YuNet, the mislabelled photos' learn nothing however long."""


@pytest.fixture(scope="module")
def recordings(webcam, tmp_path_factory) -> Path:
    """A data root holding the three recordings (still, moving, mislabelled) and the Keras cache."""
    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    root = tmp_path_factory.mktemp("recordings")
    shutil.copytree(SHARED_WEIGHTS, root / "keras-home" / "models")
    still_recording(webcam, root / "still")
    moving_recording(webcam, root / "moving")
    mislabelled(root / "moving", root / "mislabelled")
    return root


def trained_run(recordings: Path, name: str) -> Path:
    """`quick` trained on one recording into the data root's runs folder, its log kept beside it."""
    from facetracker.config.training import config_for
    from facetracker.nn.train import train

    run_dir = recordings / "runs" / name
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    lines: list[str] = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KERAS_HOME", str(recordings / "keras-home"))
            status = train(config_for(recordings / name, "quick", epochs=EPOCHS[name]), run_dir, log=lines.append)
    finally:
        for number, handler in saved_signals.items():  # train() installs its own
            signal.signal(number, handler)
    assert status["state"] == "finished", "\n".join(lines)
    (run_dir / "test.log").write_text("\n".join(lines))
    return run_dir


@pytest.fixture(scope="module")
def still(recordings) -> Path:
    return trained_run(recordings, "still")


@pytest.fixture(scope="module")
def moving(recordings) -> Path:
    return trained_run(recordings, "moving")


@pytest.fixture(scope="module")
def mislabelled_run(recordings) -> Path:
    return trained_run(recordings, "mislabelled")


def verdict_of(run_dir: Path) -> dict:
    from facetracker.evaluation.verdict import comparison_line

    verdict = runs.read_status(run_dir)["verdict"]
    print(f"\n{run_dir.name}: {comparison_line(verdict)}" + "".join(f"\n  warning: {w}" for w in verdict["warnings"]))
    return verdict


def test_a_model_of_a_still_person_is_not_called_a_guess(still):
    """The same box on every photo fits a still person's validation photos nearly as well as the model:
    judged on them moved, where the model keeps its score and the same box does not, it is green."""
    from facetracker.evaluation.verdict import MARGIN, STILL_FACES_IOU

    verdict = verdict_of(still)
    assert verdict["mean_box_val_iou"] > STILL_FACES_IOU, "a still person: the same box fits"
    assert verdict["model_moved_iou"] > verdict["mean_box_moved_iou"] + MARGIN
    assert verdict["warnings"] == []
    assert "with the faces moved" in (still / "test.log").read_text()


def test_a_model_of_a_moving_person_is_not_called_a_guess(moving):
    from facetracker.evaluation.verdict import MARGIN

    verdict = verdict_of(moving)
    assert verdict["model_val_iou"] > verdict["mean_box_val_iou"] + MARGIN
    assert verdict["model_moved_iou"] > verdict["mean_box_moved_iou"] + MARGIN
    assert verdict["prelabel_photos"] == verdict["val_faces"], "hand-drawn labels: YuNet is scored on every face"
    assert verdict["warnings"] == []


def test_a_model_trained_on_mislabelled_photos_is_warned(mislabelled_run):
    verdict = verdict_of(mislabelled_run)
    assert any(w.startswith("no better than guessing: with the faces moved") for w in verdict["warnings"]), verdict


def test_the_train_page_is_green_for_the_working_models_and_yellow_for_the_mislabelled_one(
        recordings, still, moving, mislabelled_run):
    from unittest import mock

    from streamlit.testing.v1 import AppTest

    with mock.patch.dict(os.environ, {"FACETRACKER_DATA_ROOT": str(recordings)}), \
            mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
        at.switch_page("app_pages/train.py")
        at.run()
        shown = {}
        for name in ("still", "moving", "mislabelled"):
            at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value(name).run()
            assert not at.exception, [e.value for e in at.exception]
            shown[name] = ([s.value for s in at.success], [w.value for w in at.warning],
                           [m.value.replace("\\", "") for m in at.markdown], [c.value for c in at.caption])
    for name in ("still", "moving"):
        success, warning, _, _ = shown[name]
        assert any(s.startswith("Finished") and "with the faces moved" in s for s in success), shown[name]
        assert not any("Finished" in w for w in warning)
    success, warning, _, _ = shown["mislabelled"]
    assert not any("Finished" in s for s in success)
    assert any("Finished" in w and "no better than guessing" in w for w in warning), warning
    _, _, markdown, captions = shown["still"]
    assert any("barely move" in c for c in captions), captions
    knows = next(m for m in markdown if m.startswith("**What this model knows.**"))
    assert "most likely one person" in knows
    assert any("other people:" in m and "several people in view:" in m for m in markdown), markdown


def test_the_run_folder_says_what_the_model_was_trained_on(recordings, still):
    from facetracker.evaluation.trained_on import read_trained_on

    split = json.loads((still / runs.SPLIT).read_text())
    profile = read_trained_on(still)
    train = [s for s in load_dataset(recordings / "still", check_pixels=False).samples if s.image in split["train"]]
    assert profile["photos"] == len(train) and profile["faces"] == sum(s.has_face for s in train)
    assert profile["no_face_photos"] == sum(not s.has_face for s in train) > 0
    assert profile["photo_sizes"] == {"640x360": len(train)} and profile["one_recording"]
    assert 0.15 < profile["face_width_fraction"][0] <= profile["face_width_fraction"][2] < 0.5
