"""Shared fixtures. streamlit_webrtc is imported first: importing tensorflow before it segfaults."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit_webrtc  # noqa: F401  (must come before anything that imports tensorflow)

REPO = Path(__file__).resolve().parent.parent
FIXTURE_FACES = REPO / "tests" / "fixtures" / "faces"
"""A labelme folder kept in the repository (see tests/fixtures/README.md): one face photo, one without."""
SHARED_WEIGHTS = Path(os.environ.get("FACETRACKER_KERAS_WEIGHTS", REPO.parent / "shared" / "keras-home" / "models"))


def photos_folder() -> Path:
    """The real photos the tests read: $FACETRACKER_DATA, by default `../shared/datasets` beside the
    repository, where CI keeps them. The one place that default is written."""
    return Path(os.environ.get("FACETRACKER_DATA", REPO.parent / "shared" / "datasets")).resolve()


def require(path: Path, what: str) -> Path:
    """Real data is part of CI: missing there is a failure, on a laptop a skip."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set FACETRACKER_DATA)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return require(photos_folder(), "the real datasets")


@pytest.fixture(scope="session")
def helen(data_root) -> Path:
    return require(data_root / "faces-helen", "faces-helen")


@pytest.fixture(scope="session")
def webcam(data_root) -> Path:
    return require(data_root / "webcam-tutorial", "webcam-tutorial")


SERIAL_GROUP = "browser-and-trained-multi"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items) -> None:
    """The suite runs on two worker processes (pytest-xdist, `--dist loadgroup`). A test module goes
    to one worker whole, so its module-scoped fixtures (trained runs) are made once. The
    real-browser tests each start a Streamlit server and Chromium, and two at once would measure
    each other's load: they and the tests sharing the session's trained `multi` run (made once per
    worker) go to one worker, one after another, while the other worker takes other modules. That
    group is the longest, so it comes first: started last, it would leave the other worker idle."""
    serial = []
    for item in items:
        if item.get_closest_marker("browser") or "short_multi_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))
            serial.append(item)
        else:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items[:] = serial + [item for item in items if item not in serial]


MULTI_TRAIN_FACES = 200
MULTI_TRAIN_EMPTY = 40
MULTI_EPOCHS = 6


@pytest.fixture(scope="session")
def short_multi_run(helen, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One short `multi` run from the cached ImageNet weights on a few hundred helen portraits and
    no-face photos (copied: a run writes nothing into ../shared), trained once for every test that
    needs a model that finds every face: (run folder, the training command's result)."""
    from facetracker.data.datasets import load_dataset

    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    home = tmp_path_factory.mktemp("multi-keras-home")
    shutil.copytree(SHARED_WEIGHTS, home / "models")
    dataset = load_dataset(helen, check_pixels=False)
    faces = [s for s in dataset.samples if s.has_face][:MULTI_TRAIN_FACES]
    empty = [s for s in dataset.samples if not s.has_face][:MULTI_TRAIN_EMPTY]
    folder = tmp_path_factory.mktemp("portraits")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for sample in faces + empty:
        shutil.copy(sample.image, folder / "images")
        if sample.label:
            shutil.copy(sample.label, folder / "labels")
    run_dir = tmp_path_factory.mktemp("runs") / "portraits-multi"
    command = [sys.executable, "-m", "facetracker", "train", "--data", str(folder), "--run-dir", str(run_dir),
               "--preset", "multi", "--epochs", str(MULTI_EPOCHS), "--copies", "2"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "KERAS_HOME": str(home)}, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"the multi run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return run_dir, result


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """A KERAS_HOME holding the real ImageNet no-top files, as after a download."""
    require(SHARED_WEIGHTS, "the cached Keras ImageNet weights")
    home = tmp_path / "keras-home"
    shutil.copytree(SHARED_WEIGHTS, home / "models")
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "empty-keras-home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def restore_signals():
    """train() installs SIGTERM/SIGINT handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
