"""What every page shares: where the data lives, choosing a dataset, cached loaders, drawing boxes.

The pages arrange widgets; the work is done by `facetracker`. Loaders here are cached so a rerun
(every widget change) does not read a folder or load a model again.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels
from facetracker.evaluation.trained_on import knows, limits, read_trained_on
from facetracker.inference import detect, models
from facetracker.inference.draw import draw_labelled_box
from facetracker.io import safety
from facetracker.labelling import capture
from facetracker.runs import workspace

log = logging.getLogger("facetracker.app")
UNEXPECTED = "Something went wrong"
OTHER_FOLDER = "another folder under the data root…"
TRUE_COLOUR = (40, 200, 40)  # RGB
PREDICTED_COLOUR = (235, 60, 60)
DATASET_NAME = "dataset_name"
"""Session state: the dataset last chosen on any page, so the choice follows the person."""


# ----------------------------------------------------------------------------------------------
# Where things are


def data_root() -> Path:
    return workspace.data_root()


def runs_root() -> Path:
    return workspace.runs_root()


DATA_ROOT_NAME = "the data root"
"""How the data root itself is named in the browser (its relative path "." says nothing)."""


def relative_to_root(path: str | Path) -> str | None:
    """The path relative to the data root ("." for the root itself), or None when it is not inside."""
    path = Path(path)
    try:
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve, Python < 3.13)
            real = path.parent.resolve() / path.name  # the broken entry itself sits in its folder
        return str(real.relative_to(data_root().resolve()))
    except (ValueError, OSError, RuntimeError):
        return None


def shown_path(path: str | Path) -> str:
    """A path as people should read it: relative to the data root when it is inside, the data root
    by that name, and anything outside it by its last part only (the server's folders are not the
    browser's business)."""
    relative = relative_to_root(path)
    if relative is None:
        return Path(path).name or str(path)
    return DATA_ROOT_NAME if relative == "." else relative


# Markdown syntax that can start anywhere in a line: escapes, code, emphasis, strikethrough, links
# and images, autolinks and HTML, headings, tables, Streamlit's directives (:red[...],
# :material/icon:, emoji shortcodes) and LaTeX. Every ASCII punctuation character may be escaped
# with a backslash in CommonMark, and an escaped one is plain text.
_MARKDOWN_SYNTAX = re.compile(r"[\\`*_\[\]<>#!|~$:&{}]")
# List markers count only at the start of a line (a numbered one: digits and "." or ")").
_LEADING_MARKER = re.compile(r"^(\s*)(?:([-+=])|(\d+)([.)]))")
# GitHub's "literal" autolinks (a bare www.x.y, http(s)://x or name@host.tld) and emoji shortcodes
# (:smile:) are found in the text after escapes are undone, so an escape cannot stop them; an
# invisible word joiner inside does.
_AUTOLINK_START = re.compile(r"(?i)(https?(?=://)|www(?=\.)|@(?=[\w-])|:(?=[\w+-]+:))")
WORD_JOINER = "\u2060"


def literal(text: object) -> str:
    """`text` from outside the app (a file or folder name, a zip entry, a run's error, a label's
    content, an exception's message) as Markdown that shows it as it is: no link, image, emphasis,
    code, heading, list, icon, colour or formula can come out of it. Lines are joined with spaces.

    Every element that renders Markdown (st.write, st.markdown, st.caption, alerts, toasts, widget
    and expander labels, image captions, progress texts) gets outside text only through this.
    Selectbox options and table cells are plain text already and take the text as it is.
    """
    text = " ".join(str(text).splitlines())
    text = re.sub(r"^\s+", " ", text)  # four spaces at the start of a line would make a code block
    text = _AUTOLINK_START.sub(lambda match: match.group(1) + WORD_JOINER, text)
    text = _MARKDOWN_SYNTAX.sub(lambda match: "\\" + match.group(0), text)
    text = text.replace("\\:material/", "\\:material\\/")  # Streamlit rewrites ":material/" before parsing
    return _LEADING_MARKER.sub(lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2) else m.group(3) + "\\" + m.group(4)),
                               text)


def how_to_add_data() -> None:
    root = data_root()  # the server's own setting, in code spans: shown as it is
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
    remembered = st.session_state.get(DATASET_NAME)
    if default is not None and remembered is None:
        remembered = relative_to_root(default)
    options = found + [OTHER_FOLDER]
    index = options.index(remembered) if remembered in options else (len(options) - 1 if remembered else 0)
    choice = st.selectbox(label, options, index=index, key=f"{key}_choice",
                          help=f"Folders under the data root {literal(root)}")
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
            st.error(literal(readable(error)))
            return None
        try:
            is_folder = path.is_dir()
        except OSError as error:  # a folder that cannot be opened, a name the file system refuses
            st.error(f"{literal(shown_text(typed.strip()))}: cannot open it ({literal(error.strerror or readable(error))})")
            return None
        if not is_folder:
            st.error(f"{literal(typed)}: no such folder under the data root")
            return None
        st.session_state[DATASET_NAME] = typed.strip()
        return path
    try:
        path = safety.resolve_under(root, choice)
    except safety.UnsafePath as error:
        st.error(literal(readable(error)))
        return None
    st.session_state[DATASET_NAME] = choice
    return path


def select_dataset(name: str, key: str = "dataset") -> None:
    """Make `name` the chosen dataset (call before the picker is drawn in this run)."""
    st.session_state[DATASET_NAME] = name
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
    # With the root, files that link out of it are skipped, and are refused again when read later.
    return data_lib.load_dataset(folder, check_pixels=check_pixels, root=data_root())


def load_dataset(folder: Path, check_pixels: bool = False) -> data_lib.Dataset | None:
    """The dataset, or None after showing why it cannot be read."""
    try:
        return _load_dataset(str(folder), folder_signature(folder), check_pixels)
    except data_lib.DatasetError as error:
        st.warning(literal(readable(error)))
        return None
    except OSError as error:
        st.error(literal(f"{shown_path(folder)}: cannot read it ({error.strerror or readable(error)})"))
        return None


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(image: str, embedded: bool, max_side: int) -> np.ndarray:
    sample = data_lib.Sample(image, None, embedded=embedded, root=str(data_root()))
    return sample_pixels(sample, max_side)


def sample_thumbnail(sample: data_lib.Sample, max_side: int = 320) -> np.ndarray | None:
    try:
        return thumbnail(sample.image, sample.embedded, max_side)
    except (ValueError, OSError):
        return None


# ----------------------------------------------------------------------------------------------
# Models


def what_the_model_knows(run_dir: Path, *, short: bool = False) -> None:
    """What a run's model was trained on and where it is not expected to work, from its
    trained_on.json (nothing for a run without one). `short`: one caption, under a model picker."""
    profile = read_trained_on(run_dir)
    if profile is None:
        return
    doubts = limits(profile)
    if short:
        st.caption(literal(knows(profile) + (" Not expected to work on " + "; ".join(doubts) + "." if doubts else "")))
        return
    st.markdown("**What this model knows.** " + literal(knows(profile)))
    if doubts:
        st.markdown("**Where it is not expected to work:**\n" + "\n".join(f"- {literal(d)}" for d in doubts))


def model_choices() -> dict[str, str]:
    """Label shown -> key (a reference detector's, or a run folder) of every model the Detect page can run."""
    choices = {}
    for summary in workspace.trained_runs(runs_root()):
        iou = f", val IoU {summary.best_val_iou:.2f}" if isinstance(summary.best_val_iou, (int, float)) else ""
        live = ", still training" if summary.live else ""
        choices[f"{summary.name} ({summary.backbone or 'model'}{iou}{live})"] = str(summary.path)
    choices[f"{detect.YUNET_LABEL} (reference detector, every face, no training)"] = detect.YUNET
    choices[f"{detect.HAAR_LABEL} (classical baseline, no training)"] = detect.HAAR
    return choices


is_reference = models.is_reference
model_name = models.model_name
finds_every_face = models.finds_every_face
model_threshold = models.default_threshold


def model_version(model_key: str, use: str = models.LIVE) -> tuple:
    """The cache key of the model behind `model_key` as it is on disk now (see `models.model_version`):
    it changes when a run still training replaces its model. The webcam's detector and the
    uploads' both go by it. Raises FileNotFoundError with a readable message when a run has no model yet."""
    return models.model_version(model_key, use)


@st.cache_resource(show_spinner="Preparing the model for real-time speed (once per model)…", max_entries=8)
def _runtime(version: tuple, _model_key: str, _use: str):
    # One runtime per model version and input shape (the version names both) serves every viewer:
    # it serialises its own calls.
    return models.open_runtime(_model_key, _use)


@st.cache_resource(show_spinner=False)
def _reference(model_key: str, use: str):
    """The shared reference detector, as the use wants it (see `models.open_detector`)."""
    return models.open_detector(model_key, use)


def make_detector(model_key: str, threshold: float = 0.5, version: tuple | None = None, look_closer: bool = False):
    """A new Detector over the cached runtime of `version` (default: the model as it is now), or the
    shared reference detector (YuNet or Haar, which keep their own thresholds). Its boxes are not
    averaged: the tracker of the webcam and of videos steadies them. `look_closer`: for photos (see
    `models.PHOTO`), else as the webcam runs it.

    Raises ValueError / FileNotFoundError / RuntimeError with a readable message.
    """
    use = models.PHOTO if look_closer else models.LIVE
    if is_reference(model_key):
        return _reference(model_key, use)
    version = version or model_version(model_key, use)
    return models.open_detector(model_key, use, threshold, runtime=_runtime(version, model_key, use))


def session_detector(slot: str, model_key: str, threshold: float):
    """This session's detector for `model_key`, kept in `st.session_state[slot]` and replaced when the
    model file is: a run still training gives the webcam its newest model, the same one an upload
    gets. The threshold follows the argument."""
    version = model_version(model_key)
    held = st.session_state.get(slot)
    if held is None or held[0] != version:
        held = (version, make_detector(model_key, threshold, version))
        st.session_state[slot] = held
    detector = held[1]
    if isinstance(detector, detect.Detector):  # the shared reference detectors have no settings
        detector.threshold = threshold
    return detector


def newest_model_key() -> str:
    """The newest trained run that did not fail, or YuNet, the reference detector, when there is none."""
    usable = [run for run in workspace.trained_runs(runs_root()) if run.state not in workspace.UNRELIABLE_STATES]
    return str(usable[0].path) if usable else detect.YUNET


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


def skipped_files(skipped: list) -> None:
    """The files left out (anything with `.path` and `.reason`), one row each, under an expander
    that starts open when there are few."""
    if not skipped:
        return
    with st.expander(f"{len(skipped)} skipped files, and why", expanded=len(skipped) <= 5):
        st.dataframe(pd.DataFrame([{"file": shown_path(s.path), "reason": s.reason} for s in skipped]),
                     hide_index=True, width="stretch")


def image_grid(images: list[np.ndarray], captions: list[str], columns: int = 4,
               below: Callable[[int], None] | None = None) -> None:
    """Images in rows of `columns`, each with its caption shown as text (captions name files), and
    under each what `below(its index)` draws (buttons for that image, say)."""
    for start in range(0, len(images), columns):
        cells = st.columns(columns)
        for index, (cell, image, caption) in enumerate(zip(cells, images[start:start + columns],
                                                           captions[start:start + columns]), start):
            with cell:
                st.image(image, caption=literal(caption), width="stretch")
                if below is not None:
                    below(index)


def readable(error: BaseException) -> str:
    """One line for a person: the message, or the error's name when it has none, with server paths
    shown as `shown_text` shows them."""
    text = str(error).strip().splitlines()
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {shown_path(error.filename)}" if error.filename else error.strerror
    return shown_text(text[0]) if text else type(error).__name__


# An absolute path in a message: a "/" not after a word, a dot, a colon or another "/" (so URLs and
# relative paths stay), then folders, then the last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/:;,'\"()\[\]`]+/)*([^\s/:;,'\"()\[\]`]+)")


def shown_text(text: str) -> str:
    """A message for the browser without the server's layout: paths under the data root relative to
    it (as `shown_path`), the data root itself by name, any other absolute path (temporary folders,
    the app's own files) by its last part only."""
    roots = {str(data_root()), str(data_root().resolve())}
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", "").replace(root, DATA_ROOT_NAME)
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1), text)


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
        st.error(f"{UNEXPECTED}: {literal(readable(error))}. The details are in the server's log; the other pages "
                 "still work.")
