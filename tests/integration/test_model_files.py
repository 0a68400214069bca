"""Model files that are not FaceTracker models: each is refused with what it is and why, on the
command line and on the Evaluate page; a TensorFlow SavedModel is never run; the browser sees no
server paths and no tracebacks."""

from __future__ import annotations

import re
import tempfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """One file per kind of thing a person may hand in as a model."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    inputs = keras.Input((120, 120, 3))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs))).save(folder / "other.keras")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, [keras.layers.Dense(1)(pooled), keras.layers.Dense(4)(pooled)]).save(folder / "two.keras")
    (folder / "empty.keras").write_bytes(b"")
    (folder / "garbage.keras").write_bytes(b"this is not a model, just text")
    (folder / "legacy.keras").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with zipfile.ZipFile(folder / "notes.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not a Keras archive")
    # Apart: a `.tflite` beside a `.keras` of the same name is taken for its export (see models.exported_file).
    exported = tmp_path_factory.mktemp("tflite")
    (exported / "empty.tflite").write_bytes(b"")
    (exported / "garbage.tflite").write_bytes(b"not a flatbuffer at all" * 4)
    return {path.name: path for path in [*folder.iterdir(), *exported.iterdir()]}


EXPECTED = {
    "other.keras": "not a FaceTracker model: it is a plain Keras model (Functional, 1 output of shape (None, 3))",
    "two.keras": "not a FaceTracker model: it is a plain Keras model (Functional, 2 outputs of shape (None, 1), "
                 "(None, 4))",
    "empty.keras": "not a Keras file: it is empty (0 bytes)",
    "garbage.keras": "not a Keras file (zip): its first bytes are",
    "legacy.keras": "not a Keras file (zip): it is an HDF5 file",
    "notes.keras": "not a usable FaceTracker model (",
    "empty.tflite": "not a TFLite model: the file is empty",
    "garbage.tflite": "not a usable TFLite FaceTracker model (",
}


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / "images").mkdir()
    Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(folder / "images" / "a.png")
    return folder


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_file_that_is_not_a_facetracker_model_is_refused_saying_what_it_is(model_files, name):
    from facetracker.inference.runtimes import load_runtime

    with pytest.raises(ValueError) as refused:
        load_runtime(model_files[name])
    message = str(refused.value)
    assert message.startswith(f"{model_files[name]}: ") and EXPECTED[name] in message, message
    assert "File not found" not in message


@pytest.mark.parametrize("name", ["other.keras", "empty.keras", "garbage.keras"])
def test_the_cli_evaluate_refuses_it_in_one_line(model_files, one_image, name, capfd):
    from facetracker.cli import main

    assert main(["evaluate", "--model", str(model_files[name]), "--data", str(one_image)]) == 2
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and EXPECTED[name] in errors[0], err
    assert "Traceback" not in out + err and "AttributeError" not in err


@pytest.fixture(scope="module")
def file_writing_saved_model(tmp_path_factory) -> tuple[Path, Path]:
    """A SavedModel whose serving graph writes a file each time it runs (as any graph may)."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("savedmodel")
    marker = folder / "graph-wrote-this"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 120, 120, 3], tf.float32)])
        def serve(self, images):
            tf.io.write_file(str(marker), "written by the model's graph")
            return {"output": tf.zeros([tf.shape(images)[0], 5])}

    module = Writer()
    tf.saved_model.save(module, str(folder / "model"), signatures={"serving_default": module.serve})
    assert not marker.exists()
    return folder / "model", marker


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_savedmodel_is_refused_as_input_and_its_graph_never_runs(file_writing_saved_model, one_image, tmp_path,
                                                                   command, capfd):
    from facetracker.cli import main

    folder, marker = file_writing_saved_model
    args = {"evaluate": ["--data", str(one_image)], "predict": ["--images", str(one_image / "images"),
                                                                 "--out", str(tmp_path / "labels")],
            "export": ["--format", "tflite"]}[command]
    for model in (folder, folder / "saved_model.pb"):
        assert main([command, "--model", str(model), *args]) == 2
        out, err = capfd.readouterr()
        assert "a TensorFlow SavedModel is refused as input" in err and ".tflite" in err and ".keras" in err, err
        assert "Traceback" not in out + err
    assert not marker.exists(), "the SavedModel's graph ran"


def test_the_help_no_longer_offers_savedmodel_input(capsys):
    from facetracker.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "SavedModel folders are refused" in text and "SavedModel folder or run folder" not in text


# ----------------------------------------------------------------------------------------------
# What the browser sees


def test_streamlit_is_set_to_show_no_traceback_to_browsers():
    from streamlit import config
    from streamlit.elements.exception import _error_detail_visibility

    value = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["client"]["showErrorDetails"]
    previous = config.get_option("client.showErrorDetails")
    try:
        config.set_option("client.showErrorDetails", value)
        shown = _error_detail_visibility(True)
    finally:
        config.set_option("client.showErrorDetails", previous)
    assert not shown.show_trace and not shown.show_message


def test_messages_name_files_relative_to_the_data_root_and_never_temp_folders(monkeypatch, tmp_path):
    from app_pages import ui

    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(tmp_path / "data"))
    temp = Path(tempfile.gettempdir()) / "tmpx1y2" / "upload" / "b.jpg"
    shown = ui.shown_text(f"{tmp_path}/data/runs/r1/model.keras: refused; {temp}: bad; see https://example.org/a/b")
    assert shown == "runs/r1/model.keras: refused; b.jpg: bad; see https://example.org/a/b"
    assert ui.readable(FileNotFoundError(2, "No such file or directory", str(tmp_path / "data" / "faces" / "x.png"))) \
        == "No such file or directory: faces/x.png"


def test_the_evaluate_page_refuses_a_foreign_model_without_server_paths(model_files, root, faces):
    from facetracker.runs import run_folder as runs
    from tests.helpers.app import assert_no_exception, open_page, texts, write_run

    run_dir = write_run(root / "runs", "foreign", faces, state="finished", epochs_done=1)
    (run_dir / runs.MODEL).write_bytes(model_files["other.keras"].read_bytes())
    at = open_page("app_pages/evaluate.py")
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert_no_exception(at)
    errors = [e.replace("\\", "") for e in texts(at, "error")]  # as shown: names are escaped Markdown
    assert any("runs/foreign/model.keras: not a FaceTracker model" in e for e in errors), errors
    for error in errors:
        assert str(root) not in error and tempfile.gettempdir() not in error
        assert not re.search(r"(^|\s)/\w", error), error

    detect = open_page("app_pages/detect.py")  # the newest model is the foreign one
    errors = [e.replace("\\", "") for e in texts(detect, "error")]
    assert any("Cannot load this model: runs/foreign/model.keras: not a FaceTracker model" in e for e in errors), errors
    assert not any(str(root) in e or re.search(r"(^|\s)/\w", e) for e in errors), errors


from tests.helpers.app import faces, no_webrtc_session, root  # noqa: E402,F401  (fixtures)
