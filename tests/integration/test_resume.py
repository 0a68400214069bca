"""A run folder is never lost: training refuses to replace a run unless told, a resume records its new
target first, a run killed before its first epoch starts over, and lost checkpoint bookkeeping is rebuilt.

Most tests stop at the dataset (a folder that does not exist), after the run folder has been
decided on: nothing is trained. One trains a single tiny epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facetracker.config.training import config_for
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from tests.helpers.badcorpus import helen_pairs

TINY = dict(backbone="mobilenet-0.25", weights="none", batch_size=4, copies=1, epochs=1, cache_size=120)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def past_run(folder: Path, data: Path, *, epochs: int = 6, epochs_done: int = 6, state: str = "finished") -> Path:
    """A run folder as a finished run leaves it (the models are stand-in bytes: these tests stop before
    loading them)."""
    folder.mkdir(parents=True)
    runs.write_json(folder / runs.CONFIG, config_for(data, **{**TINY, "epochs": epochs}).to_dict())
    runs.write_json(folder / runs.STATUS, {"state": state, "pid": None, "epochs": epochs})
    for epoch in range(1, epochs_done + 1):
        for step in range(3 * epoch - 2, 3 * epoch + 1):
            runs.append_metrics(folder, {"kind": "step", "epoch": epoch, "step": step, "loss": 1.0})
        runs.append_metrics(folder, {"kind": "epoch", "epoch": epoch, "step": 3 * epoch,
                                     "val_mean_iou": [0.2, 0.5, 0.4, 0.6, 0.55, 0.5][(epoch - 1) % 6]})
    (folder / runs.MODEL).write_bytes(b"best model")
    (folder / runs.CHECKPOINT_DIR).mkdir()
    (folder / runs.CHECKPOINT_MODEL).write_bytes(b"checkpoint model")
    runs.write_json(folder / runs.CHECKPOINT_STATE, {"epochs_done": epochs_done, "best_val_iou": 0.6,
                                                     "best_epoch": 4, "since_best": epochs_done - 4})
    return folder


def run_cli(capfd, *argv) -> tuple[int, str, str]:
    from facetracker.cli import main

    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def tiny_data(helen, tmp_path) -> Path:
    folder = tmp_path / "faces"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image, label in helen_pairs(helen, 8, faces=True) + helen_pairs(helen, 2, faces=False):
        shutil.copyfile(image, folder / "images" / image.name)
        if label:
            shutil.copyfile(label, folder / "labels" / label.name)
    return folder


# ----------------------------------------------------------------------------------------------
# Training afresh on a folder that holds a run


@pytest.mark.parametrize("how", [["--data", "DATA"], []])  # with options, or from the folder's config.json
def test_training_afresh_on_a_past_run_is_refused_and_changes_nothing(tmp_path, capfd, restore_signals, how):
    run = past_run(tmp_path / "run", tmp_path / "missing")
    before = snapshot(run)
    argv = ["train", "--run-dir", run, *[tmp_path / "missing" if a == "DATA" else a for a in how]]
    code, out, err = run_cli(capfd, *argv)
    assert code == 2 and "Traceback" not in out + err
    assert f"{run}: already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert snapshot(run) == before
    assert ownership.lock_owner(run) is None and not (run / ownership.LOCK).exists()


def test_overwrite_starts_the_run_over(tmp_path, capfd, restore_signals):
    run = past_run(tmp_path / "run", tmp_path / "old")
    code, out, err = run_cli(capfd, "train", "--run-dir", run, "--data", tmp_path / "new", "--overwrite",
                             "--backbone", "mobilenet-0.25", "--weights", "none")
    assert code == 2 and str(tmp_path / "new") in err  # the new dataset does not exist: it stops there
    assert json.loads((run / runs.CONFIG).read_text())["data"] == str(tmp_path / "new")
    assert not (run / runs.MODEL).exists() and not (run / runs.CHECKPOINT_DIR).exists()
    assert not (run / runs.METRICS).exists()


def test_a_folder_holding_only_the_apps_config_is_trained_from_it(tmp_path, capfd, restore_signals):
    """What the app leaves before the process starts: config.json, status.json and train.log."""
    run = tmp_path / "run"
    run.mkdir()
    runs.write_json(run / runs.CONFIG, config_for(tmp_path / "missing", **TINY).to_dict())
    runs.write_json(run / runs.STATUS, {"state": "starting", "pid": None})
    (run / runs.LOG).write_text("$ python -m facetracker train --run-dir run\n")
    code, out, err = run_cli(capfd, "train", "--run-dir", run)
    assert code == 2 and "already holds" not in err and str(tmp_path / "missing") in err


# ----------------------------------------------------------------------------------------------
# Resuming


def test_a_resume_with_more_epochs_records_the_new_target_before_training(tmp_path, capfd, restore_signals):
    """Resumed to 9 and killed in epoch 8, a plain resume must carry on to 9, not end at once as finished."""
    run = past_run(tmp_path / "run", tmp_path / "missing")
    code, out, err = run_cli(capfd, "train", "--run-dir", run, "--resume", "--epochs", "9")
    assert code == 2 and str(tmp_path / "missing") in err  # it got as far as reading the dataset
    assert json.loads((run / runs.CONFIG).read_text())["epochs"] == 9
    from facetracker.runs import workspace

    assert workspace.run_summary(run).epochs == 9, "the app's Resume box starts from the recorded target"


def test_lost_checkpoint_bookkeeping_is_rebuilt_from_the_metrics(tmp_path, capfd, restore_signals):
    run = past_run(tmp_path / "run", tmp_path / "missing")
    (run / runs.CHECKPOINT_STATE).write_text('{"epochs_done": 6, "best_va')  # torn
    code, out, err = run_cli(capfd, "train", "--run-dir", run, "--resume")
    assert code == 2 and "no checkpoint" not in err and str(tmp_path / "missing") in err
    assert "rebuilt from metrics.jsonl: 6 epochs done, best at epoch 4" in out
    state = json.loads((run / runs.CHECKPOINT_STATE).read_text())
    assert state == {"epochs_done": 6, "best_val_iou": 0.6, "best_epoch": 4, "since_best": 2}
    assert len([r for r in runs.read_metrics(run) if r["kind"] == "epoch"]) == 6, "no epoch is lost"


def test_rebuilt_bookkeeping_skips_an_epoch_cut_short_and_says_when_nothing_finished(tmp_path):
    from facetracker.config.jsonconfig import ConfigError
    from facetracker.nn.resume import recovered_state

    run = past_run(tmp_path / "run", tmp_path / "missing", epochs_done=2)
    # A STOP in the middle of epoch 3 logs its first step and an epoch record, not its last step.
    runs.append_metrics(run, {"kind": "step", "epoch": 3, "step": 7, "loss": 1.0})
    runs.append_metrics(run, {"kind": "epoch", "epoch": 3, "step": 9, "val_mean_iou": 0.9})
    assert recovered_state(run) == {"epochs_done": 2, "best_val_iou": 0.5, "best_epoch": 2, "since_best": 0}
    (run / runs.METRICS).unlink()
    with pytest.raises(ConfigError, match=r"state.json: missing or unreadable, and metrics.jsonl records no "
                                          r"finished epoch .*--overwrite"):
        recovered_state(run)


def test_rebuilt_bookkeeping_looks_for_the_best_epoch_where_the_run_did(tmp_path):
    from facetracker.nn.resume import recovered_state

    run = past_run(tmp_path / "run", tmp_path / "missing", epochs_done=3)  # validation 0.2, 0.5, 0.4
    assert recovered_state(run)["best_epoch"] == 2
    assert recovered_state(run, best_from_epoch=3) == {"epochs_done": 3, "best_val_iou": 0.4, "best_epoch": 3,
                                                       "since_best": 0}
    assert recovered_state(run, best_from_epoch=5)["best_epoch"] == 3  # not there yet: the last epoch


def test_a_run_killed_before_its_first_epoch_ended_starts_over_on_resume(tiny_data, tmp_path, capfd,
                                                                         restore_signals):
    run = tmp_path / "run"
    run.mkdir()
    runs.write_json(run / runs.CONFIG, config_for(tiny_data, **TINY).to_dict())
    runs.write_json(run / runs.STATUS, {"state": "running", "pid": 2**22 + 7})  # its process is gone
    for step in (1, 2):  # steps of the killed attempt, never checkpointed
        runs.append_metrics(run, {"kind": "step", "epoch": 1, "step": step, "loss": 9.0, "time": 0.0})
    code, out, err = run_cli(capfd, "train", "--run-dir", run, "--resume")
    assert code == 0, out + err
    assert "starting it over from its config.json" in out
    assert runs.read_status(run)["state"] == "finished"
    records = runs.read_metrics(run)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and all(r["time"] > 0 for r in records if r["kind"] == "step")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]
    assert (run / runs.MODEL).is_file() and (run / runs.CHECKPOINT_MODEL).is_file()


# ----------------------------------------------------------------------------------------------
# The callback that writes the run folder, alone (a tiny model, no training)


class Stop:
    """A stop request on one worker: what `train.StopRequested` is outside a cluster."""

    def __init__(self):
        self.reason = None

    def check(self) -> bool:
        return self.reason is not None

    def agree(self, strategy) -> bool:
        return self.check()

    def on_any_worker(self, strategy, flag: bool) -> bool:
        return flag


def tiny_model():
    import keras

    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(5, activation="sigmoid")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def test_the_run_folder_callback_records_validates_checkpoints_and_stops(tmp_path):
    from facetracker.nn.resume import fresh_state
    from facetracker.nn.run_callback import RunFolderCallback

    saved: list[str] = []
    stop = Stop()
    state = fresh_state()
    callback = RunFolderCallback(
        tmp_path, epochs=3, steps_per_epoch=2, batch_size=4, stop=stop,
        val_inputs=np.zeros((3, 4, 4, 3), np.uint8), val_has_face=np.array([1, 1, 0], np.float32),
        val_boxes=np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0, 0, 0, 0]], np.float32),
        state=state, early_stopping=1, log=lambda line: saved.append(f"log: {line}"),
        save_best=lambda model: saved.append("best"), save_checkpoint=lambda model: saved.append("checkpoint"))
    callback.set_model(tiny_model())
    callback.on_train_begin()
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        for batch in range(2):
            callback.on_train_batch_end(batch, {"loss": 1.0 / (batch + 1), "class_loss": 0.5, "box_loss": 0.25})
        callback.on_epoch_end(epoch, {"loss": 0.75})

    records = runs.read_metrics(tmp_path)
    assert [(r["kind"], r["epoch"], r["step"]) for r in records] == [
        ("step", 1, 1), ("step", 1, 2), ("epoch", 1, 2), ("step", 2, 3), ("step", 2, 4), ("epoch", 2, 4)]
    assert {"val_mean_iou", "val_iou50", "val_accuracy", "val_ap50", "loss"} <= set(records[2])
    # The same predictions both epochs: the first is the best, the second is not better, and with
    # early_stopping=1 the run stops there.
    assert [s for s in saved if not s.startswith("log")] == ["best", "checkpoint", "checkpoint"]
    assert state["epochs_done"] == 2 and state["best_epoch"] == 1 and state["since_best"] == 1
    assert state["early_stopped"] and callback.model.stop_training
    assert runs.read_json(tmp_path / runs.CHECKPOINT_STATE)["epochs_done"] == 2
    status = runs.read_status(tmp_path)
    assert status["best_epoch"] == 1 and status["epochs"] == 3 and status["step"] == 4

    # A stop in the middle of the third epoch: that epoch is not counted as done.
    callback.model.stop_training = False
    callback.on_train_begin()
    callback.on_epoch_begin(2)
    stop.reason = "stopped from the STOP file"
    callback.on_train_batch_end(0, {"loss": 0.5})
    assert callback.model.stop_training
    callback.on_epoch_end(2, {"loss": 0.5})
    assert state["epochs_done"] == 2


def test_a_run_resumed_in_its_frozen_phase_unfreezes_with_its_optimiser_state(tiny_data, keras_home, tmp_path,
                                                                              restore_signals):
    """Checkpointed while the backbone was frozen, resumed past the frozen epochs: the optimiser keeps
    its state and trains the unfrozen backbone (it held only the heads' variables and failed)."""
    from facetracker.nn.model import load_model
    from facetracker.nn.train import train

    config = config_for(tiny_data, **{**TINY, "weights": "imagenet", "freeze_backbone_epochs": 1})
    train(config, tmp_path / "run", log=lambda line: None)
    frozen = load_model(tmp_path / "run" / runs.CHECKPOINT_MODEL)
    steps = int(frozen.optimizer.iterations.numpy())
    status = train(config.replace(epochs=2), tmp_path / "run", resume=True, log=lambda line: None)
    assert status["state"] == "finished"
    resumed = load_model(tmp_path / "run" / runs.CHECKPOINT_MODEL)
    assert int(resumed.optimizer.iterations.numpy()) == 2 * steps


def test_the_best_model_is_chosen_and_patience_counted_only_from_best_from_epoch(tmp_path):
    """An untrained first epoch that happens to score best on a few validation photos is not the
    model kept, and the run does not stop early because later epochs fail to beat it."""
    from facetracker.nn.resume import fresh_state
    from facetracker.nn.run_callback import RunFolderCallback

    scores = iter([0.9, 0.1, 0.3, 0.5, 0.4, 0.45, 0.2])
    saved: list[int] = []
    state = fresh_state()
    callback = RunFolderCallback(
        tmp_path, epochs=7, steps_per_epoch=1, batch_size=4, stop=Stop(),
        val_inputs=np.zeros((1, 4, 4, 3), np.uint8), val_has_face=np.ones(1, np.float32),
        val_boxes=np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), state=state, early_stopping=2, best_from_epoch=3,
        log=lambda line: None, save_best=lambda model: saved.append(callback.epoch + 1),
        save_checkpoint=lambda model: None)
    callback.validation_metrics = lambda: dict(mean_iou=next(scores), iou50=0.0, accuracy=1.0, ap50=0.0)
    callback.set_model(tiny_model())
    callback.on_train_begin()
    for epoch in range(7):
        if state.get("early_stopped"):
            break
        callback.on_epoch_begin(epoch)
        callback.on_train_batch_end(0, {"loss": 1.0})
        callback.on_epoch_end(epoch, {"loss": 1.0})
    assert saved == [1, 2, 3, 4]  # each epoch until the third replaces model.keras; then only a better one
    assert state["best_epoch"] == 4 and state["best_val_iou"] == 0.5
    assert state["epochs_done"] == 6 and state.get("early_stopped")  # patience 2 counted after epoch 4


def test_a_run_shorter_than_best_from_epoch_keeps_its_last_epoch(tmp_path):
    from facetracker.nn.resume import fresh_state
    from facetracker.nn.run_callback import RunFolderCallback

    scores = iter([0.9, 0.1])
    state = fresh_state()
    callback = RunFolderCallback(
        tmp_path, epochs=2, steps_per_epoch=1, batch_size=4, stop=Stop(),
        val_inputs=np.zeros((1, 4, 4, 3), np.uint8), val_has_face=np.ones(1, np.float32),
        val_boxes=np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), state=state, best_from_epoch=5,
        log=lambda line: None, save_best=lambda model: None, save_checkpoint=lambda model: None)
    callback.validation_metrics = lambda: dict(mean_iou=next(scores), iou50=0.0, accuracy=1.0, ap50=0.0)
    callback.set_model(tiny_model())
    callback.on_train_begin()
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        callback.on_train_batch_end(0, {"loss": 1.0})
        callback.on_epoch_end(epoch, {"loss": 1.0})
    assert state["best_epoch"] == 2 and state["best_val_iou"] == 0.1
