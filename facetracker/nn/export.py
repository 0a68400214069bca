"""Export a trained face tracker for other runtimes.

    keras        the model file itself, without optimiser state
    savedmodel   TensorFlow SavedModel folder (TF Serving, TF.js converter)
    tflite       TFLite float32 (XNNPACK on CPUs, phones)
    tflite-int8  TFLite with int8 weights (dynamic-range quantisation): ~4x smaller, a little faster
                 for MobileNets, slightly lossy (probabilities near 0.5 move most)
    onnx         ONNX, through Keras' exporter (tf2onnx); ONNX Runtime runs it (`detect.OnnxRuntime`)

Every format takes uint8-range RGB of the model's input size and outputs `[p, x0, y0, x1, y1]`.

A dense model (the `multi` preset) can be exported for camera frames of one shape (`frame`,
`--frame 640x480`): its network is rebuilt, with the same weights, at the smallest input that holds
such a frame at the live scale (`dense.input_for_frame`: 384x288 for a 320 px model, where its square
input would fit the frame into 320x240), and the file is named for that input
(`model.384x288.tflite`). The live video of the Detect page runs such a TFLite file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from facetracker.config.catalog import EXPORT_FORMATS, exported_path
from facetracker.inference.dense import LIVE_FRAME, input_for_frame
from facetracker.io import atomic
from facetracker.nn.model import dense_network_at, inference_copy, is_dense, load_model
from facetracker.runs.run_folder import find_model

FORMATS = EXPORT_FORMATS
def input_for(model, frame: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (width, height) input a dense model is exported at for frames of `frame` (width, height);
    None keeps the square input it trained at. Raises ValueError for a single-box model."""

    if frame is None:
        return None
    if not is_dense(model):
        raise ValueError("only a model that finds every face (a dense model, the multi and quick presets) can be "
                         "shaped for a camera frame: a single-box model sees the frame squeezed into its square")
    return input_for_frame(int(model.net.input_shape[2]), *frame)


def network_at(model, input_wh: tuple[int, int] | None = None):
    """The model's network as it trained, or a dense one rebuilt for a (width, height) input."""

    height, width = (int(v) for v in model.net.input_shape[1:3])
    if input_wh is None or tuple(input_wh) == (width, height):
        return model.net
    return dense_network_at(model.net, input_wh)


def _serving_function(net):
    height, width = (int(v) for v in net.input_shape[1:3])

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="image")])
    def serve(image):
        return {"face_and_box": net(image, training=False)}

    return serve


def frozen_function(model, input_wh: tuple[int, int] | None = None):
    """The serving function with the weights frozen into constants: what TFLite converts.

    Converted as it is, a traced function keeps every weight a resource variable (VAR_HANDLE and
    READ_VARIABLE ops): XNNPACK cannot pack them, batch norm is not folded, the model runs
    several times slower (or gives NaN, for the subclassed wrapper). `from_keras_model` freezes
    them too, but through a SavedModel round trip that costs several times the CPU, and a run's
    TFLite files are written again whenever training saves a better model; see
    docs/notes/2026-11-28-what-makes-it-fast.md.
    """

    return convert_variables_to_constants_v2(_serving_function(network_at(model, input_wh)).get_concrete_function())


def to_tflite_bytes(model, quantize: bool = False, frozen=None, input_wh: tuple[int, int] | None = None) -> bytes:
    """The model as a TFLite flatbuffer; `frozen` (from `frozen_function`) saves tracing it again."""

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen or frozen_function(model, input_wh)])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    return converter.convert()


def export(model_path: str | Path, fmt: str, out: str | Path | None = None, frame: tuple[int, int] | None = None) -> Path:
    """Write the model in format `fmt`; returns the path written (atomically: a file or a folder).
    `frame` (width, height): a dense model's network shaped for camera frames of that size."""

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model_path = find_model(model_path)
    if model_path.suffix != ".keras":
        raise ValueError(f"{model_path}: export starts from a .keras model (or a run folder holding one)")
    if fmt == "keras" and frame is not None:
        raise ValueError(f"{model_path}: a .keras model keeps the square input it trained at; shape a tflite, "
                         "tflite-int8, onnx or savedmodel export for a frame instead")
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise RuntimeError("ONNX export needs the tf2onnx and onnx packages: pip install tf2onnx onnx") from None
    model = load_model(model_path)
    try:
        input_wh = input_for(model, frame)
    except ValueError as error:
        raise ValueError(f"{model_path}: {error}") from None
    out = Path(out) if out else exported_path(model_path, fmt, input_wh)
    out.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "keras":
        with atomic.replacing(out, suffix=".keras") as tmp:
            inference_copy(model).save(tmp)
    elif fmt in ("tflite", "tflite-int8"):
        content = to_tflite_bytes(model, quantize=fmt == "tflite-int8", input_wh=input_wh)
        atomic.write_bytes(out, content)
    elif fmt == "savedmodel":
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        shutil.rmtree(tmp)
        net = network_at(model, input_wh)
        serve = _serving_function(net)
        module = tf.Module()
        module.net = net
        module.serve = serve
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    else:  # onnx
        net = network_at(model, input_wh)
        net(np.zeros((1, *net.input_shape[1:]), np.float32))  # Keras exports only a model that has been called
        with atomic.replacing(out, suffix=".onnx") as tmp, warnings.catch_warnings():
            # Keras' tf2onnx shim probes numpy for `np.object`
            warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
            net.export(str(tmp), format="onnx", verbose=False)
    return out


def write_runtime_files(model_path: str | Path) -> list[Path]:
    """The TFLite files the app runs for a `.keras` model, written beside it from one load: at its
    square input (photos), and for a model that finds every face shaped for the webcam's frames
    (`dense.LIVE_FRAME`; live video and video files). See `facetracker.inference.models`."""

    model_path = Path(model_path)
    model = load_model(model_path)
    written = []
    for input_wh in [None] + ([input_for(model, LIVE_FRAME)] if is_dense(model) else []):
        out = exported_path(model_path, "tflite", input_wh)
        atomic.write_bytes(out, to_tflite_bytes(model, input_wh=input_wh))
        written.append(out)
    return written


if __name__ == "__main__":  # the app's door runs this in a child process, so the server never loads TensorFlow
    import sys

    for path in write_runtime_files(sys.argv[1]):
        print(path)
