"""A run that stopped early, resumed with more epochs, trains towards them: its patience starts again,
and the log and the Train page say so before and after."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from facetracker.config.training import config_for
from facetracker.runs import run_folder as runs
from tests.conftest import REPO

TINY = dict(backbone="mobilenet-0.25", weights="none", batch_size=4, copies=1, cache_size=120)


@pytest.fixture
def webcam_photos(webcam, tmp_path) -> Path:
    """Ten frames of the webcam recording (two without a face) in one folder."""
    folder = tmp_path / "faces"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    frames = sorted((webcam / "train" / "images").glob("*.jpg"))
    labelled = [f for f in frames if (webcam / "train" / "labels" / f"{f.stem}.json").exists()][:8]
    empty = [f for f in frames if not (webcam / "train" / "labels" / f"{f.stem}.json").exists()][:2]
    for frame in labelled + empty:
        shutil.copy(frame, folder / "images" / frame.name)
        label = webcam / "train" / "labels" / f"{frame.stem}.json"
        if label.exists():
            shutil.copy(label, folder / "labels" / label.name)
    return folder


def stopped_early(run_dir: Path, patience: int) -> None:
    """Make a finished run look as one whose patience ran out at its last epoch: no epoch beat its best
    for `patience` epochs, and no later one can (a best mean IoU of 1)."""
    state = runs.read_json(run_dir / runs.CHECKPOINT_STATE)
    state.update(best_val_iou=1.0, best_epoch=max(1, state["epochs_done"] - patience), since_best=patience)
    runs.write_json(run_dir / runs.CHECKPOINT_STATE, state)
    runs.update_status(run_dir, message=f"stopped early at epoch {state['epochs_done']} of the 3 asked for: no "
                                        f"better validation IoU for {patience} epochs after epoch 1; resume to train on")


def test_resumed_after_an_early_stop_it_trains_the_epochs_asked_for(webcam_photos, tmp_path, restore_signals):
    """Carried over, the patience would already be used up and the run would stop after one more epoch;
    counted afresh it trains on to the total (here no epoch can beat the best, so patience 2 ends it
    exactly there)."""
    from facetracker.nn.train import train

    run_dir = tmp_path / "run"
    config = config_for(webcam_photos, **TINY, epochs=2, early_stopping=2)
    train(config, run_dir, log=lambda line: None)
    stopped_early(run_dir, patience=2)
    lines: list[str] = []
    status = train(config.replace(epochs=4), run_dir, resume=True, log=lines.append)
    epochs = [r["epoch"] for r in runs.read_metrics(run_dir) if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4], "\n".join(lines)
    assert any(line.startswith("the run had stopped early at epoch 2 (no better validation IoU since epoch 1); it "
                               "now trains on towards epoch 4, and stops early again after 2 epochs without a "
                               "better one") for line in lines), lines
    assert status["state"] == "finished" and status["message"] is None, "it ran to the total: not 'stopped early'"


def test_an_early_stop_before_the_total_says_where_it_stopped(webcam_photos, tmp_path, restore_signals):
    from facetracker.nn.train import train

    run_dir = tmp_path / "run"
    config = config_for(webcam_photos, **TINY, epochs=2, early_stopping=1)
    train(config, run_dir, log=lambda line: None)
    stopped_early(run_dir, patience=1)
    lines: list[str] = []
    status = train(config.replace(epochs=5), run_dir, resume=True, log=lines.append)
    assert [r["epoch"] for r in runs.read_metrics(run_dir) if r["kind"] == "epoch"] == [1, 2, 3]
    assert status["message"].startswith("stopped early at epoch 3 of the 5 asked for: no better validation IoU for "
                                        "1 epochs after epoch 1; resume to train on"), status["message"]
    assert status["message"] in lines[-1]


def test_a_plain_stop_keeps_its_patience(tmp_path):
    """Only a run whose patience ran out gets it back: one stopped by hand carries on where it was."""
    from facetracker.nn.resume import patience_again

    config = config_for("d", **TINY, epochs=10, early_stopping=3)
    state = {"epochs_done": 4, "best_val_iou": 0.5, "best_epoch": 2, "since_best": 2}
    lines: list[str] = []
    patience_again(state, config, lines.append)
    assert state["since_best"] == 2 and lines == []
    state["since_best"] = 3
    patience_again(state, config, lines.append)
    assert state["since_best"] == 0 and len(lines) == 1


def test_the_train_page_says_where_a_run_stopped_early_and_what_resuming_does(webcam_photos, tmp_path):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "data"
    shutil.copytree(webcam_photos, root / "faces")
    run_dir = root / "runs" / "early"
    run_dir.mkdir(parents=True)
    config = config_for(root / "faces", "quick", epochs=20)
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    runs.write_json(run_dir / runs.STATUS, {
        "state": "finished", "pid": None, "epoch": 13, "epochs": 20, "best_val_iou": 0.81, "best_epoch": 3,
        "message": "stopped early at epoch 13 of the 20 asked for: no better validation IoU for 10 epochs after "
                   "epoch 3; resume to train on (the count of epochs without a better one starts again)"})
    (run_dir / runs.CHECKPOINT_DIR).mkdir()
    (run_dir / runs.CHECKPOINT_MODEL).write_bytes(b"checkpoint")
    runs.write_json(run_dir / runs.CHECKPOINT_STATE, {"epochs_done": 13, "best_val_iou": 0.81, "best_epoch": 3,
                                                      "since_best": 10})
    with mock.patch.dict(os.environ, {"FACETRACKER_DATA_ROOT": str(root)}), \
            mock.patch("streamlit_webrtc.component.get_this_session_info", return_value=None):
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
        at.switch_page("app_pages/train.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    success = [s.value for s in at.success]
    assert any(s.startswith("Finished: stopped early at epoch 13 of the 20 asked for") and
               "Best validation mean IoU 0.810 at epoch 3" in s for s in success), success
    captions = [c.value for c in at.caption]
    assert any("stopped early at epoch 13 of the 20 asked for" in c and "counting the epochs without a better "
               "validation IoU afresh, so it stops early again after 10 epochs without a better one" in c
               for c in captions), captions
    assert at.number_input(key="resume_epochs_early").value == 25
    assert json.loads((run_dir / runs.CONFIG).read_text())["early_stopping"] == 10
