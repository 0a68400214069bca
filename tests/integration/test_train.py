"""End to end on real webcam frames: train -> evaluate -> export -> detect, through the CLI."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facetracker.data.datasets import load_dataset, read_image
from facetracker.runs import run_folder as runs
from tests.conftest import SHARED_WEIGHTS, require
from tests.helpers.cli import cli

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def cached_weights_env(tmp_path_factory):
    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    home = tmp_path_factory.mktemp("keras-home")
    shutil.copytree(SHARED_WEIGHTS, home / "models")
    return {**os.environ, "KERAS_HOME": str(home)}


@pytest.fixture(scope="module")
def fast_run(webcam, cached_weights_env, tmp_path_factory):
    """One short `fast` run from cached ImageNet weights, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("runs") / "fast"
    result = cli("train", "--data", webcam, "--run-dir", run_dir, "--preset", "fast", "--epochs", "1",
                 env=cached_weights_env)
    return run_dir, result


def test_train_writes_a_loadable_model_metrics_and_status(fast_run):
    run_dir, result = fast_run
    status = runs.read_status(run_dir)
    assert status["state"] == "finished" and status["weights_used"] == "imagenet"
    assert status["n_train"] == 63 and status["n_val"] == 13
    verdict = status["verdict"]  # against the average box, on the same 13 validation photos
    assert verdict["val_photos"] == 13 and verdict["val_faces"] > 0 and 0 < verdict["mean_box_val_iou"] < 1
    assert verdict["model_val_iou"] == pytest.approx(status["best_val_iou"], abs=1e-3)
    assert all(f"warning: {w}" in result.stdout for w in verdict["warnings"])
    config = json.loads((run_dir / runs.CONFIG).read_text())
    assert config["preset"] == "fast" and config["backbone"] == "mobilenetv2-0.5" and config["epochs"] == 1
    records = runs.read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(steps) >= 2 and all({"loss", "class_loss", "box_loss"} <= set(r) for r in steps)
    assert len(epochs) == 1 and {"val_mean_iou", "val_iou50", "val_accuracy"} <= set(epochs[0])
    from facetracker.nn.model import load_model

    model = load_model(run_dir / runs.MODEL)
    assert model.net.output_shape == (None, 5)
    assert "epoch 1/1" in result.stdout and "val mean IoU" in result.stdout
    # what the minute before the first step is spent on, as the Train page's progress bar shows it
    stages = ["decoding 76 photos into memory", "building the model (mobilenetv2-0.5)", "preparing the first training step"]
    positions = [result.stdout.find(stage) for stage in stages]
    assert -1 not in positions and positions == sorted(positions), result.stdout[:2000]
    split = json.loads((run_dir / runs.SPLIT).read_text())
    assert len(split["train"]) == 63 and len(split["test"]) == 14


def test_evaluate_writes_the_metrics_as_json(fast_run, webcam, tmp_path):
    run_dir, _ = fast_run
    out = tmp_path / "metrics.json"
    result = cli("evaluate", "--model", run_dir, "--data", webcam, "--split", "test", "--json", out)
    metrics = json.loads(out.read_text())
    for key in ("n_faces", "n_empty", "mean_iou", "iou50", "accuracy", "precision", "recall", "ap50"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    assert metrics["n_faces"] == 12 and metrics["n_empty"] == 2
    assert "mean_iou" in result.stdout
    faces = metrics["faces"]  # every box matched to every labelled face: one face per photo here
    assert faces["n_photos"] == 14 and faces["n_faces"] == 12 and 0 <= faces["recall"] <= 1
    assert "every face (" in result.stdout


def test_export_to_tflite_and_detect_on_a_webcam_frame(fast_run, webcam):
    run_dir, _ = fast_run
    out = run_dir / "model.tflite"
    cli("export", "--model", run_dir, "--format", "tflite", "--out", out)
    from facetracker.inference.detect import Detector
    from facetracker.inference.draw import draw_detection
    from facetracker.nn.keras_runtime import KerasRuntime

    sample = next(s for s in load_dataset(webcam, check_pixels=False).split("test") if s.box)
    frame = np.ascontiguousarray(read_image(sample.image)[:, :, ::-1])
    lite = Detector(out, threshold=0.0)
    keras_detector = Detector(KerasRuntime(run_dir / runs.MODEL), threshold=0.0)
    found, reference = lite.detect(frame), keras_detector.detect(frame)
    assert found.box is not None and frame.shape == (720, 1280, 3)
    assert abs(found.probability - reference.probability) < 1e-3
    assert np.abs(np.subtract(found.box, reference.box)).max() <= 3  # pixels on a 1280x720 frame
    drawn = draw_detection(frame.copy(), found)
    assert not np.array_equal(drawn, frame)


def test_predict_writes_labelme_prelabels_without_overwriting(fast_run, webcam, tmp_path):
    run_dir, _ = fast_run
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((webcam / "test" / "images").iterdir())[:3]:
        shutil.copy(path, images / path.name)
    labels = tmp_path / "labels"
    labels.mkdir()
    kept = labels / f"{sorted(images.iterdir())[0].stem}.json"
    kept.write_text("{}")
    result = cli("predict", "--model", run_dir, "--images", images, "--out", labels, "--threshold", "0")
    assert "2 label files written" in result.stdout and "1 existing kept" in result.stdout
    assert kept.read_text() == "{}"
    dataset = load_dataset(tmp_path)  # the pre-labels read back as a labelme dataset
    assert sum(s.has_face for s in dataset.samples) == 2


def test_offline_imagenet_is_refused_clearly_unless_random_weights_are_allowed(webcam, tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "empty")}
    result = cli("train", "--data", webcam, "--run-dir", tmp_path / "r1", "--backbone", "mobilenet-0.25",
                 "--epochs", "1", env=env, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "ImageNet weights for mobilenet-0.25" in result.stderr and "--weights none" in result.stderr
    assert runs.read_status(tmp_path / "r1")["state"] == "failed"


def test_mirrored_strategy_with_random_fallback_trains(webcam, tmp_path, monkeypatch, restore_signals):
    """tf.distribute's MirroredStrategy on one CPU replica, and the allowed fallback to random weights."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    from facetracker.config.training import config_for
    from facetracker.nn.train import train

    config = config_for(webcam, backbone="mobilenet-0.25", weights="imagenet", allow_random_weights=True,
                        epochs=1, batch_size=16, strategy="mirrored", head="spatial")
    status = train(config, tmp_path / "run", log=lambda line: None)
    assert status["state"] == "finished"
    assert status["weights_used"].startswith("none")
    assert (tmp_path / "run" / runs.MODEL).exists()


def test_resume_continues_the_epoch_count(fast_run, cached_weights_env, tmp_path):
    run_dir, _ = fast_run
    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    cli("train", "--run-dir", copy, "--resume", "--epochs", "2", env=cached_weights_env)
    epochs = [r["epoch"] for r in runs.read_metrics(copy) if r["kind"] == "epoch"]
    assert epochs == [1, 2]
    assert runs.read_json(copy / runs.CHECKPOINT_STATE)["epochs_done"] == 2


def test_presets_train_longer_from_random_weights_and_explicit_options_win():
    from facetracker.config.jsonconfig import ConfigError
    from facetracker.config.training import (
        PRESETS,
        RANDOM_INIT,
        TrainConfig,
        config_for,
    )

    pretrained = config_for("d", "fast")
    random = config_for("d", "fast", weights="none")
    assert pretrained.weights == "imagenet" and pretrained.epochs == PRESETS["fast"]["epochs"]
    assert random.weights == "none" and random.preset == "fast"
    assert {k: getattr(random, k) for k in RANDOM_INIT["fast"]} == RANDOM_INIT["fast"]
    assert random.backbone == pretrained.backbone and random.augment == pretrained.augment
    assert config_for("d", "fast", weights="none", epochs=3).epochs == 3
    assert TrainConfig.from_dict(random.to_dict()) == random  # recorded complete in config.json
    with pytest.raises(ConfigError, match="unknown preset"):
        config_for("d", "slowest")


def few_webcam_photos(webcam, target, every: int = 3):
    """Every `every`-th frame of the webcam recording in one images/ + labels/ folder, split by name as
    a person's own recording would be: 30 photos, about a fifth of them without a face."""
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    frames = sorted((path for split in ("train", "val", "test") for path in (webcam / split / "images").glob("*.jpg")),
                    key=lambda path: path.name)[::every]
    for frame in frames:
        shutil.copy(frame, target / "images" / frame.name)
        label = frame.parent.parent / "labels" / f"{frame.stem}.json"
        if label.exists():
            shutil.copy(label, target / "labels" / label.name)
    return target


def test_quick_learns_a_few_dozen_webcam_photos_and_says_how_it_compares(webcam, keras_home, tmp_path,
                                                                       restore_signals):
    """30 real webcam photos: validation is topped up to 10 photos, an epoch still holds 256 images,
    the backbone stays frozen, the model kept comes from epoch 10 on, and the verdict sets it beside
    YuNet's pre-labels and says so plainly when it is clearly worse."""
    from facetracker.config.training import config_for
    from facetracker.evaluation.verdict import PRELABEL_MARGIN
    from facetracker.nn.train import train

    data = few_webcam_photos(webcam, tmp_path / "few")
    lines: list[str] = []
    config = config_for(data, "quick", epochs=11)  # the best model is chosen from epoch 10
    assert config.freeze_backbone_epochs >= config.epochs and config.weights == "imagenet"
    status = train(config, tmp_path / "run", log=lines.append)
    log = "\n".join(lines)
    assert status["state"] == "finished" and status["weights_used"] == "imagenet"
    assert status["n_val"] == 10 and "more taken from the training photos" in log, log
    split = json.loads((tmp_path / "run" / runs.SPLIT).read_text())
    assert any(not (data / "labels" / f"{Path(p).stem}.json").exists() for p in split["val"])  # a no-face photo
    assert "training the whole model" not in log  # the backbone stays frozen
    assert status["best_epoch"] >= 10 and "16 augmented copies of each per epoch" in log
    verdict = status["verdict"]
    assert verdict["val_photos"] == 10 and verdict["prelabel_val_iou"] > 0.5
    assert f"your model: mean IoU {verdict['model_val_iou']:.3f} on the 10 validation photos, " in log
    assert verdict["model_moved_iou"] is not None and verdict["moved_photos"] == 3 * verdict["val_faces"]
    behind = verdict["model_val_iou"] < verdict["prelabel_val_iou"] - PRELABEL_MARGIN
    assert behind == any("worse than YuNet" in w for w in verdict["warnings"]), log
