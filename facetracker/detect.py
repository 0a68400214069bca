"""Run a trained face tracker on camera frames.

A *runtime* turns a batch of uint8 model inputs into `[p, x0, y0, x1, y1]` rows; there is one per
model format (a Keras model called directly, TFLite with XNNPACK, ONNX Runtime). A SavedModel is
refused as input: it is a TensorFlow graph, which can read and write files.
TFLite is the fast one on a CPU: `python -m facetracker bench` measures them all. `Detector` wraps
a runtime for frames of any size: it prepares the frame with `data.model_input` (the same function
training used), maps the box back to pixels and optionally smooths it over frames.

The frame path goes one way: the app's pages -> `live` -> `Detector` -> a runtime. A runtime may be
shared by every viewer; the one that is not re-entrant (the TFLite interpreter) holds the lock.
`model_file_key` names one version of a model file for every cache of a loaded model.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from facetracker.data import model_input
from facetracker.dense import closer_tiles, decode, letterbox, merge_faces, tile_inputs
from facetracker.runs import find_model

HAAR = "haar"
"""The model key of OpenCV's Haar cascade, the classical baseline that needs no training."""
HAAR_LABEL = "OpenCV Haar cascade"
YUNET = "yunet"
"""The model key of YuNet (see `facetracker.yunet`), the reference detector that ships with the package."""
YUNET_LABEL = "YuNet (OpenCV model zoo)"
REFERENCE_LABELS = {YUNET: YUNET_LABEL, HAAR: HAAR_LABEL}
"""The detectors that need no training, best first: what a trained model is compared with."""

ModelKey = tuple[str, int, int]
SINGLE_BOX_THRESHOLD = 0.5
"""The face probability from which a single-box model's face counts, unless told otherwise."""


def default_threshold(runtime) -> float:
    """The threshold a model's faces are counted from unless told otherwise: its kind's."""
    from facetracker.dense import DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD if getattr(runtime, "dense", False) else SINGLE_BOX_THRESHOLD



def model_file_key(path: str | Path) -> ModelKey:
    """One version of a model file (or a run folder's model): its resolved path, modification time
    in ns and size. A run still training replaces its model.keras, and every cache of a loaded model
    uses this key, so all of them move to the new file together."""
    model = find_model(path).resolve()
    stat = model.stat()
    return str(model), stat.st_mtime_ns, stat.st_size


PixelBox = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class FaceBox:
    """One face in a frame: pixel box (x0, y0, x1, y1), score, and the tracker's ID (0: untracked)."""

    box: PixelBox
    score: float
    track_id: int = 0


@dataclasses.dataclass(frozen=True)
class Detection:
    probability: float
    """The most confident face's probability (for a single-box model, its face/no-face output)."""
    box: PixelBox | None
    """Pixel box (x0, y0, x1, y1) of the most confident face when one was found, else None."""
    model_ms: float
    faces: tuple[FaceBox, ...] = ()
    """Every face found, most confident first; a single-box model finds at most one."""

    def __post_init__(self) -> None:
        if not self.faces and self.box is not None:  # a single-box detection is its own one face
            object.__setattr__(self, "faces", (FaceBox(self.box, self.probability),))

    @property
    def found(self) -> bool:
        return self.box is not None


class KerasRuntime:
    """A `.keras` model (or a face tracker in memory) called directly through one traced function,
    as Keras' `predict()` costs ~100 ms a call; with a fixed input signature no later call traces
    or builds a graph. `frame` (width, height): a dense model's network is rebuilt for camera frames
    of that size, as the live path runs it (`dense.input_for_frame`); a single-box model is unchanged."""

    name = "keras"

    def __init__(self, path_or_model, frame: tuple[int, int] | None = None):
        import tensorflow as tf

        from facetracker.export import input_for, network_at
        from facetracker.model import is_dense, load_model

        self.model = path_or_model if hasattr(path_or_model, "net") else load_model(path_or_model)
        self.dense = is_dense(self.model)
        net = network_at(self.model, input_for(self.model, frame) if self.dense else None)
        height, width = (int(v) for v in net.input_shape[1:3])
        self.input_wh = (width, height)
        spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="image")
        self._call = tf.function(lambda x: net(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._call(np.asarray(images, np.float32)).numpy()


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
calls are timed on all cores too (`pick_threads`). Kept well below the models' calls: this
machine's speed moves by half between runs (YuNet 4.7-7.5 ms a frame): with the line at 4 ms, the
320x256 `multi` network (4.5 ms on one thread in a fast run) kept one thread, 5.1 ms a frame,
where two threads gave 3.5 ms in the next run."""


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
    """A `.tflite` model on the TFLite interpreter with the XNNPACK delegate (on by default for
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
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # TF 2.21's tf.lite.Interpreter warns that LiteRT will replace it
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            self.interpreter = tf.lite.Interpreter(model_content=content, num_threads=num_threads)
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


class Detector:
    """Face probability and pixel box for BGR frames of any size.

    Thread-safe: the webcam callback runs in a worker thread. Each viewer has its own Detector (its
    threshold and smoothing) over a runtime shared by all, which serialises its own calls where it
    must; the lock here guards only this detector's smoothing state.
    """

    def __init__(self, runtime_or_path, threshold: float | None = None, smoothing: float = 0.0,
                 look_closer: bool = False):
        self.runtime = runtime_or_path if hasattr(runtime_or_path, "predict") else load_runtime(runtime_or_path)
        self.threshold = default_threshold(self.runtime) if threshold is None else threshold
        """A face counts from this probability; None: the model kind's (`default_threshold`)."""
        self.smoothing = smoothing
        """0 draws each frame's box as it is; towards 1 the box follows the face more slowly but steadily."""
        self.look_closer = look_closer
        """A dense model also searches the frame in tiles at twice the scale (`dense.closer_tiles`):
        for photos, where faces half as small are worth about seven model calls. Live video does not."""
        self._lock = threading.Lock()
        self._smoothed: np.ndarray | None = None

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        if getattr(self.runtime, "dense", False):
            return self._detect_every_face(frame_bgr)
        height, width = frame_bgr.shape[:2]
        image = model_input(frame_bgr, self.runtime.input_wh[0], bgr=True)[None]  # a single-box model is square
        start = time.perf_counter()
        out = self.runtime.predict(image)[0]
        model_ms = (time.perf_counter() - start) * 1000
        with self._lock:
            probability = float(out[0])
            box = np.clip(out[1:5], 0.0, 1.0)
            if not (probability >= self.threshold and np.isfinite(out[:5]).all()):  # NaN is no face
                self._smoothed = None
                return Detection(probability, None, model_ms)
            if self.smoothing > 0 and self._smoothed is not None:
                box = self.smoothing * self._smoothed + (1 - self.smoothing) * box
            self._smoothed = box
        x0, y0, x1, y1 = (box * [width, height, width, height]).round().astype(int)
        return Detection(probability, (int(x0), int(y0), int(x1), int(y1)), model_ms)


    def _detect_every_face(self, frame_bgr: np.ndarray) -> Detection:
        """A dense model: the frame letterboxed, every cell's face decoded, overlaps suppressed."""
        size = self.runtime.input_wh
        image, placed = letterbox(frame_bgr, size, bgr=True)
        tiles = closer_tiles(placed.width, placed.height, size) if self.look_closer else []
        tile_images = tile_inputs(frame_bgr, tiles, size, bgr=True)
        start = time.perf_counter()
        rows = self.runtime.predict(image[None])[0]
        # One call per tile: an interpreter resized between batch sizes would reallocate every frame.
        tile_rows = [self.runtime.predict(tile_image[None])[0] for tile_image in tile_images]
        model_ms = (time.perf_counter() - start) * 1000
        boxes, scores = decode(rows, threshold=self.threshold)
        every_box, every_score = [placed.to_frame(boxes)], [scores]
        for tile, cells in zip(tiles, tile_rows):
            boxes, scores = decode(cells, threshold=self.threshold)
            whole = tile.whole(boxes, size)
            every_box.append(tile.to_frame(boxes[whole], size))
            every_score.append(scores[whole])
        boxes, scores = merge_faces(every_box, every_score) if tiles else (every_box[0], every_score[0])
        faces = tuple(FaceBox(tuple(int(v) for v in box.round()), float(score)) for box, score in zip(boxes, scores))
        top = max(float(np.nanmax(r[:, 0])) if len(r) else 0.0 for r in [rows, *tile_rows])
        return Detection(top, faces[0].box if faces else None, model_ms, faces)


class HaarDetector:
    """OpenCV's Haar cascade, the classical baseline: every face it finds, the largest first. It says
    face or no face (probability 1 or 0), so it has no threshold, and its boxes are not smoothed."""

    def __init__(self, min_size: int = 40):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load OpenCV's Haar cascade from {path}")
        self.min_size = min_size
        self._lock = threading.Lock()

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        start = time.perf_counter()
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        with self._lock:  # CascadeClassifier is not documented as thread-safe
            faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(self.min_size, self.min_size))
        model_ms = (time.perf_counter() - start) * 1000
        if len(faces) == 0:
            return Detection(0.0, None, model_ms)
        boxes = sorted(((int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in faces),
                       key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return Detection(1.0, boxes[0], model_ms, tuple(FaceBox(box, 1.0) for box in boxes))


class YuNetFrameDetector:
    """YuNet (see `facetracker.yunet`) behind the same `detect(frame) -> Detection` as the others:
    every face with its score, the most confident first."""

    def __init__(self, threshold: float = 0.6, max_side: int | None = 320):
        from facetracker.yunet import YuNetDetector

        self.yunet = YuNetDetector(score_threshold=threshold, max_side=max_side)

    def detect(self, frame_bgr: np.ndarray) -> Detection:
        faces = self.yunet.detect_all(frame_bgr)
        if not faces:
            return Detection(0.0, None, self.yunet.last_ms)
        return Detection(faces[0].score, faces[0].box, self.yunet.last_ms,
                         tuple(FaceBox(face.box, face.score) for face in faces))


def reference_detector(key: str, threshold: float = 0.6, max_side: int | None = 320):
    """The detector of a reference key (YUNET or HAAR), which needs no training. YuNet sees the frame
    shrunk to `max_side` (the live path's 320 by default) and reports faces scoring `threshold` or more."""
    if key == YUNET:
        return YuNetFrameDetector(threshold, max_side)
    if key == HAAR:
        return HaarDetector()
    raise ValueError(f"unknown reference detector {key!r}; choose one of {', '.join(REFERENCE_LABELS)}")


def photo_detector(model: str | Path, threshold: float | None = None):
    """The detector for photos, where the small faces of a group photo matter more than speed: a
    reference key (YUNET or HAAR) at the photo's own resolution, else a trained model that looks
    closer (`Detector.look_closer`). `threshold` None: the detector kind's default."""
    if str(model) in REFERENCE_LABELS:
        return reference_detector(str(model), threshold=SINGLE_BOX_THRESHOLD if threshold is None else threshold,
                                  max_side=None)
    return Detector(model, threshold=threshold, look_closer=True)


BOX_COLOUR_BGR = (0, 200, 0)


def draw_labelled_box(image: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int],
                      label: str | None = None) -> np.ndarray:
    """Draw a pixel box, with its label on a filled tab above it, onto the image (in place) and
    return it. Line and text scale with the image: they read alike on a thumbnail and a 1280 px frame."""
    height, width = image.shape[:2]
    side = max(height, width)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, max(2, round(side / 200)))
    if label:
        scale = max(0.4, side / 1000)
        weight = 1 if scale < 0.8 else 2
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        top = max(y0 - th - 8, 0)
        cv2.rectangle(image, (x0, top), (x0 + tw + 8, top + th + 8), colour, -1)
        cv2.putText(image, label, (x0 + 4, top + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), weight,
                    cv2.LINE_AA)
    return image


def draw_faces(frame_bgr: np.ndarray, faces: tuple[FaceBox, ...] | list[FaceBox], label: str = "face") -> np.ndarray:
    """Draw every face's box with its label, tracker ID (when it has one) and score onto the frame
    (in place) and return it."""
    for face in faces:
        name = f"{label} {face.track_id}" if face.track_id else label
        draw_labelled_box(frame_bgr, face.box, BOX_COLOUR_BGR, f"{name} {face.score:.2f}")
    return frame_bgr


def draw_detection(frame_bgr: np.ndarray, detection: Detection, label: str = "face") -> np.ndarray:
    """Draw every face of the detection with its label and probability onto the frame (in place)."""
    return draw_faces(frame_bgr, detection.faces, label)
