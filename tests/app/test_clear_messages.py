"""Messages a person understands: a Keras model that is not a FaceTracker, a model file that holds
code, a full disk (naming the file), and a name too long for the file system."""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path

import pytest

from app_pages import ui
from facetracker.cli import main, os_error_sentence
from facetracker.config.training import config_for
from facetracker.inference.runtimes import load_runtime
from facetracker.io import safety
from facetracker.nn.model import load_model
from facetracker.runs import launcher
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    copy_helen,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
)

# ----------------------------------------------------------------------------------------------
# Model files


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Keras files a person may hand in: plain models, and models whose loading would run code
    (each writes a marker file if its code ever runs)."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    marker = str(folder / "code-ran")
    inputs = keras.Input((64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(5)(pooled)).save(folder / "plain-5.keras")  # FaceTracker's shape
    keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(
        folder / "sequential.keras")

    def double(tensor):
        open(marker, "w").write("ran")
        return tensor * 2

    keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Lambda(lambda t: (open(marker, "w").write("ran"), t)[1])(
        pooled))).save(folder / "lambda.keras")
    keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Lambda(double)(pooled))).save(folder / "function.keras")

    @keras.saving.register_keras_serializable(package="outside")
    class Sneaky(keras.layers.Layer):
        def call(self, tensor):
            return tensor

    keras.Model(inputs, keras.layers.Dense(5)(Sneaky(name="sneaky")(pooled))).save(folder / "custom.keras")
    Path(marker).unlink()  # building the models ran their code once, here
    return {path.stem: path for path in folder.glob("*.keras")}


@pytest.mark.parametrize("name, kind", [("plain-5", "Functional, 1 output of shape (None, 5)"),
                                        ("sequential", "Sequential, 1 output of shape (None, 3)")])
def test_a_plain_keras_model_is_refused_in_words_that_do_not_contradict_themselves(models, name, kind):
    with pytest.raises(ValueError) as refused:
        load_runtime(models[name])
    message = str(refused.value)
    assert f"not a FaceTracker model: it is a plain Keras model ({kind}), not one saved by this app's training" \
        in message
    assert "a FaceTracker gives one output of shape" not in message
    assert "python -m facetracker train" in message


@pytest.mark.parametrize("name, what", [("lambda", "a Lambda layer 'lambda"), ("function", "a Lambda layer"),
                                        ("custom", f"the class Sneaky from the Python module '{__name__}'")])
def test_a_model_that_holds_code_is_refused_saying_so_and_the_code_never_runs(models, name, what):
    for load in (load_model, load_runtime):
        with pytest.raises(ValueError) as refused:
            load(models[name])
        assert f"refused: the model holds code ({what}" in str(refused.value)
        assert "which this app never runs" in str(refused.value)
    assert not (models[name].parent / "code-ran").exists()


def test_the_cli_says_in_one_line_that_a_model_holds_code(models, tmp_path, helen, capfd):
    data = copy_helen(helen, tmp_path / "faces", faces=2, empty=0)
    assert main(["evaluate", "--model", str(models["function"]), "--data", str(data)]) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "the model holds code (a Lambda layer" in lines[0], err


# ----------------------------------------------------------------------------------------------
# A full disk


def disk_full(monkeypatch) -> None:
    """Every file written from now on fails as on a full disk (where fsync reports delayed allocation)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_the_cli_names_the_file_a_full_disk_refused(tmp_path, helen, capfd, monkeypatch):
    data = copy_helen(helen, tmp_path / "faces", faces=2, empty=0)
    out = tmp_path / "prelabels"
    disk_full(monkeypatch)
    code = main(["predict", "--model", "yunet", "--images", str(data / "images"), "--out", str(out)])
    err = capfd.readouterr().err
    assert code == 2, err
    line = [line for line in err.splitlines() if line.startswith("error:")][-1]
    assert "(None)" not in line
    assert line.startswith(f"error: {out}/") and line.endswith(
        ": the disk is full (No space left on device); free some space and run it again"), line
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"


@pytest.mark.parametrize("error, sentence", [
    (OSError(errno.ENOSPC, "No space left on device"), "The disk is full (No space left on device); free some "
                                                         "space and run it again"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.json"), "/data/x.json: the disk is full"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x"), "/data/x: Permission denied"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "y" * 5000), "y" * 255 + "… (5,000 characters): the name is "
                                                                    "too long"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "/a -> /b: Invalid cross-device link")])
def test_operating_system_errors_read_as_sentences_naming_their_files(error, sentence):
    assert os_error_sentence(error).startswith(sentence)
    assert "None" not in os_error_sentence(error)


def test_a_zip_unpacked_onto_a_full_disk_names_the_entry(tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("faces/images/a.jpg", b"x" * 10_000)
    real_open = open

    class FullFile(io.RawIOBase):
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.handle.close()

    monkeypatch.setattr(safety, "open", lambda path, mode="r", *a, **k: FullFile(path, mode) if "w" in mode
                        else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(safety.UnsafeArchive) as raised:
        safety.extract_zip(io.BytesIO(archive.getvalue()), tmp_path / "out", 10**8, 100)
    message = ui.readable(raised.value)
    assert "'faces/images/a.jpg'" in message and "No space left on device" in message, message
    assert str(tmp_path) not in message, "the browser is not told the server's folders"


# ----------------------------------------------------------------------------------------------
# Names too long for the file system


@pytest.mark.parametrize("page", ["app_pages/dataset.py", "app_pages/augment.py", "app_pages/train.py"])
@pytest.mark.parametrize("typed, said", [("x" * 5000, "this name is too long (5,000 characters)"),
                                         ("y" * 256, "this name is too long (256 characters)"),
                                         ("a/" * 3000, "this path is too long (6,000 characters)")],
                         ids=["5000 characters", "256 characters", "a path of 6000"])
def test_a_folder_name_too_long_typed_in_the_app_is_refused_in_words(faces, page, typed, said):
    at = open_page(page)
    picker = next(s for s in at.selectbox if ui.OTHER_FOLDER in s.options)
    picker.set_value(ui.OTHER_FOLDER).run()
    next(t for t in at.text_input if t.label.startswith("Folder, relative")).set_value(typed).run()
    assert_no_exception(at)
    errors = texts(at, "error")
    assert any(said in e for e in errors), errors
    assert all(len(e) < 300 for e in errors), "the name is shown shortened"


def test_a_new_dataset_name_too_long_is_refused_in_words(root):
    at = open_page("app_pages/dataset.py")
    at.text_input(key="new_dataset_name").set_value("z" * 5000).run()
    at.button[[b.label for b in at.button].index("Create an empty dataset")].click().run()
    assert_no_exception(at)
    assert "That name is 5,000 characters long; a dataset folder's name can have at most 80." in texts(at, "error")
    assert [p.name for p in root.iterdir() if p.name != "runs"] == []


def test_a_run_name_too_long_is_refused_in_words(faces):
    with pytest.raises(ValueError, match="a run name can have at most 100 characters; this one has 5,000"):
        launcher.start_run(faces.parent / "runs", "r" * 5000, config_for(str(faces), "fast"))


def test_the_cli_says_a_folder_name_is_too_long(capfd):
    assert main(["inspect", "q" * 5000]) == 2
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line == f"error: {'q' * 255}… (5,000 characters): the name is too long for the file system (at most 255 " \
                   "bytes a name, 4096 a path)"
