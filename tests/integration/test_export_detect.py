"""Exported models predict what the Keras model predicts, on real face photos, and the fast
runtimes behind the Detect page (TFLite with XNNPACK, ONNX Runtime) are set up as intended."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facetracker.data.datasets import load_dataset
from facetracker.data.images import model_input, sample_pixels
from facetracker.runs import run_folder as runs
from tests.conftest import REPO, SHARED_WEIGHTS, require

pytestmark = pytest.mark.slow

N_FACES, N_EMPTY = 24, 16


@pytest.fixture(scope="module")
def helen_samples(helen):
    return load_dataset(helen, check_pixels=False).samples


def training_samples(samples):
    return [s for s in samples if s.box][:N_FACES] + [s for s in samples if not s.box][:N_EMPTY]


@pytest.fixture(scope="module")
def trained_run(helen, helen_samples, tmp_path_factory):
    """One epoch of the fast preset on a few dozen real photos with and without a face (from cached
    ImageNet weights), so the outputs differ from photo to photo and agreeing means something. With
    the grid box head (its softmax over cells must survive every export)."""
    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    root = tmp_path_factory.mktemp("export")
    home = root / "keras-home"
    shutil.copytree(SHARED_WEIGHTS, home / "models")
    data = root / "faces"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for sample in training_samples(helen_samples):
        shutil.copy(sample.image, data / "images")
        if sample.label:
            shutil.copy(sample.label, data / "labels")
    run_dir = root / "run"
    result = subprocess.run(
        [sys.executable, "-m", "facetracker", "train", "--data", str(data), "--run-dir", str(run_dir), "--preset",
         "fast", "--head", "grid", "--epochs", "1", "--batch-size", "8"],
        cwd=REPO, env={**os.environ, "KERAS_HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


@pytest.fixture(scope="module")
def photos(helen_samples):
    """Model inputs from real photos the model did not train on: faces of all sizes and no-face images."""
    seen = {s.image for s in training_samples(helen_samples)}
    unseen = [s for s in helen_samples if s.image not in seen]
    chosen = [s for s in unseen if s.box][:12] + [s for s in unseen if not s.box][:4]
    return np.stack([model_input(sample_pixels(s), 120) for s in chosen])


@pytest.fixture(scope="module")
def keras_out(trained_run, photos):
    from facetracker.nn.keras_runtime import KerasRuntime

    out = KerasRuntime(trained_run / runs.MODEL).predict(photos)
    # The comparison only means something if the outputs differ from photo to photo. The boxes do
    # after one epoch; the face probability of such a short run may sit at 1.0 for every photo
    # (seen in CI: a spread of 0.026), so it is not required to vary.
    assert out.shape == (len(photos), 5)
    assert out[:, 1:].std(axis=0).max() > 0.01, out
    return out


@pytest.fixture(scope="module")
def exported(trained_run):
    """Each format exported once, beside the model as `python -m facetracker export` writes it."""
    from facetracker.nn.export import export

    done = {}

    def path(fmt):
        if fmt not in done:
            done[fmt] = export(trained_run, fmt)
        return done[fmt]

    return path


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_exported_models_match_the_keras_model_on_real_faces(exported, photos, keras_out, fmt):
    from facetracker.inference.runtimes import load_runtime

    predicted = load_runtime(exported(fmt)).predict(photos)
    difference = np.abs(predicted - keras_out).max()
    print(f"{fmt}: largest difference from Keras {difference:.2e} over {len(photos)} real photos")
    assert difference < 1e-4


def test_the_savedmodel_export_matches_keras_but_is_refused_as_input(exported, photos, keras_out):
    """SavedModels are written for other tools; read back, one is a graph that may touch files, so
    FaceTracker refuses it. The test loads the one it has just exported itself."""
    import tensorflow as tf

    from facetracker.inference.runtimes import load_runtime

    folder = exported("savedmodel")
    with pytest.raises(ValueError, match="SavedModel is refused"):
        load_runtime(folder)
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    predicted = next(iter(serve(tf.constant(photos.astype(np.float32))).values())).numpy()
    assert np.abs(predicted - keras_out).max() < 1e-4


def test_int8_model_stays_close_to_the_keras_model_on_real_faces(exported, photos, keras_out):
    """int8 weights are lossy by design: small shifts, the same decisions where the model is sure."""
    from facetracker.inference.runtimes import load_runtime

    predicted = load_runtime(exported("tflite-int8")).predict(photos)
    difference = np.abs(predicted - keras_out)
    print(f"tflite-int8: mean difference from Keras {difference.mean():.2e}, largest {difference.max():.2e}")
    assert difference.mean() < 0.02
    assert difference[:, 1:].max() < 0.05  # box corners: 6 pixels of the 120-pixel input at most
    sure = np.abs(keras_out[:, 0] - 0.5) > 0.2
    assert np.array_equal(predicted[sure, 0] > 0.5, keras_out[sure, 0] > 0.5)


def test_tflite_export_has_frozen_weights_for_xnnpack(exported):
    """Weights left as resource variables kept XNNPACK from packing them: 6x slower."""
    from facetracker.inference.runtimes import TFLiteRuntime

    runtime = TFLiteRuntime(exported("tflite"))
    ops = {op["op_name"] for op in runtime.interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert not ops & {"VAR_HANDLE", "READ_VARIABLE", "RSQRT"}, ops  # RSQRT: batch norm left unfolded


def test_tflite_runtime_threads_and_batches(exported, photos):
    from facetracker.inference.runtimes import MAX_THREADS, TFLiteRuntime, usable_cores

    path = exported("tflite-int8")
    picked = TFLiteRuntime(path)
    assert picked.num_threads in (1, min(MAX_THREADS, usable_cores())) and picked.name == "tflite-int8"
    two = TFLiteRuntime(path, num_threads=2)
    assert two.num_threads == 2
    batch = picked.predict(photos[:3])
    one_by_one = np.concatenate([picked.predict(photos[i:i + 1]) for i in range(3)])
    assert np.abs(batch - one_by_one).max() < 1e-5
    assert np.abs(two.predict(photos[:3]) - batch).max() < 1e-5


class SleepingRuntime:
    """A stand-in runtime whose call takes `ms` split perfectly over its threads (plus a fixed cost)."""

    def __init__(self, one_thread_ms: float, threads: int, fixed_ms: float = 0.0):
        self.ms = one_thread_ms / threads + fixed_ms

    def predict(self, images):
        import time

        time.sleep(self.ms / 1000)
        return np.zeros((len(images), 5), np.float32)


@pytest.mark.parametrize("one_thread_ms, fixed_ms, expected", [(1.0, 0.0, 1), (10.0, 0.0, 2), (10.0, 30.0, 1)])
def test_a_runtime_takes_both_cores_only_for_calls_worth_splitting(monkeypatch, one_thread_ms, fixed_ms, expected):
    """A dense model's 10 ms call takes both cores; a 1 ms call, or one that splitting does not
    speed up, keeps one thread and leaves the other core to the video."""
    from facetracker.inference import runtimes

    monkeypatch.setattr(runtimes, "usable_cores", lambda: 2)
    runtime, threads = runtimes.pick_threads(lambda n: SleepingRuntime(one_thread_ms, n, fixed_ms), (32, 32))
    assert threads == expected and runtime.ms == pytest.approx(one_thread_ms / expected + fixed_ms)


def test_viewers_share_one_tflite_runtime_from_several_threads(exported, helen_samples):
    """Each viewer has its own Detector over one runtime; the interpreter is not re-entrant, and the
    runtime alone serialises the calls (the frame path holds no other model lock)."""
    import threading

    from facetracker.inference.detect import Detector
    from facetracker.inference.runtimes import TFLiteRuntime
    from facetracker.nn.bench import letterbox

    frames = [letterbox(sample_pixels(s)) for s in helen_samples[:6]]
    runtime = TFLiteRuntime(exported("tflite"), num_threads=1)
    expected = [Detector(runtime, threshold=0.0).detect(frame) for frame in frames]
    viewers = [Detector(runtime, threshold=0.0) for _ in range(4)]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def watch(index: int) -> None:
        try:
            results[index] = [viewers[index].detect(frame) for _ in range(15) for frame in frames]
        except Exception as error:  # a thread's exception would otherwise pass as a warning
            errors.append(error)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(viewers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(results) == list(range(len(viewers)))
    for found in results.values():
        assert len(found) == 15 * len(frames)
        for i, detection in enumerate(found):
            assert detection.box == expected[i % len(frames)].box
            assert detection.probability == pytest.approx(expected[i % len(frames)].probability, abs=1e-6)


def test_detectors_agree_on_a_camera_frame(trained_run, exported, helen_samples):
    """The whole Detect-page path on a 640x480 frame: same box in pixels from Keras and TFLite."""
    from facetracker.inference.detect import Detector
    from facetracker.inference.draw import draw_detection
    from facetracker.nn.bench import letterbox
    from facetracker.nn.keras_runtime import KerasRuntime

    frame = letterbox(sample_pixels([s for s in helen_samples if s.box][-1]))
    assert frame.shape == (480, 640, 3)
    lite = Detector(exported("tflite"), threshold=0.0)
    reference = Detector(KerasRuntime(trained_run / runs.MODEL), threshold=0.0)
    found, expected = lite.detect(frame), reference.detect(frame)
    assert found.box is not None and abs(found.probability - expected.probability) < 1e-3
    assert np.abs(np.subtract(found.box, expected.box)).max() <= 1
    drawn = draw_detection(frame.copy(), found)
    assert not np.array_equal(drawn, frame)


def test_onnx_export_without_tf2onnx_says_what_to_install(trained_run, tmp_path, monkeypatch):
    from facetracker.nn.export import export

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match="pip install tf2onnx"):
        export(trained_run, "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_only_a_model_that_finds_every_face_is_shaped_for_a_camera_frame(trained_run):
    """`--frame` rebuilds a dense network for the frame's shape; a single-box model squeezes any frame
    into its square, so it is refused with the reason, and nothing is written."""
    result = subprocess.run([sys.executable, "-m", "facetracker", "export", "--model", str(trained_run), "--format",
                             "tflite", "--frame", "640x480"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{trained_run / runs.MODEL}: only a model that finds every face" in result.stderr
    assert not list(trained_run.glob("model.*x*.tflite"))
    result = subprocess.run([sys.executable, "-m", "facetracker", "export", "--model", str(trained_run), "--format",
                             "tflite", "--frame", "640 by 480"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "'640 by 480' is not a frame size such as 640x480" in result.stderr
