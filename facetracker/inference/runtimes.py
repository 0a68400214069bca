"""Runtimes: a model file turned into `predict(uint8 images) -> rows`, one per format.

A runtime turns a batch of uint8 model inputs into `[p, x0, y0, x1, y1]` rows (a dense model: one
row per cell). TFLite runs on LiteRT with XNNPACK, the fast one on a CPU and what the app runs;
ONNX on ONNX Runtime; a `.keras` file is handed to the network wing (`facetracker.nn.keras_runtime`),
which loads TensorFlow. A SavedModel is refused as input: it is a TensorFlow graph, which can read
and write files. A runtime may be shared by every viewer; the one that is not re-entrant (the
TFLite interpreter) holds the lock. `model_file_key` names one version of a model file for every
cache of a loaded model.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facetracker.runs.run_folder import find_model

ModelKey = tuple[str, int, int]


def model_file_key(path: str | Path) -> ModelKey:
    """One version of a model file (or a run folder's model): its resolved path, modification time
    in ns and size. A run still training replaces its model.keras, and every cache of a loaded model
    uses this key, so all of them move to the new file together."""
    model = find_model(path).resolve()
    stat = model.stat()
    return str(model), stat.st_mtime_ns, stat.st_size


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which may be fewer than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


MAX_THREADS = 4
"""More threads than this do not pay for models this small."""


SPLIT_WORTH_MS = 2.5
"""A model call shorter than this on one thread is not split across threads: waking and joining
the other threads costs more than it saves, and the video encoder needs the other core. Longer
calls are timed on all cores too (`pick_threads`). Kept well below the models' calls: a shared
machine's speed moves between runs, and a line near a model's call made its choice flip with it;
see docs/notes/2026-12-01-tflite-threads.md."""


def _median_call_ms(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, calls: int = 7) -> float:
    predict(image)  # the first call allocates and packs weights
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        predict(image)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def pick_threads(make: Callable[[int], Any], input_wh: tuple[int, int]) -> tuple[Any, int]:
    """Build a runtime with one thread and, if its calls are long enough to split, with all cores;
    keep all cores only if clearly faster as measured here and now (the machine may be shared, and
    one thread leaves the other core to the video)."""
    image = np.full((1, input_wh[1], input_wh[0], 3), 127.0, np.float32)
    single = make(1)
    cores = min(MAX_THREADS, usable_cores())
    if cores == 1:
        return single, 1
    single_ms = _median_call_ms(single.predict, image)
    if single_ms < SPLIT_WORTH_MS:
        return single, 1
    several = make(cores)
    return (several, cores) if _median_call_ms(several.predict, image) < 0.8 * single_ms else (single, 1)


class TFLiteRuntime:
    """A `.tflite` model on the LiteRT interpreter with the XNNPACK delegate (on by default for
    float and dynamic-range int8 models). `num_threads=None` picks 1 or all cores by measuring."""

    name = "tflite"

    def __init__(self, path: str | Path, num_threads: int | None = None):
        with open(path, "rb") as handle:
            content = handle.read()
        if num_threads is None:
            probe = _TFLiteInterpreter(content, 1)
            chosen, num_threads = pick_threads(lambda n: probe if n == 1 else _TFLiteInterpreter(content, n),
                                               probe.input_wh)
        else:
            chosen = _TFLiteInterpreter(content, num_threads)
        self._interpreter = chosen
        self.num_threads = num_threads
        self.input_wh = chosen.input_wh
        self.dense = len(chosen.interpreter.get_output_details()[0]["shape"]) == 3
        self.interpreter = chosen.interpreter
        if Path(path).name.endswith(".int8.tflite"):
            self.name = "tflite-int8"

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._interpreter.predict(images)


class _TFLiteInterpreter:
    """One interpreter, safe to call from several threads: it is not re-entrant (its tensors are
    its state), so a lock serialises the calls. This is the frame path's only model lock."""

    def __init__(self, content: bytes, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()[0]
        self._input = details["index"]
        self._input_shape = list(details["shape"])
        self._output = self.interpreter.get_output_details()[0]["index"]
        self.input_wh = (int(details["shape"][2]), int(details["shape"][1]))
        self._batch = int(details["shape"][0])
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        with self._lock:
            if len(images) != self._batch:
                self.interpreter.resize_tensor_input(self._input, [len(images), *self._input_shape[1:]])
                self.interpreter.allocate_tensors()
                self._batch = len(images)
            self.interpreter.set_tensor(self._input, images)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output)  # a copy: the next call cannot change it


class OnnxRuntime:
    """An `.onnx` model on ONNX Runtime's CPU provider. `num_threads=None` picks 1 or all cores."""

    name = "onnx"

    def __init__(self, path: str | Path, num_threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RuntimeError(f"{path}: running an ONNX model needs the onnxruntime package "
                               "(pip install onnxruntime)") from None
        self._path = str(path)
        probe = self._session(1)
        height, width = (int(v) for v in probe.get_inputs()[0].shape[1:3])
        self.input_wh = (width, height)
        if num_threads is None:
            chosen, num_threads = pick_threads(lambda n: _OnnxCall(probe if n == 1 else self._session(n)),
                                               self.input_wh)
        else:
            chosen = _OnnxCall(self._session(num_threads))
        self._call = chosen
        self.num_threads = num_threads
        self.dense = len(probe.get_outputs()[0].shape) == 3

    def _session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads burn a core waiting for work: bad on a machine shared with the video.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self._path, options, providers=["CPUExecutionProvider"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._call.predict(images)


class _OnnxCall:
    def __init__(self, session):
        self.session = session
        self._input = session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.asarray(images, np.float32)})[0]


def load_runtime(path: str | Path, num_threads: int | None = None, frame: tuple[int, int] | None = None):
    """The runtime for a model file or run folder, chosen by its format. `frame` (width, height): a
    dense `.keras` model runs shaped for camera frames of that size, as the live path does (an
    exported .tflite or .onnx runs at the input it was exported with).

    A SavedModel is refused (it is a TensorFlow graph, which can read and write files); a file that
    is not a model of its format, or a model that does not give FaceTracker's [p, x0, y0, x1, y1],
    raises ValueError naming the file and what it is.
    """
    path = find_model(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        from facetracker.nn.keras_runtime import (
            KerasRuntime,  # TensorFlow: only for a .keras file
        )

        return KerasRuntime(path, frame)  # load_model refuses anything but a FaceTracker
    if suffix not in (".tflite", ".onnx"):
        raise ValueError(f"{path}: unknown model format (expected .keras, .tflite, .onnx or a run folder)")
    kind = "TFLite" if suffix == ".tflite" else "ONNX"
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a {kind} model: the file is empty (0 bytes)")
    try:
        runtime = TFLiteRuntime(path, num_threads) if suffix == ".tflite" else OnnxRuntime(path, num_threads)
        width, height = runtime.input_wh
        output = np.asarray(runtime.predict(np.zeros((1, height, width, 3), np.uint8)))
    except Exception as error:  # each runtime raises its own types for a file it cannot read
        if isinstance(error, RuntimeError) and "needs the onnxruntime package" in str(error):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a usable {kind} FaceTracker model ({reason[:300]})") from None
    cells = (width // 8) * (height // 8)
    if output.shape not in ((1, 5), (1, cells, 5)):
        raise ValueError(f"{path}: not a FaceTracker model: it gives an output of shape {output.shape[1:]} per "
                         "image, not the 5 numbers [face probability, x0, y0, x1, y1] (or a row of them "
                         f"for each of the {cells} cells of a dense model)")
    runtime.dense = output.ndim == 3
    return runtime
