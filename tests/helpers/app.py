"""Driving the app under AppTest: a data root with real photos, opening a page as a person does,
run folders as a training process leaves them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import cv2
import pytest
from streamlit.testing.v1 import AppTest

from app_pages import ui
from facetracker.runs import run_folder as runs
from tests.conftest import REPO
from tests.helpers import browser as bt

ENTRY = str(REPO / "streamlit_app.py")
N_FACES, N_EMPTY = 20, 4


# ----------------------------------------------------------------------------------------------
# Fixtures: a data root with a small copy of real photos


def copy_helen(helen: Path, target: Path, faces: int = N_FACES, empty: int = N_EMPTY) -> Path:
    """`faces` labelled photos (image + labelme JSON) and `empty` no-face photos of faces-helen."""
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    labels = sorted((helen / "labels").glob("*.json"))[:faces]
    for label in labels:
        image_name = Path(json.loads(label.read_text())["imagePath"]).name
        shutil.copy(label, target / "labels" / label.name)
        shutil.copy(helen / "images" / image_name, target / "images" / image_name)
    labelled = {p.stem for p in (helen / "labels").glob("*.json")}
    no_face = [p for p in sorted((helen / "images").iterdir()) if p.stem not in labelled][:empty]
    for image in no_face:
        shutil.copy(image, target / "images" / image.name)
    return target


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty data root the app is pointed at."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(data_root))
    monkeypatch.delenv("FACETRACKER_ICE_SERVERS", raising=False)
    return data_root


@pytest.fixture
def faces(root, helen) -> Path:
    return copy_helen(helen, root / "faces")


@pytest.fixture(autouse=True)
def no_webrtc_session():
    with mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        yield


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=90)
    at.switch_page(page)
    at.run()
    assert_no_exception(at)
    return at


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    unexpected = [e.value for e in at.error if e.value.startswith(ui.UNEXPECTED)]
    assert not unexpected, unexpected


def click(at: AppTest, label: str) -> AppTest:
    """Press the button with this label, as a person does, and let the page run."""
    return at.button[[b.label for b in at.button].index(label)].click().run()


def texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def face_jpeg() -> bytes:
    frame = bt.face_frames_from_dataset(n=1)[0]
    return cv2.imencode(".jpg", frame)[1].tobytes()


def write_run(runs_root: Path, name: str, data: Path, *, state: str, pid: int | None = None, steps: int = 0,
              epochs_done: int = 0, error: str | None = None) -> Path:
    """A run folder as a training process leaves it (config, status, metrics), without training."""
    from facetracker.config.training import config_for

    run_dir = runs_root / name
    run_dir.mkdir(parents=True)
    config = config_for(str(data), "fast", backbone="mobilenet-0.25", weights="none", epochs=3)
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    runs.write_json(run_dir / runs.STATUS, {"state": state, "pid": pid, "epoch": max(epochs_done, 1), "epochs": 3,
                                            "step": steps, "total_steps": 30, "progress": steps / 30,
                                            "images_per_s": 42.0, "eta_s": 75, "error": error})
    for step in range(1, steps + 1):
        runs.append_metrics(run_dir, {"kind": "step", "epoch": 1, "step": step, "loss": 1.0 / step,
                                      "class_loss": 0.5 / step, "box_loss": 0.4 / step})
    for epoch in range(1, epochs_done + 1):
        runs.append_metrics(run_dir, {"kind": "epoch", "epoch": epoch, "step": epoch * 10, "val_mean_iou": 0.3,
                                      "val_iou50": 0.25, "val_accuracy": 0.8})
    return run_dir
