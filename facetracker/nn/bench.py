"""`python -m facetracker bench`: how fast the live frame path, training and augmentation run here.

Everything is measured in one process on the same real face photos. The detectors take turns frame
by frame, so when other work slows the machine it slows them all alike and the ratios to the Haar
cascade still hold. The models are randomly initialised (`build_model(backbone, "none")`): speed
does not depend on the weights, and no ImageNet download is needed.

    frame path   what the Detect page does to each camera frame: `Detector.detect` (colour convert,
                 resize, model, box to pixels), then copying the frame and `draw_detection`
    training     `FaceTracker.train_step` under `fit`, fed by `train.training_dataset` (the real
                 augmenting pipeline), batch 32, after warm-up steps, as a preset fine-tunes: the
                 whole model trainable but batch norm frozen (`TrainConfig.freeze_batchnorm`)
    augmentation `train.training_dataset` alone with the default `AugmentConfig`
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import albumentations
import cv2
import keras
import numpy as np
import tensorflow as tf

from facetracker.config.training import PRESETS, TrainConfig, config_for
from facetracker.data import datasets as data_lib
from facetracker.data.augment import AugmentConfig
from facetracker.data.bench_photos import face_samples, helen_folder
from facetracker.data.images import model_input, sample_pixels
from facetracker.inference import models
from facetracker.inference.dense import input_for_frame
from facetracker.inference.detect import (
    HAAR,
    REFERENCE_LABELS,
    YUNET,
    Detector,
)
from facetracker.inference.live import LiveProcessor
from facetracker.inference.runtimes import TFLiteRuntime, usable_cores
from facetracker.nn.export import frozen_function, input_for, to_tflite_bytes
from facetracker.nn.keras_runtime import KerasRuntime
from facetracker.nn.model import (
    backbone_layer,
    build_model,
    inference_copy,
    set_backbone_trainable,
)
from facetracker.nn.pipeline import (
    build_cache,
    dense_training_dataset,
    training_dataset,
)
from facetracker.runs.run_folder import write_json


def _bench_backbones() -> tuple[str, ...]:
    return tuple(dict.fromkeys(["vgg16", PRESETS["fast"]["backbone"], "mobilenet-0.25", DENSE_PRESET]))


DENSE_PRESET = "multi"
BACKBONES = _bench_backbones()
"""The original design, the `fast` preset's backbone, the lightest MobileNet, and the `multi`
preset (its dense detector, named by the preset). Each takes a while to trace and convert
(docs/speed.md); MobileNetV2-0.35 and MobileNetV3-Small sit between the two MobileNets here,
through TFLite and in training."""
RUNTIMES = ("keras", "tflite", "tflite-int8")
SQUARE_RUNTIME = "tflite-square"
"""The dense model's TFLite at the square input it trains at, timed beside the `tflite` row, which is
shaped for the frames (as the Detect page runs it, see `export.input_for`)."""
FRAME_WIDTH, FRAME_HEIGHT = 640, 480
BATCH = 32


@dataclasses.dataclass(frozen=True)
class Settings:
    frames: int
    """Timed frames per detector, at most..."""
    frame_budget_s: float
    """...and at most this long (a VGG16 frame takes a tenth of a second or more)..."""
    min_frames: int
    """...but never fewer frames than this."""
    warmup_frames: int
    photos: int
    train_warmup_steps: int
    """Untimed steps at batch 32 after the first step (at batch 4, which traces the training function)."""
    train_steps: int
    slow_warmup_steps: int
    slow_train_steps: int
    """The same for VGG16, whose training step at batch 32 takes many seconds."""
    augment_batches: int
    cache_images: int


def bench_settings(quick: bool, frames: int) -> Settings:
    if quick:
        return Settings(frames=min(frames, 30), frame_budget_s=1.5, min_frames=8, warmup_frames=2, photos=12,
                        train_warmup_steps=1, train_steps=2, slow_warmup_steps=0, slow_train_steps=1,
                        augment_batches=8, cache_images=64)
    return Settings(frames=frames, frame_budget_s=8.0, min_frames=20, warmup_frames=5, photos=24,
                    train_warmup_steps=2, train_steps=8, slow_warmup_steps=1, slow_train_steps=2,
                    augment_batches=40, cache_images=160)


def preset_for(backbone: str) -> str:
    """VGG16 as the original design trains it; the MobileNets as the real-time preset does; a
    preset's name as that preset does."""

    if backbone in PRESETS:
        return backbone
    return "original" if backbone == "vgg16" else "fast"


def is_dense(name: str) -> bool:
    return PRESETS[preset_for(name)]["head"] == "dense"


# ----------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "load_average_1min": load, "python": platform.python_version(), "tensorflow": tf.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1", "opencv": cv2.__version__,
            "albumentations": albumentations.__version__}


class CpuShare:
    """How many cores this process used on average over a stretch: on a shared machine the same
    code gets more or less of the CPU, which the figures alone do not show."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def cores(self) -> float:
        return (time.process_time() - self.cpu) / max(time.perf_counter() - self.wall, 1e-9)


# ----------------------------------------------------------------------------------------------
# Frames and samples


def spread(items: list, count: int) -> list:
    """`count` items taken evenly across the list (photos of different people and sizes)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def letterbox(rgb: np.ndarray, width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT) -> np.ndarray:
    """The photo scaled to fit a width x height BGR frame, centred on black, as a camera frame."""
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    frame = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    frame[top:top + size[1], left:left + size[0]] = cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
    return frame


def camera_frames(samples: list[data_lib.Sample], count: int) -> list[np.ndarray]:
    frames = []
    for sample in spread(samples, count):
        try:
            frames.append(letterbox(sample_pixels(sample)))
        except (ValueError, OSError):
            continue  # a photo that does not decode is simply not a frame
    if not frames:
        raise data_lib.DatasetError("none of the face photos could be read")
    return frames


# ----------------------------------------------------------------------------------------------
# The frame path


def multiply_accumulates(network) -> int:
    """Multiply-accumulates of one forward pass through the convolutions and dense layers."""

    total = 0
    for layer in network.layers:
        if isinstance(layer, keras.Model):
            total += multiply_accumulates(layer)
            continue
        try:
            out_shape = layer.output.shape
            in_channels = layer.input.shape[-1]
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += out_shape[1] * out_shape[2] * kh * kw * out_shape[3]
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            total += out_shape[1] * out_shape[2] * kh * kw * in_channels * out_shape[3] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(d for d in out_shape[1:-1]) if len(out_shape) > 2 else 1
            total += positions * in_channels * out_shape[-1]
    return int(total)


def saved_form(backbone: str):
    """A randomly initialised model of this backbone as its preset trains and saves it: the
    preset's head, and the saved model's flip average (each frame and its mirror image) if set."""

    preset = PRESETS[preset_for(backbone)]
    model = build_model(preset["backbone"] if backbone in PRESETS else backbone, "none", head=preset["head"],
                        **({"size": preset["image_size"]} if "image_size" in preset else {}))
    flip = bool(preset.get("flip_average"))
    return model, (inference_copy(model, flip_average=True) if flip else model), flip


def build_detectors(backbone: str, workdir: Path, log: Callable[[str], None]):
    """The model being trained, a Detector per runtime over the model as saved, and whether that
    averages each frame with its mirror image.

    The TFLite files are what `export(run, "tflite")` and `"tflite-int8"` write for a trained model
    (`to_tflite_bytes` on the same frozen function), for a dense model shaped for the 640x480
    frames as the Detect page runs it (and also at its square input, `SQUARE_RUNTIME`); the Keras
    runtime calls the model in memory.
    """

    started = time.perf_counter()
    model, saved, flip = saved_form(backbone)
    shaped = input_for(saved, (FRAME_WIDTH, FRAME_HEIGHT)) if is_dense(backbone) else None
    frozen = frozen_function(saved, shaped)
    detectors = {"keras": Detector(KerasRuntime(saved))}
    for runtime, quantize in (("tflite", False), ("tflite-int8", True)):
        path = workdir / f"{backbone}{'.int8' if quantize else ''}.tflite"
        path.write_bytes(to_tflite_bytes(saved, quantize=quantize, frozen=frozen))
        detectors[runtime] = Detector(TFLiteRuntime(path))
    if shaped:
        path = workdir / f"{backbone}.square.tflite"
        path.write_bytes(to_tflite_bytes(saved))
        detectors[SQUARE_RUNTIME] = Detector(TFLiteRuntime(path))
    log(f"{backbone}: model built and converted to TFLite fp32 and int8 in {time.perf_counter() - started:.0f} s")
    return model, detectors, flip


@dataclasses.dataclass
class FrameTiming:
    path_ms: list[float] = dataclasses.field(default_factory=list)
    model_ms: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.path_ms))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.path_ms, 95))


def time_frame_paths(detectors: dict, frames: list[np.ndarray], settings: Settings,
                     log: Callable[[str], None]) -> dict[str, FrameTiming]:
    """Every detector on the same frames, taking turns frame by frame, each through the Detect page's
    own frame path (`live.LiveProcessor.process`: detect every face, track them, draw them and the
    speed on a copy)."""
    processors = {name: LiveProcessor(detector) for name, detector in detectors.items()}
    for name, processor in processors.items():
        for frame in frames[:settings.warmup_frames]:
            processor.process(frame)
    timings = {name: FrameTiming() for name in detectors}
    spent = dict.fromkeys(detectors, 0.0)
    active = list(detectors)
    index = 0
    while active:
        frame = frames[index % len(frames)]
        index += 1
        for name in list(active):
            processor = processors[name]
            start = time.perf_counter()
            processor.process(frame)
            elapsed = time.perf_counter() - start
            if processor.errors:
                raise RuntimeError(f"{name}: the frame path failed: {processor.last_error}")
            timings[name].path_ms.append(elapsed * 1000)
            timings[name].model_ms.append(processor.last_model_ms)
            spent[name] += elapsed
            count = len(timings[name].path_ms)
            if count >= settings.frames or (spent[name] >= settings.frame_budget_s and count >= settings.min_frames):
                active.remove(name)
    log(f"timed {sum(len(t.path_ms) for t in timings.values())} frame paths")
    return timings


def preparation_ms(frames: list[np.ndarray], size: int) -> float:
    """The colour convert + resize part of the frame path alone."""
    times = []
    for frame in frames * 5:
        start = time.perf_counter()
        model_input(frame, size, bgr=True)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# ----------------------------------------------------------------------------------------------
# Training and augmentation


def training_cache(samples: list[data_lib.Sample], count: int, preset: str | None = None):
    """The photos as a preset's training caches them (stretched, or letterboxed for a dense head)."""

    config = config_for("", preset) if preset else TrainConfig()
    return build_cache(spread(samples, count), config.cache_size, log=lambda message: None,
                       letterboxed=config.head == "dense")


def training_rate(model, backbone: str, cache, data: Path, warmup: int, steps: int) -> float:
    """Images/s of `fit` on `training_dataset` at batch 32: `steps` timed after `warmup` steps.

    A first step at batch 4 traces the training function (the dataset's batch size is not part of
    its signature), so VGG16 needs no untimed step of 32 images. The model is set up as a preset's
    fine-tuning phase from ImageNet weights: everything trainable except batch norm when the config
    freezes it. Adam at the preset's rate stands in for its schedule, which costs nothing measurable.
    """

    copies = math.ceil((warmup + steps + 1) * BATCH / len(cache.images))
    config = config_for(str(data), preset_for(backbone), batch_size=BATCH, copies=copies,
                        backbone=None if backbone == preset_for(backbone) else backbone)
    batches = dense_training_dataset if config.head == "dense" else training_dataset
    set_backbone_trainable(backbone_layer(model), True, config.freeze_batchnorm)
    optimizer = keras.optimizers.Adam(config.lr)
    optimizer.build(model.trainable_variables)  # as train.py does: built lazily, tracing takes twice as long
    model.compile(optimizer=optimizer, jit_compile=False)
    model.fit(batches(cache, config, 4), epochs=1, steps_per_epoch=1, verbose=0)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begins: list[float] = []
            self.ends: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.begins.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    timer = StepTimes()
    model.fit(batches(cache, config, BATCH), epochs=1, steps_per_epoch=warmup + steps, verbose=0,
              callbacks=[timer])
    return BATCH * steps / (timer.ends[-1] - timer.begins[warmup])


def augmentation_rate(cache, batches: int) -> float:
    """Images/s out of `training_dataset` with the default augmentation, no model attached."""

    warmup = 2
    copies = math.ceil((warmup + batches + 1) * BATCH / len(cache.images))
    config = TrainConfig(augment=AugmentConfig(), batch_size=BATCH, copies=copies)
    batches_out = iter(training_dataset(cache, config, BATCH))
    for _ in range(warmup):  # worker threads start, each builds its Albumentations pipeline
        next(batches_out)
    start = time.perf_counter()
    images = sum(len(next(batches_out)[0]) for _ in range(batches))
    return images / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# The report


def _dense_live_input() -> tuple[int, int]:
    return input_for_frame(PRESETS[DENSE_PRESET]["image_size"], FRAME_WIDTH, FRAME_HEIGHT)


def ratio_text(haar_ms: float, ms: float) -> str:
    if ms <= haar_ms:
        return f"{haar_ms / ms:5.1f}x faster"
    return f"{ms / haar_ms:5.1f}x slower"


@dataclasses.dataclass
class Report:
    """Everything one bench run measured, as `format_report` prints it and `--json` writes it."""

    machine: dict
    settings: Settings
    frames: int
    """How many camera frames were made from the photos."""
    folder: Path
    elapsed_s: float = 0.0
    macs: dict[str, int] = dataclasses.field(default_factory=dict)
    """Multiply-accumulates per frame of each backbone as saved (twice with the flip average)."""
    threads: dict[str, str] = dataclasses.field(default_factory=dict)
    timings: dict[str, FrameTiming] = dataclasses.field(default_factory=dict)
    prep_ms: float = 0.0
    frame_cores: float = 0.0
    train: dict[str, float] = dataclasses.field(default_factory=dict)
    train_cores: dict[str, float] = dataclasses.field(default_factory=dict)
    augment: float = 0.0
    augment_cores: float = 0.0
    flipped: list[str] = dataclasses.field(default_factory=list)
    quick: bool = False


def format_report(report: Report) -> str:
    machine, settings, timings, train = report.machine, report.settings, report.timings, report.train
    fast = PRESETS["fast"]["backbone"]
    haar = timings[HAAR].median
    lines = [
        "FaceTracker bench (python -m facetracker bench)",
        f"machine   {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['system']}; load average {machine['load_average_1min']} at the start",
        f"software  Python {machine['python']}, TensorFlow {machine['tensorflow']} "
        f"(oneDNN {'on' if machine['onednn'] else 'off'}), OpenCV {machine['opencv']}, "
        f"Albumentations {machine['albumentations']}",
        "models    randomly initialised (build_model(backbone, \"none\")): speed does not depend on the weights",
        "          each as its preset saves it: vgg16 as 'original', the MobileNets as 'fast'"
        + (", whose saved model averages each frame with its mirror image (twice the model work)" if report.flipped else ""),
        f"          and {DENSE_PRESET} as itself: every face, its cells decoded and suppressed (NMS), letterboxed "
        f"into {'x'.join(map(str, _dense_live_input()))} as the Detect page runs it "
        f"({SQUARE_RUNTIME}: the square {PRESETS[DENSE_PRESET]['image_size']} px input it trains at)",
        f"frames    {report.frames} face photos from {report.folder} letterboxed to {FRAME_WIDTH}x{FRAME_HEIGHT} BGR; per detector "
        f"{settings.warmup_frames} warm-up frames, then up to {settings.frames} timed "
        f"(at most ~{settings.frame_budget_s:g} s, at least {settings.min_frames}), detectors taking turns",
        "",
        "Live frame path: Detector.detect (colour convert + resize + model + boxes to pixels) + tracking + "
        "copy + draw, ms per frame",
        f"{'detector':<34}{'GMAC':>6}{'threads':>9}{'median':>9}{'p95':>9}{'model':>9}{'frames':>8}   vs Haar",
    ]
    for name, timing in timings.items():
        backbone = name.split("/")[0]
        gmac = f"{report.macs[backbone] / 1e9:.2f}" if backbone in report.macs else "-"
        label = f"{name} ({REFERENCE_LABELS[name]})" if name in REFERENCE_LABELS else name
        lines.append(f"{label:<34}{gmac:>6}{report.threads[name]:>9}{timing.median:>9.2f}{timing.p95:>9.2f}"
                     f"{float(np.median(timing.model_ms)):>9.2f}{len(timing.path_ms):>8}   "
                     + (ratio_text(haar, timing.median) if name != HAAR else "1.0x (the baseline)"))
    lines += [
        f"('model' is the runtime call alone; colour convert + resize alone take {report.prep_ms:.2f} ms; "
        f"this process used {report.frame_cores:.2f} cores on average)",
        "",
        f"Training at batch {BATCH}: fit -> FaceTracker.train_step on train.training_dataset (augmenting); "
        "whole model trainable, batch norm frozen as the presets fine-tune ImageNet weights",
        f"{'backbone':<30}{'images/s':>10}{'ms/step':>10}{'cores used':>12}",
    ]
    for backbone, rate in train.items():
        lines.append(f"{backbone:<30}{rate:>10.1f}{BATCH / rate * 1000:>10.0f}{report.train_cores[backbone]:>12.2f}")
    lines += [
        "",
        f"Augmentation (default AugmentConfig) through train.training_dataset: {report.augment:.0f} images/s "
        f"({report.augment_cores:.2f} cores used)",
        "",
        "Targets:",
    ]
    fast_runs = {name: t.median for name, t in timings.items() if name.startswith(f"{fast}/")}
    best_fast = min(fast_runs, key=fast_runs.get)
    vgg_runs = {name: t.median for name, t in timings.items() if name.startswith("vgg16/")}
    best_vgg = min(vgg_runs, key=vgg_runs.get) if vgg_runs else None
    checks = [
        (f"fast backbone frame path median <= 10 ms (best: {best_fast} {fast_runs[best_fast]:.2f} ms, "
         f"Detect page: {fast}/tflite {fast_runs.get(f'{fast}/tflite', float('nan')):.2f} ms)",
         fast_runs.get(f"{fast}/tflite", math.inf) <= 10),
        (f"fast backbone >= 3x faster than the Haar cascade ({fast}/tflite: "
         f"{haar / fast_runs.get(f'{fast}/tflite', math.inf):.1f}x)", haar / fast_runs.get(f"{fast}/tflite", math.inf) >= 3),
    ]
    if best_vgg:
        checks.append((f"VGG16 frame path median <= 30 ms (best: {best_vgg} {vgg_runs[best_vgg]:.1f} ms)",
                       vgg_runs[best_vgg] <= 30))
    if fast in train:
        checks.append((f"fast backbone training >= 100 images/s ({train[fast]:.0f})", train[fast] >= 100))
        checks.append((f"augmentation >= 5x the fast backbone's training rate ({report.augment / train[fast]:.1f}x)",
                       report.augment >= 5 * train[fast]))
    dense = f"{DENSE_PRESET}/tflite"
    if dense in timings:
        checks.append((f"{dense} (every face) frame path median <= 6 ms ({timings[dense].median:.2f} ms)",
                       timings[dense].median <= 6))
        if YUNET in timings:
            checks.append((f"{dense} faster than YuNet on the same frames ({timings[dense].median:.2f} ms against "
                           f"{timings[YUNET].median:.2f} ms)", timings[dense].median < timings[YUNET].median))
    lines += [f"  {'met    ' if ok else 'NOT met'}  {text}" for text, ok in checks]
    if YUNET in timings and f"{fast}/tflite" in fast_runs:
        yunet, mine = timings[YUNET].median, fast_runs[f"{fast}/tflite"]
        lines.append(f"  (the reference: {fast}/tflite against YuNet at 320 px, every face: "
                     f"{ratio_text(yunet, mine).strip()} than YuNet)")
    lines.append(f"\nbench took {report.elapsed_s / 60:.1f} min")
    return "\n".join(lines)


def report_json(report: Report) -> dict:
    """What `--json` writes: the headline figures, then the details."""
    timings = report.timings
    return {
        "frame_ms": {name: {"median": round(t.median, 3), "p95": round(t.p95, 3)} for name, t in timings.items()},
        "train_images_per_s": {name: round(rate, 2) for name, rate in report.train.items()},
        "augment_images_per_s": round(report.augment, 1),
        "details": {
            "model_ms": {name: round(float(np.median(t.model_ms)), 3) for name, t in timings.items()},
            "frames_timed": {name: len(t.path_ms) for name, t in timings.items()},
            "threads": report.threads, "gmac": {name: round(n / 1e9, 3) for name, n in report.macs.items()},
            "preparation_ms": round(report.prep_ms, 3), "frame_path_cores_used": round(report.frame_cores, 2),
            "train_cores_used": {name: round(c, 2) for name, c in report.train_cores.items()},
            "augment_cores_used": round(report.augment_cores, 2), "batch_size": BATCH,
            "weights": "random (speed does not depend on them)", "quick": report.quick,
            "flip_average": report.flipped,
        },
        "machine": report.machine,
    }


def main(args) -> int:
    started = time.perf_counter()
    quick = bool(getattr(args, "quick", False))
    settings = bench_settings(quick, int(getattr(args, "frames", 200) or 200))

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    stages = 2 * len(BACKBONES) + 2  # the detectors of each backbone, the frame paths, training, augmentation
    progress = getattr(args, "progress", None) or (lambda done, total: None)

    folder = helen_folder(getattr(args, "data", None))
    samples = face_samples(folder)
    frames = camera_frames(samples, settings.photos)
    report = Report(machine=machine_info(), settings=settings, frames=len(frames), folder=folder, quick=quick)

    detectors: dict = {}
    built: dict = {}
    with tempfile.TemporaryDirectory(prefix="facetracker-bench-") as workdir:
        for backbone in BACKBONES:
            model, by_runtime, flip = build_detectors(backbone, Path(workdir), log)
            built[backbone] = model
            report.macs[backbone] = multiply_accumulates(model.net) * (2 if flip else 1)
            if flip:
                report.flipped.append(backbone)
            for runtime, detector in by_runtime.items():
                detectors[f"{backbone}/{runtime}"] = detector
                report.threads[f"{backbone}/{runtime}"] = str(getattr(detector.runtime, "num_threads", "tf"))
            progress(len(built), stages)
        detectors[YUNET] = models.open_detector(YUNET, models.LIVE)  # as the Detect page runs it
        report.threads[YUNET] = str(cv2.getNumThreads())
        detectors[HAAR] = models.open_detector(HAAR, models.LIVE)
        report.threads[HAAR] = str(cv2.getNumThreads())
        share = CpuShare()
        report.timings = time_frame_paths(detectors, frames, settings, log)
        report.frame_cores = share.cores()
        progress(len(BACKBONES) + 1, stages)
    report.prep_ms = preparation_ms(frames, built[BACKBONES[0]].net.input_shape[1])
    detectors.clear()

    cache = training_cache(samples, settings.cache_images)
    dense_cache = training_cache(samples, settings.cache_images, DENSE_PRESET)
    for backbone in BACKBONES:
        slow = backbone == "vgg16"
        warmup = settings.slow_warmup_steps if slow else settings.train_warmup_steps
        steps = settings.slow_train_steps if slow else settings.train_steps
        share = CpuShare()
        report.train[backbone] = training_rate(built[backbone], backbone, dense_cache if is_dense(backbone) else cache,
                                               folder, warmup, steps)
        report.train_cores[backbone] = share.cores()
        log(f"{backbone}: training {report.train[backbone]:.1f} images/s")
        progress(len(BACKBONES) + 1 + len(report.train), stages)
    share = CpuShare()
    report.augment = augmentation_rate(cache, settings.augment_batches)
    report.augment_cores = share.cores()
    progress(stages, stages)
    report.elapsed_s = time.perf_counter() - started

    print(format_report(report))
    if args.json:

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report_json(report))
        print(f"wrote {args.json}")
    return 0
