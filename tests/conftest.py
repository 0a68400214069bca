"""Shared fixtures. streamlit_webrtc is imported first: importing tensorflow before it segfaults."""

import streamlit_webrtc  # noqa: F401  (must come before anything that imports tensorflow)

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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
