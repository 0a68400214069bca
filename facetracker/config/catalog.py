"""Names the app and the command line offer, without TensorFlow: backbones, heads, box losses,
the input size and where Keras caches ImageNet weights.

`facetracker.nn.model` builds networks from these names; pages and the argument parser list them
from here, so listing a choice never pays for importing TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

INPUT_SIZE = 120

# The file Keras caches in $KERAS_HOME/models for each backbone's ImageNet weights (no top).
BACKBONE_WEIGHT_FILES: dict[str, str] = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "mobilenetv2-0.35": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "mobilenetv2-0.5": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
    "mobilenet-0.25": "mobilenet_2_5_224_tf_no_top.h5",
    "mobilenetv3small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
}
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONE_WEIGHT_FILES)
HEADS: tuple[str, ...] = ("design", "spatial", "grid", "dense")
BOX_LOSS_NAMES: tuple[str, ...] = ("corner_size", "giou")
WEIGHTS: tuple[str, ...] = ("imagenet", "none")
EXPORT_FORMATS: tuple[str, ...] = ("keras", "savedmodel", "tflite", "tflite-int8", "onnx")
"""What `facetracker export` writes (see `facetracker.nn.export`)."""
EXPORT_SUFFIXES = {"keras": ".keras", "savedmodel": "_savedmodel", "tflite": ".tflite", "tflite-int8": ".int8.tflite",
                   "onnx": ".onnx"}


def exported_path(model_path: Path, fmt: str, input_wh: tuple[int, int] | None = None) -> Path:
    """Where an export of `model_path` in `fmt` goes by default: beside it, named for its format and,
    when shaped for camera frames, its input (`model.tflite`, `model.384x288.tflite`). The export
    writes there and the app looks there, so both name it through here."""
    stem = model_path.name[: -len(".keras")] if model_path.name.endswith(".keras") else model_path.stem
    if fmt == "keras":
        return model_path.with_name(f"{stem}.exported.keras")
    shaped = f".{input_wh[0]}x{input_wh[1]}" if input_wh else ""
    return model_path.with_name(stem + shaped + EXPORT_SUFFIXES[fmt])


def keras_cache_dir() -> Path:
    """Read at each call, not at import, so a KERAS_HOME set later counts."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def cached_weights_file(backbone: str) -> Path:
    """Where Keras keeps (or would keep) the backbone's ImageNet weights."""
    return keras_cache_dir() / BACKBONE_WEIGHT_FILES[backbone]
