"""A short real training run on a COCO import: it trains as its labelme folder does, and its run folder
holds TensorBoard event files with the curves, the learning rate and validation photos, written
without the tensorboard package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.data import formats
from facetracker.data.images import model_input, sample_pixels
from facetracker.nn.tensorboard_log import EVENTS_DIR
from facetracker.runs import run_folder as runs
from tests.conftest import REPO, SHARED_WEIGHTS, require

pytestmark = pytest.mark.slow

EPOCHS = 2
# tensorboard made unimportable in the training process: the event files must not need it.
WITHOUT_TENSORBOARD = ("import sys; sys.modules['tensorboard'] = None; from facetracker.cli import main; "
                       "raise SystemExit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def coco_run(webcam, tmp_path_factory):
    """The webcam frames exported to COCO, then `train --preset quick` on that COCO folder for two epochs."""
    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    work = tmp_path_factory.mktemp("coco-run")
    shutil.copytree(SHARED_WEIGHTS, work / "keras-home" / "models")
    formats.export_dataset(webcam, "coco", work / "webcam-coco")
    run_dir = work / "runs" / "coco-quick"
    command = [sys.executable, "-c", WITHOUT_TENSORBOARD, "train", "--data", str(work / "webcam-coco"),
               "--run-dir", str(run_dir), "--preset", "quick", "--epochs", str(EPOCHS)]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "KERAS_HOME": str(work / "keras-home")},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return run_dir, result


def test_a_coco_import_trains_on_the_same_photos_as_its_labelme_folder(coco_run, webcam):
    run_dir, result = coco_run
    status = runs.read_status(run_dir)
    assert status["state"] == "finished" and status["skipped"] == 0
    labelme = data.load_dataset(webcam, check_pixels=False)
    assert status["n_train"] == len(labelme.split("train")) == 63
    assert status["n_val"] == len(labelme.split("val")) == 13
    split = json.loads((run_dir / runs.SPLIT).read_text())
    for name in data.SPLITS:
        assert sorted(Path(p).name for p in split[name]) == sorted(Path(s.image).name for s in labelme.split(name))
    assert "90 images (73 with a face, 17 without), split train 63 / val 13 / test 14" in result.stdout


def read_events(folder: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, list[bytes]]]]:
    """Every scalar and image summary of the event files, by tag and step, read as TensorFlow reads them."""
    import tensorflow as tf

    scalars: dict = defaultdict(dict)
    images: dict = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                array = tf.make_ndarray(value.tensor)
                if plugin == "scalars":
                    scalars[value.tag][event.step] = float(array)
                elif plugin == "images":
                    images[value.tag][event.step] = list(array)
    return scalars, images


def test_the_run_folder_holds_tensorboard_curves_and_validation_photos(coco_run):
    run_dir, _ = coco_run
    scalars, images = read_events(run_dir / EVENTS_DIR)
    steps = list(range(1, EPOCHS + 1))
    for tag in ("train/loss", "train/class_loss", "train/box_loss", "val/mean_iou", "val/iou50", "val/accuracy",
                "val/ap50", "learning_rate"):
        assert sorted(scalars[tag]) == steps, tag
    epochs = [r for r in runs.read_metrics(run_dir) if r["kind"] == "epoch"]
    for record in epochs:  # the curves are metrics.jsonl's epoch records
        assert scalars["train/loss"][record["epoch"]] == pytest.approx(record["loss"], rel=1e-6)
        assert scalars["val/mean_iou"][record["epoch"]] == pytest.approx(record["val_mean_iou"], rel=1e-6)
    config = json.loads((run_dir / runs.CONFIG).read_text())
    rates = [scalars["learning_rate"][step] for step in steps]
    assert all(0 < rate <= config["lr"] * (1 + 1e-6) for rate in rates)  # the rate is a float32
    assert rates[-1] < rates[0], "the cosine schedule decays over the run"
    for step in steps:  # width, height, then the PNGs: as tensorboard's image summary stores them
        width, height, *photos = images["val/photos"][step]
        assert (int(width), int(height)) == (config["image_size"],) * 2 and len(photos) == 4
        decoded = cv2.imdecode(np.frombuffer(photos[0], np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (config["image_size"], config["image_size"], 3)
    try:  # where tensorboard is installed, its own reader sees the same
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:
        return
    accumulator = EventAccumulator(str(run_dir / EVENTS_DIR), size_guidance={"tensors": 0}).Reload()
    assert {"train/loss", "learning_rate", "val/photos"} <= set(accumulator.Tags()["tensors"])


def test_validation_photos_show_the_faces_and_each_kind_of_models_boxes(webcam):
    """A single-box model's box with its probability, a dense model's faces (or, while it finds none,
    its most confident box): red over the labelled faces' green, on real frames."""
    from facetracker.nn.tensorboard_log import (
        PREDICTED_COLOUR,
        TRUTH_COLOUR,
        validation_photos,
    )

    samples = [s for s in data.load_dataset(webcam, check_pixels=False).split("val") if s.faces][:3]
    inputs = np.stack([model_input(sample_pixels(s), 128) for s in samples])
    faces = [np.array(s.faces) for s in samples]
    single = lambda batch: np.array([[0.2, *(face[0] * 0.9)] for face in faces])[: len(batch)]  # noqa: E731
    weak_dense = lambda batch: np.tile([[[0.01, 0.1, 0.1, 0.4, 0.4]]], (len(batch), 50, 1))  # noqa: E731
    for predict in (single, weak_dense):
        drawn = validation_photos(predict, inputs, faces)
        assert len(drawn) == 3 and drawn[0].shape == (128, 128, 3)
        for photo in drawn:
            assert (photo == TRUTH_COLOUR).all(axis=2).sum() > 40
            assert (photo == PREDICTED_COLOUR).all(axis=2).sum() > 40
