"""The `bench` command runs and reports every figure; the speed-ups behind it keep results the same.

Speed itself is never asserted here: the bench prints it (see docs/speed.md for this machine's figures).
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.data.images import model_input, sample_pixels
from tests.conftest import REPO


@pytest.mark.slow
def test_quick_bench_prints_and_writes_every_figure(data_root, tmp_path):
    from facetracker.nn.bench import (
        BACKBONES,
        DENSE_PRESET,
        HAAR,
        RUNTIMES,
        SQUARE_RUNTIME,
        YUNET,
    )

    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "facetracker", "bench", "--quick", "--json", str(out)],
                            cwd=REPO, env={**os.environ, "FACETRACKER_DATA": str(data_root)},
                            capture_output=True, text=True, timeout=900)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ("machine", f"{os.cpu_count()} cores", "randomly initialised", "Live frame path", "vs Haar",
                 "Training at batch 32", "Augmentation", "Targets"):
        assert text in result.stdout
    figures = json.loads(out.read_text())
    expected = ({f"{backbone}/{runtime}" for backbone in BACKBONES for runtime in RUNTIMES} | {HAAR, YUNET}
                | {f"{DENSE_PRESET}/{SQUARE_RUNTIME}"})
    assert set(figures["frame_ms"]) == expected
    for name, timing in figures["frame_ms"].items():
        assert 0 < timing["median"] <= timing["p95"], name
        assert name in result.stdout
    assert set(figures["train_images_per_s"]) == set(BACKBONES)
    assert all(rate > 0 for rate in figures["train_images_per_s"].values())
    assert figures["augment_images_per_s"] > 0
    assert figures["machine"]["cores"] >= 1


def test_bench_refuses_a_folder_without_faces_clearly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "facetracker", "bench", "--quick", "--data", str(tmp_path / "none")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "faces-helen" in result.stderr


def test_bench_without_data_says_what_it_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FACETRACKER_DATA"}
    result = subprocess.run([sys.executable, "-m", "facetracker", "bench", "--quick"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "give --data DIR or set FACETRACKER_DATA to the folder holding faces-helen/" in result.stderr
    result = subprocess.run([sys.executable, "-m", "facetracker", "bench", "--quick"], cwd=REPO,
                            env={**env, "FACETRACKER_DATA": str(tmp_path / "gone")}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and f"{tmp_path / 'gone'}: no such folder" in result.stderr


def test_the_report_prints_every_figure_and_its_targets():
    from facetracker.config.training import PRESETS
    from facetracker.nn.bench import (
        HAAR,
        YUNET,
        FrameTiming,
        Report,
        bench_settings,
        format_report,
        report_json,
    )

    fast = PRESETS["fast"]["backbone"]
    machine = {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "system": "Linux", "load_average_1min": 0.5,
               "python": "3.11", "tensorflow": "2", "onednn": True, "opencv": "4", "albumentations": "2"}
    report = Report(machine=machine, settings=bench_settings(True, 30), frames=12, folder=REPO, elapsed_s=90,
                    macs={fast: 2 * 10**8}, threads={f"{fast}/tflite": "1", HAAR: "2", YUNET: "2"},
                    timings={f"{fast}/tflite": FrameTiming([5.0, 6.0, 7.0], [4.0, 4.5, 5.0]),
                             YUNET: FrameTiming([9.0, 9.0], [8.0, 8.0]),
                             HAAR: FrameTiming([50.0, 60.0], [0.0, 0.0])},
                    prep_ms=0.4, frame_cores=1.5, train={fast: 120.0}, train_cores={fast: 1.9},
                    augment=1500.0, augment_cores=1.8, flipped=[fast])
    text = format_report(report)
    assert "Test CPU, 2 cores (2 usable)" in text and "mirror image" in text
    assert f"{fast}/tflite" in text and "9.2x faster" in text and "0.20" in text
    assert "Targets:" in text and "issue" not in text.lower()
    assert "met      fast backbone training >= 100 images/s (120)" in text
    assert "augmentation >= 5x the fast backbone's training rate (12.5x)" in text
    assert "yunet (YuNet (OpenCV model zoo))" in text and "1.5x faster than YuNet" in text
    figures = report_json(report)
    assert figures["frame_ms"][f"{fast}/tflite"] == {"median": 6.0, "p95": 6.9}
    assert figures["train_images_per_s"] == {fast: 120.0} and figures["details"]["flip_average"] == [fast]


def test_fast_box_handling_gives_what_albumentations_bbox_processor_gives(helen):
    """`augment` moves the box itself (6x faster); Albumentations' own bbox processing is the reference."""
    import albumentations as A

    from facetracker.data.augment import AugmentConfig, augment, build_transform

    samples = [s for s in data.load_dataset(helen, check_pixels=False).samples if s.box][:12]
    images = [model_input(sample_pixels(s, 448), 224) for s in samples]
    for config in (AugmentConfig(), AugmentConfig(crop_min_scale=0.1, crop_max_scale=0.3, vflip_p=0.5),
                   AugmentConfig(crop_p=0.0, min_visibility=0.9)):
        fast = build_transform(config, 120, seed=5)
        reference = A.Compose(list(build_transform(config, 120, seed=5).transforms), seed=5,
                              bbox_params=A.BboxParams(format="albumentations", label_fields=["labels"],
                                                       min_visibility=config.min_visibility))
        dropped = 0
        for _ in range(4):
            for sample, image in zip(samples, images):
                got_image, got_box = augment(fast, image, sample.box)
                want = reference(image=image, bboxes=np.asarray([sample.box], np.float32), labels=[1])
                assert np.array_equal(got_image, want["image"])
                if len(want["bboxes"]) == 0:
                    assert got_box is None
                    dropped += 1
                else:
                    assert got_box is not None
                    assert np.abs(np.subtract(got_box, np.clip(want["bboxes"][0], 0, 1))).max() < 1e-5
        if config.crop_max_scale <= 0.3:
            assert dropped > 0  # the face was cropped away at times, and both agreed when


def test_training_dataset_batches_match_their_labels(helen):
    from facetracker.config.training import TrainConfig
    from facetracker.data.augment import AugmentConfig
    from facetracker.nn.pipeline import build_cache, training_dataset

    samples = data.load_dataset(helen, check_pixels=False).samples
    chosen = [s for s in samples if s.box][:10] + [s for s in samples if not s.box][:4]
    cache = build_cache(chosen, 224, log=lambda line: None)
    config = TrainConfig(augment=AugmentConfig(crop_p=0.0, hflip_p=0.0, vflip_p=0.0), copies=2)
    # Endless (Keras keeps one iterator for the run); two passes over the 2 x 14 images, in full batches.
    batches = list(training_dataset(cache, config, 8).take(7))
    assert [len(images) for images, _ in batches] == [8] * 7
    for images, (has_face, boxes) in batches:
        assert images.shape[1:] == (120, 120, 3) and images.dtype.name == "float32"
        has_face, boxes = has_face.numpy(), boxes.numpy()
        assert np.all(boxes[has_face == 0] == 0)
        assert np.all(boxes[has_face == 1][:, 2:] > boxes[has_face == 1][:, :2])
    # Without crops or flips the boxes are the labels: each augmented face is one of the cached ones.
    seen = np.concatenate([b[1][1].numpy()[b[1][0].numpy() == 1] for b in batches])
    assert 30 <= len(seen) <= 50  # 40 faces in two passes (batches come out in parallel, in any order)
    assert all(np.abs(cache.boxes - box).sum(axis=1).min() < 1e-6 for box in seen)


def test_model_input_of_a_camera_frame_stays_close_to_an_area_average(helen):
    """The two-step resize of big frames (bilinear to 2x, then 2x2 average) is what INTER_AREA gives."""
    samples = [s for s in data.load_dataset(helen, check_pixels=False).samples if s.box][:8]
    from facetracker.nn.bench import letterbox

    for sample in samples:
        frame = letterbox(sample_pixels(sample))
        fast = model_input(frame, 120, bgr=True).astype(float)
        area = cv2.cvtColor(cv2.resize(frame, (120, 120), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        assert np.abs(fast - area).mean() < 1.0
    small = np.random.default_rng(0).integers(0, 255, (200, 230, 3), dtype=np.uint8)
    assert np.array_equal(model_input(small, 120), cv2.resize(small, (120, 120), interpolation=cv2.INTER_AREA))


def test_the_live_networks_milder_shrink_stays_close_to_an_area_average(helen):
    """A 640x480 frame shrunk to the live network's 384x288 goes bilinear (a fifth of INTER_AREA's cost
    at that ratio) and gives nearly INTER_AREA's pixels on real photos."""
    from facetracker.inference import dense
    from facetracker.nn.bench import letterbox

    live_input = dense.input_for_frame(320, *dense.LIVE_FRAME)
    scale = dense.letterbox(np.zeros((*dense.LIVE_FRAME[::-1], 3), np.uint8), live_input)[1].scale
    assert 0.5 < scale < 1
    samples = [s for s in data.load_dataset(helen, check_pixels=False).samples if s.box][:8]
    for sample in samples:
        frame = letterbox(sample_pixels(sample))
        fast = dense.scaled_rgb(frame, scale, bgr=True).astype(float)
        size = (fast.shape[1], fast.shape[0])
        area = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        assert np.abs(fast - area).mean() < 1.5


def test_fused_batch_norm_computes_what_keras_batch_norm_computes():
    import keras

    from facetracker.nn.model import FusedBatchNormalization, with_fused_batch_norm

    rng = np.random.default_rng(0)
    inputs = keras.Input((10, 10, 6))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    plain = keras.Model(inputs, keras.layers.ReLU()(x))
    bn = plain.layers[2]
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 6), rng.uniform(0.5, 2, 6)])
    fused = with_fused_batch_norm(plain)
    assert type(fused.layers[2]) is FusedBatchNormalization
    images = rng.normal(size=(8, 10, 10, 6)).astype(np.float32)
    np.testing.assert_allclose(fused(images, training=False), plain(images, training=False), atol=1e-5)
    np.testing.assert_allclose(fused(images, training=True), plain(images, training=True), atol=1e-4)
    for mine, theirs in zip(fused.layers[2].non_trainable_variables, bn.non_trainable_variables):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)  # moving mean and variance
    bn.trainable = fused.layers[2].trainable = False  # frozen batch norm normalises with the stored statistics
    np.testing.assert_allclose(fused(images, training=True), plain(images, training=True), atol=1e-5)
