"""What a run saves: its best model (atomically), the checkpoint a resume starts from, and the TFLite files the app runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from facetracker.config.training import TrainConfig
from facetracker.io import atomic
from facetracker.nn.errors import describe_error
from facetracker.nn.export import write_runtime_files
from facetracker.nn.model import (
    backbone_layer,
    inference_copy,
)
from facetracker.runs import run_folder as runs


def save_model(model, path: Path, include_optimizer: bool, flip_average: bool = False) -> None:
    """Save atomically: a kill or a full disk mid-save leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path, suffix=".keras") as tmp:
        (model if include_optimizer else inference_copy(model, flip_average)).save(tmp)


RUNTIME_FILES_EVERY_S = 120
"""While a run trains, the TFLite files the app runs (`export.write_runtime_files`) follow its best
model at most this often: converting costs seconds of the training's CPU each time. At the end of
the run they are always written for the final model."""


def save_best(model, run_dir: Path, config: TrainConfig, log: Callable[[str], None]) -> None:
    save_model(model, run_dir / runs.MODEL, include_optimizer=False, flip_average=config.flip_average)
    if time.monotonic() - _runtime_files_written.setdefault(run_dir, time.monotonic()) >= RUNTIME_FILES_EVERY_S:
        write_run_runtime_files(run_dir, log)


_runtime_files_written: dict[Path, float] = {}
"""When each run folder's TFLite files were last written in this process, or its first model saved
(monotonic seconds)."""


def write_run_runtime_files(run_dir: Path, log: Callable[[str], None]) -> None:
    """The TFLite files the app runs, beside the run's best model; a failure is noted, not fatal:
    the app exports the model itself when they are missing."""
    if not (run_dir / runs.MODEL).is_file():
        return
    try:
        write_runtime_files(run_dir / runs.MODEL)
    except Exception as error:
        log(f"note: could not write the TFLite files the app runs ({describe_error(error)}); the app "
            "will convert the model when it is first opened")
    _runtime_files_written[run_dir] = time.monotonic()


def save_checkpoint(model, path: Path) -> None:
    """The checkpoint with its optimiser, saved with the whole backbone trainable.

    Keras builds a loaded model's optimiser over the variables trainable at load time: saved
    during the frozen phase, it would hold the heads' variables only, skip the saved state of the
    others and fail when the backbone is unfrozen. The optimiser was built over every variable
    (see `_build`), so the checkpoint is saved that way; the phase's flags are put back after.
    """
    backbone = backbone_layer(model)
    flags = [(backbone, backbone.trainable)] + [(layer, layer.trainable) for layer in backbone.layers]
    for layer, _ in flags:  # one by one: a frozen batch-norm layer stays frozen under a trainable backbone
        layer.trainable = True
    try:
        save_model(model, path, include_optimizer=True)
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable
