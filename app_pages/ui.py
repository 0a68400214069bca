"""What every page shares: where the data lives, choosing a dataset, cached loaders, drawing boxes.

The pages arrange widgets; the work is done by `facetracker`. Loaders here are cached so a rerun
(every widget change) does not read a folder or load a model again.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import streamlit as st

from facetracker import data as data_lib
from facetracker import capture, runs, safety, workspace
from facetracker.detect import draw_labelled_box

log = logging.getLogger("facetracker.app")
UNEXPECTED = "Something went wrong"
OTHER_FOLDER = "another folder under the data root…"
TRUE_COLOUR = (40, 200, 40)  # RGB
PREDICTED_COLOUR = (235, 60, 60)


# ----------------------------------------------------------------------------------------------
# Where things are


def data_root() -> Path:
    return workspace.data_root()


def runs_root() -> Path:
    return workspace.runs_root()


def shown_path(path: str | Path) -> str:
    """A path as people should read it: relative to the data root when it is inside."""
    try:
        return str(Path(path).resolve().relative_to(data_root().resolve())) or "."
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve, Python < 3.13)
        return str(path)


def how_to_add_data() -> None:
    root = data_root()
    st.markdown(
        f"""
**How to give FaceTracker a dataset.** The app reads and writes only under its data root,
`{root}` (set `FACETRACKER_DATA_ROOT` to move it). A dataset is a folder there holding
`images/` with `labels/*.json` (labelme), `labels/*.txt` (YOLO) or `annotations/*.xml` (Pascal VOC),
or `train/`, `val/`, `test/` folders each holding them.

- copy a folder in: `cp -r ~/my-faces "{root}/my-faces"` (a symbolic link to a folder outside the data
  root is refused: that is what keeps the app inside it; to use folders where they are, start the app
  with `FACETRACKER_DATA_ROOT` pointing at the folder that holds them);
- or upload a zip of such a folder on the **Dataset** page;
- or start an empty dataset on the **Dataset** page and take photos with your webcam.
"""
    )


# ----------------------------------------------------------------------------------------------
# Choosing a dataset (the choice follows the person from page to page)


def choose_dataset(label: str = "Dataset", key: str = "dataset", default: str | Path | None = None) -> Path | None:
    """A dataset folder under the data root, from the list or typed; None (with a message) if unusable."""
    root = data_root()
    found = [p.name for p in workspace.list_datasets(root)]
    remembered = st.session_state.get("dataset_name")
    if default is not None and remembered is None:
        remembered = shown_path(default)
    options = found + [OTHER_FOLDER]
    index = options.index(remembered) if remembered in options else (len(options) - 1 if remembered else 0)
    choice = st.selectbox(label, options, index=index, key=f"{key}_choice",
                          help=f"Folders under the data root {root}")
    if choice == OTHER_FOLDER:
        typed = st.text_input("Folder, relative to the data root", key=f"{key}_typed",
                              value=remembered if remembered and remembered not in found else "",
                              placeholder="e.g. my-faces or projects/faces")
        if not typed.strip():
            if not found:
                st.info("No dataset folder under the data root yet.")
                how_to_add_data()
            return None
        try:
            path = safety.resolve_under(root, typed.strip())
        except safety.UnsafePath as error:
            st.error(str(error))
            return None
        if not path.is_dir():
            st.error(f"{typed}: no such folder under the data root {root}")
            return None
        st.session_state["dataset_name"] = typed.strip()
        return path
    try:
        path = safety.resolve_under(root, choice)
    except safety.UnsafePath as error:
        st.error(str(error))
        return None
    st.session_state["dataset_name"] = choice
    return path


def select_dataset(name: str, key: str = "dataset") -> None:
    """Make `name` the chosen dataset (call before the picker is drawn in this run)."""
    st.session_state["dataset_name"] = name
    st.session_state[f"{key}_choice"] = name


def folder_signature(folder: str | Path) -> tuple:
    """Changes when files are added, removed or replaced in a dataset's folders (cache key)."""
    folder = Path(folder)
    parts = []
    split_folders = [f"{s}/{k}" for s in data_lib.SPLITS for k in ("images", "labels")]
    for sub in ("", "images", "labels", "annotations", *split_folders):
        try:
            parts.append((sub, (folder / sub).stat().st_mtime_ns))
        except OSError:
            continue
    try:
        parts.append(("augment", (folder / "augment.json").stat().st_mtime_ns))
    except OSError:
        pass
    return tuple(parts)


@st.cache_data(show_spinner="Reading the dataset…", max_entries=16)
def _load_dataset(folder: str, signature: tuple, check_pixels: bool) -> data_lib.Dataset:
    return data_lib.load_dataset(folder, check_pixels=check_pixels)


def load_dataset(folder: Path, check_pixels: bool = False) -> data_lib.Dataset | None:
    """The dataset, or None after showing why it cannot be read."""
    try:
        return _load_dataset(str(folder), folder_signature(folder), check_pixels)
    except data_lib.DatasetError as error:
        st.warning(str(error))
        return None
    except OSError as error:
        st.error(f"{folder}: cannot read it ({error.strerror or error})")
        return None


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(image: str, embedded: bool, max_side: int) -> np.ndarray:
    return data_lib.sample_pixels(data_lib.Sample(image, None, embedded=embedded), max_side)


def sample_thumbnail(sample: data_lib.Sample, max_side: int = 320) -> np.ndarray | None:
    try:
        return thumbnail(sample.image, sample.embedded, max_side)
    except (ValueError, OSError):
        return None


# ----------------------------------------------------------------------------------------------
# Models


def model_choices() -> dict[str, str]:
    """Label shown -> key ("haar" or a run folder) of every model the Detect page can run."""
    choices = {}
    for summary in workspace.trained_runs(runs_root()):
        iou = f", val IoU {summary.best_val_iou:.2f}" if isinstance(summary.best_val_iou, (int, float)) else ""
        live = ", still training" if summary.live else ""
        choices[f"{summary.name} ({summary.backbone or 'model'}{iou}{live})"] = str(summary.path)
    choices["OpenCV Haar cascade (classical baseline, no training)"] = "haar"
    return choices


@st.cache_resource(show_spinner="Converting the model to TFLite for real-time speed (once per model)…",
                   max_entries=8)
def _tflite_runtime(run_dir: str, model_mtime_ns: int):
    from facetracker.export import export
    from facetracker.live import SharedRuntime

    # Exported afresh once per app process and model version: a model.tflite left by an older
    # exporter is never trusted.
    return SharedRuntime.load(export(run_dir, "tflite"))


@st.cache_resource(show_spinner=False)
def _haar():
    from facetracker.detect import HaarDetector

    return HaarDetector()


def make_detector(model_key: str, threshold: float = 0.5, smoothing: float = 0.0):
    """A new Detector over the cached (thread-safe) runtime of a run, or the shared Haar detector.

    Raises ValueError / FileNotFoundError / RuntimeError with a readable message.
    """
    if model_key == "haar":
        return _haar()
    from facetracker.detect import Detector

    model = Path(model_key) / runs.MODEL
    if not model.is_file():
        raise FileNotFoundError(f"{Path(model_key).name}: no model.keras yet (has training finished an epoch?)")
    return Detector(_tflite_runtime(model_key, model.stat().st_mtime_ns), threshold=threshold, smoothing=smoothing)


def newest_model_key() -> str:
    """The newest trained run, or the Haar baseline when nothing is trained yet."""
    trained = workspace.trained_runs(runs_root())
    return str(trained[0].path) if trained else "haar"


# ----------------------------------------------------------------------------------------------
# Drawing


def draw_box(image_rgb: np.ndarray, box, colour=TRUE_COLOUR, label: str | None = None,
             normalised: bool = True) -> np.ndarray:
    """A copy of the image with one box drawn (normalised [0, 1] or pixel corners)."""
    out = np.ascontiguousarray(image_rgb).copy()
    if box is None:
        return out
    height, width = out.shape[:2]
    x0, y0, x1, y1 = box
    if normalised:
        x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
    return draw_labelled_box(out, (x0, y0, x1, y1), colour, label)


def box_editor(image_rgb: np.ndarray, box, key: str) -> None:
    """The photo with its box, on which a rectangle can be dragged (read it with `dragged_box`)."""
    import plotly.graph_objects as go

    height, width = image_rgb.shape[:2]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    figure = go.Figure(go.Image(source="data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode()))
    if box is not None:
        x0, y0, x1, y1 = box
        figure.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line={"color": "rgb(%d,%d,%d)" % TRUE_COLOUR,
                                                                       "width": 3})
    figure.update_layout(dragmode="select", margin={"l": 0, "r": 0, "t": 0, "b": 0}, height=round(560 * height / width))
    figure.update_xaxes(visible=False, range=[0, width])
    figure.update_yaxes(visible=False, range=[height, 0])
    st.plotly_chart(figure, on_select="rerun", selection_mode="box", key=key, config={"displayModeBar": False})


def dragged_box(state, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The last rectangle dragged on a `box_editor` (its widget state), in whole pixels inside the
    image; None when nothing, or next to nothing, was dragged."""
    try:
        dragged = state["selection"]["box"][-1]
        return capture.clip_box((dragged["x"][0], dragged["y"][0], dragged["x"][1], dragged["y"][1]), width, height)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def image_grid(images: list[np.ndarray], captions: list[str], columns: int = 4) -> None:
    for start in range(0, len(images), columns):
        cells = st.columns(columns)
        for cell, image, caption in zip(cells, images[start:start + columns], captions[start:start + columns]):
            with cell:
                st.image(image, caption=caption, width="stretch")


def readable(error: BaseException) -> str:
    """One line for a person: the message, or the error's name when it has none."""
    text = str(error).strip().splitlines()
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return text[0] if text else type(error).__name__


def remember(key: str, value) -> None:
    """Keep a value for the session (survives page switches, unlike widget state)."""
    st.session_state[key] = value


@contextlib.contextmanager
def page_guard() -> Iterator[None]:
    """A page's unexpected error as one readable line (the traceback goes to the server's log)."""
    try:
        yield
    except Exception as error:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
        log.exception("page failed")
        st.error(f"{UNEXPECTED}: {readable(error)}. The details are in the server's log; the other pages still work.")
