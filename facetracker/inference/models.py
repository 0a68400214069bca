"""The one door that opens a model for a use: the pages, the command line, `evaluate` and `bench` all
come through here, so "which runtime, which input, which threshold" is decided once.

A model is named by a key: a reference detector's (`yunet`, `haar`), a run folder, or a model file
(`.keras`, `.tflite`, `.onnx`). A use is one of

    live   webcam frames: fast, the whole frame in one pass
    video  a video file's frames, run as the webcam's
    photo  a photo, where small faces matter more than speed: a dense model also looks closer in
           tiles, YuNet sees the photo at its own resolution

A trained model runs as TFLite: a run's `model.keras` is exported beside it once (`model.tflite` at
its square input, and for a model that finds every face `model.WxH.tflite`, shaped for the webcam's
640x480 frames, see `dense.input_for_frame`). The training process writes these files itself; a
model without them (an older run, a run killed mid-way) is exported here, in a child process unless
this process has TensorFlow loaded already: the web server never loads TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from facetracker.config.catalog import exported_path
from facetracker.inference.dense import DEFAULT_THRESHOLD, LIVE_FRAME, input_for_frame
from facetracker.inference.detect import (
    HAAR,
    REFERENCE_LABELS,
    SINGLE_BOX_THRESHOLD,
    YUNET,
    Detector,
    reference_detector,
)
from facetracker.inference.runtimes import ModelKey, load_runtime, model_file_key
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from facetracker.runs.launcher import PACKAGE_PARENT, child_environment

LIVE, VIDEO, PHOTO = "live", "video", "photo"
USES = (LIVE, VIDEO, PHOTO)
REFERENCE_LIVE_SIDE = 320
"""YuNet sees a live frame shrunk to this longer side (a photo at its own resolution)."""
REFERENCE_THRESHOLD = 0.6
"""YuNet's faces count from this score on live video."""
EXPORT_TIMEOUT_S = 600


def is_reference(model: str | Path) -> bool:
    """A detector that ships with the app and needs no training (YuNet, the Haar cascade)."""
    return str(model) in REFERENCE_LABELS


def model_name(model: str | Path) -> str:
    """How a model is named to people: the run folder's or file's name, or the reference detector's."""
    return REFERENCE_LABELS.get(str(model)) or Path(model).name


def run_config(model: str | Path) -> dict | None:
    """The config.json of the run that holds the model (a run folder, or a file inside one), else None."""
    if is_reference(model):
        return None
    path = Path(model)
    config = runs.read_json((path if path.is_dir() else path.parent) / runs.CONFIG)
    return config if isinstance(config, dict) else None


def finds_every_face(model: str | Path) -> bool:
    """Whether a trained model is a dense one (every face, not one box), from its run's config
    without loading it. YuNet finds every face too, but is no trained model."""
    config = run_config(model)
    return bool(config) and config.get("head") == "dense"


def default_threshold(model: str | Path) -> float:
    """The score a model's faces count from unless told otherwise: its kind's (a model that finds
    every face scores lower, see `dense.DEFAULT_THRESHOLD`), without loading it."""
    if is_reference(model):
        return SINGLE_BOX_THRESHOLD
    return DEFAULT_THRESHOLD if finds_every_face(model) else SINGLE_BOX_THRESHOLD


def _check_use(use: str) -> None:
    if use not in USES:
        raise ValueError(f"unknown use {use!r}; choose one of {', '.join(USES)}")


def frame_for(model: str | Path, use: str) -> tuple[int, int] | None:
    """The frame (width, height) a model's network is shaped for in this use, or None for its square
    input: a dense model runs live and video shaped for the webcam's frames, photos square (in tiles)."""
    _check_use(use)
    return LIVE_FRAME if use in (LIVE, VIDEO) and finds_every_face(model) else None


def exported_file(keras_path: Path, frame: tuple[int, int] | None) -> Path:
    """Where the TFLite file of a `.keras` model for `frame` (None: square) is kept: beside it, named
    as `facetracker export` names it (`model.tflite`, `model.384x288.tflite`)."""
    if frame is None:
        return exported_path(keras_path, "tflite")
    config = run_config(keras_path) or {}
    size = config.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValueError(f"{keras_path}: its run's config.json does not say the model's input size")
    return exported_path(keras_path, "tflite", input_for_frame(size, *frame))


def _training_now(keras_path: Path) -> bool:
    try:
        return ownership.lock_held(keras_path.parent)
    except OSError:
        return False


def runtime_file(model: str | Path, use: str) -> Path:
    """The file a trained model runs from in this use: an exported `.tflite` or `.onnx` as it is, a
    `.keras` model's TFLite file, exported now when it is missing or older than the model (while a
    run still trains, the TFLite file it last wrote is used: the trainer refreshes it).

    Raises FileNotFoundError when there is no model yet, ValueError for a file that is no model, and
    RuntimeError when the export fails, each naming the model.
    """
    frame = frame_for(model, use)
    path = runs.find_model(model)
    if path.suffix.lower() != ".keras":
        return path
    target = exported_file(path, frame)
    if target.is_file() and (target.stat().st_mtime_ns >= path.stat().st_mtime_ns or _training_now(path)):
        return target
    export_runtime_files(path)
    if not target.is_file():
        raise RuntimeError(f"{path}: the export wrote no {target.name}")
    return target


def export_runtime_files(keras_path: Path) -> None:
    """Write the TFLite files the app runs for a `.keras` model (`nn.export.write_runtime_files`):
    here when TensorFlow is loaded in this process already, else in a child process."""
    if "tensorflow" in sys.modules:
        from facetracker.nn.export import (
            write_runtime_files,  # TensorFlow is here already
        )

        write_runtime_files(keras_path)
        return
    try:
        done = subprocess.run([sys.executable, "-m", "facetracker.nn.export", str(keras_path)], env=child_environment(),
                              capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, cwd=str(PACKAGE_PARENT))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{keras_path}: exporting it to TFLite took over {EXPORT_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"{keras_path}: cannot export it to TFLite ({lines[-1] if lines else 'no message'})")


def model_version(model: str | Path, use: str = LIVE) -> tuple:
    """The cache key of what `open_runtime(model, use)` would load now: it changes when a run still
    training writes a newer model, so every cache of a loaded model moves to it together.

    Raises FileNotFoundError with a readable message when a run has no model yet.
    """
    if is_reference(model):
        return (str(model),)
    path = Path(model)
    if path.is_dir() and not (path / runs.MODEL).is_file():
        raise FileNotFoundError(f"{path.name}: no model.keras yet (has training finished an epoch?)")
    key: ModelKey = model_file_key(path)
    return (*key, frame_for(model, use))


def open_runtime(model: str | Path, use: str, num_threads: int | None = None):
    """The runtime a trained model runs on in this use (see `runtime_file`)."""
    if is_reference(model):
        raise ValueError(f"{model}: a reference detector has no runtime; open it with open_detector")
    return load_runtime(runtime_file(model, use), num_threads=num_threads)


def open_detector(model: str | Path, use: str, threshold: float | None = None, runtime=None):
    """The detector for a model in a use: YuNet or the Haar cascade as the use wants them, or a
    trained model on its runtime (`runtime`: one already open, shared by several viewers).
    `threshold` None: the kind's default."""
    _check_use(use)
    if is_reference(model):
        if str(model) == HAAR:
            return reference_detector(HAAR)
        if use == PHOTO:
            return reference_detector(YUNET, threshold=SINGLE_BOX_THRESHOLD if threshold is None else threshold,
                                      max_side=None)
        return reference_detector(YUNET, threshold=REFERENCE_THRESHOLD if threshold is None else threshold,
                                  max_side=REFERENCE_LIVE_SIDE)
    runtime = runtime if runtime is not None else open_runtime(model, use)
    return Detector(runtime, threshold=threshold, look_closer=use == PHOTO)
