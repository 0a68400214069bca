"""Export a trained face tracker for other runtimes.

    keras        the model file itself, without optimiser state
    savedmodel   TensorFlow SavedModel folder (TF Serving, TF.js converter)
    tflite       TFLite float32 (XNNPACK on CPUs, phones)
    tflite-int8  TFLite with int8 weights (dynamic-range quantisation): ~4x smaller, a little faster
                 for MobileNets, slightly lossy (probabilities near 0.5 move most)
    onnx         ONNX, through Keras' exporter (tf2onnx); ONNX Runtime runs it (`detect.OnnxRuntime`)

Every format takes uint8-range RGB of the model's input size and outputs `[p, x0, y0, x1, y1]`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

FORMATS = ("keras", "savedmodel", "tflite", "tflite-int8", "onnx")
SUFFIXES = {"keras": ".keras", "savedmodel": "_savedmodel", "tflite": ".tflite", "tflite-int8": ".int8.tflite",
            "onnx": ".onnx"}


def default_output(model_path: Path, fmt: str) -> Path:
    stem = model_path.name[: -len(".keras")] if model_path.name.endswith(".keras") else model_path.stem
    if fmt == "keras":
        return model_path.with_name(f"{stem}.exported.keras")
    return model_path.with_name(stem + SUFFIXES[fmt])


def _serving_function(model):
    import tensorflow as tf

    size = int(model.net.input_shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")])
    def serve(image):
        return {"face_and_box": model(image, training=False)}

    return serve


def frozen_function(model):
    """The serving function with the weights frozen into constants: what TFLite converts.

    Converted as it is, a traced function keeps every weight a resource variable (VAR_HANDLE and
    READ_VARIABLE ops): XNNPACK cannot pack them, batch norm is not folded, the model runs about 6x
    slower (or gives NaN, for the subclassed wrapper). `from_keras_model` freezes them too, but
    through a SavedModel round trip that takes 3.5x the CPU time (17 s against 5 s for
    MobileNetV2-0.35), and the Detect page converts a run's model when it is picked.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(_serving_function(model).get_concrete_function())


def to_tflite_bytes(model, quantize: bool = False, frozen=None) -> bytes:
    """The model as a TFLite flatbuffer; `frozen` (from `frozen_function`) saves tracing it again."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen or frozen_function(model)])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
    return converter.convert()


def export(model_path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the model in format `fmt`; returns the path written (atomically: a file or a folder)."""
    from facetracker.model import inference_copy, load_model
    from facetracker.runs import find_model

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model_path = find_model(model_path)
    if model_path.suffix != ".keras":
        raise ValueError(f"{model_path}: export starts from a .keras model (or a run folder holding one)")
    out = Path(out) if out else default_output(model_path, fmt)
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise RuntimeError("ONNX export needs the tf2onnx and onnx packages: pip install tf2onnx onnx") from None
    model = load_model(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "keras":
        tmp = out.with_name(f".{out.stem}.tmp.keras")
        inference_copy(model).save(tmp)
        os.replace(tmp, out)
    elif fmt in ("tflite", "tflite-int8"):
        content = to_tflite_bytes(model, quantize=fmt == "tflite-int8")
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, out)
    elif fmt == "savedmodel":
        import tensorflow as tf

        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        shutil.rmtree(tmp)
        serve = _serving_function(model)
        module = tf.Module()
        module.model = model
        module.serve = serve
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    else:  # onnx
        tmp = out.with_name(f".{out.name}.tmp.onnx")
        size = int(model.net.input_shape[1])
        model.net(np.zeros((1, size, size, 3), np.float32))  # Keras exports only a model that has been called
        try:
            with warnings.catch_warnings():  # Keras' tf2onnx shim probes numpy for `np.object`
                warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
                model.net.export(str(tmp), format="onnx", verbose=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out)
    return out
