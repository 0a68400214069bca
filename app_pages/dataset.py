"""Dataset: what a folder holds, what was skipped and why, its images with their boxes, and recording photos
from the webcam."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import av
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app_pages import ui
from facetracker.data import datasets as data_lib
from facetracker.data import formats
from facetracker.data.images import sample_pixels
from facetracker.inference.detect import YUNET
from facetracker.inference.webrtc import rtc_configuration
from facetracker.io import safety
from facetracker.labelling import capture, edits
from facetracker.labelling.convention import BoxConvention
from facetracker.labelling.prelabel import learn_convention, prelabel_boxes
from facetracker.labelling.recording import (
    MAX_FACE_S,
    MAX_NO_FACE_S,
    MAX_PHOTOS_PER_S,
    PHASE_WORDS,
    CannotRecord,
    Phase,
    Prelabel,
    Recorder,
    RecorderStatus,
    RecordingPlan,
    describe_missing,
)
from facetracker.runs import workspace

PAGE_SIZE = 12
ZIP_MAX_BYTES = 4 * 1024**3
ZIP_MAX_ENTRIES = 50_000  # files and folders


# ----------------------------------------------------------------------------------------------
# Adding a dataset


MAX_FOLDER_NAME = 80


def safe_folder_name(name: str) -> str | None:
    name = name.strip()
    pattern = r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (MAX_FOLDER_NAME - 1)
    return name if re.fullmatch(pattern, name) and name != workspace.RUNS_FOLDER else None


def folder_name_problem(name: str) -> str:
    """Why `safe_folder_name` refused the name, in words."""
    name = name.strip()
    if len(name) > MAX_FOLDER_NAME:
        return (f"That name is {len(name):,} characters long; a dataset folder's name can have at most "
                f"{MAX_FOLDER_NAME}.")
    return "Name the folder with letters, digits, '.', '_' or '-' (not 'runs')."


def create_empty_dataset(name: str) -> Path:
    target = ui.data_root() / name
    if target.exists():
        raise FileExistsError(f"{name} already exists under the data root")
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    return target


def import_zip(uploaded, name: str) -> Path:
    """Unpack a zipped dataset into `<data root>/<name>`; the zip may hold the folder itself or its content."""
    root = ui.data_root()
    target = root / name
    if target.exists():
        raise FileExistsError(f"{name} already exists under the data root; pick another name")
    head = uploaded.getvalue()[:64]
    if safety.sniff_kind(head) != "zip":
        raise ValueError(f"{uploaded.name}: not a zip archive (by its content)")
    # The temporary folder is the server's: an error names the upload and the dataset, never it.
    try:
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    except OSError as error:
        raise ValueError(f"{uploaded.name}: cannot unpack into the data root ({error.strerror or error})") from None
    try:
        safety.extract_zip(uploaded, staging, ZIP_MAX_BYTES, ZIP_MAX_ENTRIES)
        content = staging
        children = [p for p in staging.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if not workspace.looks_like_dataset(staging) and len(children) == 1 and children[0].is_dir():
            content = children[0]
        if not workspace.looks_like_dataset(content):
            raise ValueError(f"{uploaded.name}: no images/, labels/ or train/ val/ test/ folders inside")
        try:
            content.rename(target)
        except OSError as error:
            raise ValueError(f"{uploaded.name}: cannot make the dataset {name} ({error.strerror or error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def add_dataset_section() -> None:
    with st.expander("Add a dataset: upload a zip, or start an empty one for webcam photos",
                     expanded=not workspace.list_datasets(ui.data_root())):
        ui.how_to_add_data()
        name = st.text_input("Name of the new dataset folder", key="new_dataset_name", placeholder="my-faces")
        uploaded = st.file_uploader("Zipped dataset folder", type=["zip"], key="dataset_zip")
        c1, c2 = st.columns(2)
        if c1.button("Unpack the zip as this dataset", disabled=uploaded is None):
            folder = safe_folder_name(name or Path(uploaded.name).stem)
            if folder is None:
                st.error(folder_name_problem(name or Path(uploaded.name).stem))
            else:
                try:
                    with st.spinner("Unpacking…"):
                        target = import_zip(uploaded, folder)
                    ui.select_dataset(target.name)
                    st.rerun()
                except (ValueError, OSError, safety.UnsafeArchive) as error:
                    st.error(ui.literal(ui.readable(error)))
        if c2.button("Create an empty dataset"):
            folder = safe_folder_name(name)
            if folder is None:
                st.error(folder_name_problem(name))
            else:
                try:
                    create_empty_dataset(folder)
                    ui.select_dataset(folder)
                    st.rerun()
                except OSError as error:
                    st.error(ui.literal(ui.readable(error)))


# ----------------------------------------------------------------------------------------------
# Looking at a dataset


def counts(dataset: data_lib.Dataset) -> None:
    summary = dataset.summary()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Images", summary["images"])
    c2.metric("With a face", summary["faces"])
    c3.metric("No face", summary["no_face"])
    c4.metric("Skipped files", summary["skipped"])
    splits = [{"split": s, "with a face": summary[s]["faces"], "no face": summary[s]["no_face"]}
              for s in data_lib.SPLITS if s in summary]
    st.caption(f"Label format: {ui.literal(summary['layout'])}. Faces labelled: {summary['labelled_faces']}"
               + (f" ({summary['several_faces']} images with several). " if summary["several_faces"] else ". ")
               + ("Split into folders: " if dataset.has_splits else
                  "No split folders: training splits the images by a seeded hash of their names."))
    if splits:
        st.dataframe(pd.DataFrame(splits), hide_index=True)
    ui.skipped_files(dataset.skipped)
    if dataset.notes:
        with st.expander(f"{len(dataset.notes)} notes"):
            st.write("\n".join(f"- {ui.literal(ui.shown_text(note))}" for note in dataset.notes))


def image_browser(folder: Path, dataset: data_lib.Dataset) -> None:
    change_notice(folder, "grid")
    status = session_recorder().status()
    if status.running and status.folder is not None and same_folder(status.folder, folder):
        st.caption("A recording is adding photos to this dataset: they appear here when it ends.")
    editable = dataset.layout != "coco"
    if not editable:
        st.caption("The photos of a COCO dataset share one label file: change their boxes with your labelling "
                   "tool (the page rewrites only a photo's own label file).")
    c1, c2 = st.columns(2)
    show = c1.radio("Show", ["all", "with a face", "no face"], horizontal=True, key="grid_filter")
    splits = ["all"] + [s for s in data_lib.SPLITS if dataset.split(s)]
    split = c2.radio("Split", splits, horizontal=True, key="grid_split") if len(splits) > 2 else "all"
    samples = [s for s in dataset.samples
               if (show == "all" or (show == "with a face") == s.has_face) and (split == "all" or s.split == split)]
    if not samples:
        st.info("No image matches.")
        return
    pages = math.ceil(len(samples) / PAGE_SIZE)
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="grid_page")
    chosen = samples[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    images, captions, shown = [], [], []
    for sample in chosen:
        pixels = ui.sample_thumbnail(sample)
        if pixels is None:
            continue
        for box in sample.faces:
            pixels = ui.draw_box(pixels, box, label="face")
        images.append(pixels)
        shown.append(sample)
        faces = len(sample.faces)
        captions.append(f"{sample.name}{' · ' + sample.split if sample.split else ''}"
                        f"{' · no face' if not faces else f' · {faces} faces' if faces > 1 else ''}")
    ui.image_grid(images, captions, below=(lambda i: photo_buttons(folder, shown[i])) if editable else None)
    editing = st.session_state.get(State.EDITING)
    sample = find_sample(dataset, editing["image"]) if editing and editing["from"] == "grid" else None
    if sample is not None:
        st.markdown(f"**Editing {ui.literal(Path(sample.image).name)}**"
                    + (f" (the largest of its {len(sample.faces)} faces; the others are kept)"
                       if len(sample.faces) > 1 else ""))
        photo_editor(folder, sample, "grid editor")
    else:
        change_notice(folder, "grid editor")  # after the photo was deleted from the editor: say so, offer Undo


def photo_buttons(folder: Path, sample: data_lib.Sample) -> None:
    """Under a photo of the grid: delete it, mark it as holding no face, open the box editor on it."""
    c1, c2, c3 = st.columns(3, gap="small")
    delete = c1.button("Delete", key=f"grid_delete_{sample.image}", help="Moves the photo and its label into "
                       f"the dataset's {edits.TRASH} folder, from where it can be restored.")
    no_face = c2.button("No face", key=f"grid_no_face_{sample.image}", disabled=not sample.has_face,
                        help="Moves its label aside (into the dataset's "
                             f"{edits.TRASH} folder): a photo without a label is a no-face photo.")
    edit = c3.button("Edit box", key=f"grid_edit_{sample.image}", help="Opens the box editor under the grid.")
    if edit:
        ui.remember(State.EDITING, {"image": sample.image, "from": "grid"})
        st.rerun()
    if delete or no_face:
        change(folder, sample, "delete" if delete else "no face", "grid")


def find_sample(dataset: data_lib.Dataset | None, image: str | Path) -> data_lib.Sample | None:
    """The dataset's sample of this photo (paths compared with their links followed), if it is one."""
    if dataset is None:
        return None
    wanted = os.path.realpath(image)
    return next((s for s in dataset.samples if os.path.realpath(s.image) == wanted), None)


def same_folder(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def change(folder: Path, sample: data_lib.Sample, action: str, where: str, box=None) -> None:
    """Make one change to a photo (each sets aside what it replaces), keep what to say about it for the
    notice at `where`, and run the page again so that counts and grid show it."""
    name = ui.literal(Path(sample.image).name)
    try:
        if action == "delete":
            aside = edits.delete_photo(folder, sample, root=ui.data_root())
            said = f"{name} deleted."
        elif action == "no face":
            aside = edits.mark_no_face(folder, sample, root=ui.data_root())
            said = f"{name} is now a no-face photo (its label was set aside)."
        else:
            aside = edits.set_face_box(folder, sample, box, root=ui.data_root())
            said = f"Box saved for {name}."
    except (ValueError, OSError) as error:
        ui.remember(State.CHANGE, {"folder": str(folder), "where": where, "warning": ui.literal(ui.readable(error))})
    else:
        if action == "delete":
            st.session_state.pop(State.EDITING, None)
        kept = (f"What it replaced is kept in {ui.literal(ui.shown_path(aside.entry))}." if aside.kept
                else "Undo sets the new label aside again.")
        ui.remember(State.CHANGE, {"folder": str(folder), "where": where, "entry": aside.name,
                                   "success": f"{said} {kept}"})
    st.rerun()


def change_notice(folder: Path, where: str) -> None:
    """What the last change to a photo did (with Undo), or why it could not be made, shown where it was asked."""
    notice = st.session_state.get(State.CHANGE)
    if not notice or notice["where"] != where or not same_folder(notice["folder"], folder):
        return
    if "warning" in notice:
        st.warning(notice["warning"])
        return
    c1, c2 = st.columns([5, 1])
    c1.success(notice["success"])
    if notice.get("entry") and c2.button("Undo", key=f"undo_{where}"):
        restore(folder, notice["entry"], where)


def restore(folder: Path, entry: str, where: str) -> None:
    try:
        done = edits.restore(folder, entry, root=ui.data_root())
    except (ValueError, OSError) as error:
        ui.remember(State.CHANGE, {"folder": str(folder), "where": where, "warning": ui.literal(ui.readable(error))})
    else:
        for key in [key for key in st.session_state if str(key).startswith("fix_")]:
            del st.session_state[key]  # the box editor starts again from the labels as they are now
        said = [f"Put back {ui.literal(', '.join(done.restored))}."] if done.restored else []
        if done.replaced:
            said.append(f"What stood there ({ui.literal(', '.join(done.replaced.kept))}) is kept in "
                        f"{ui.literal(ui.shown_path(done.replaced.entry))}.")
        ui.remember(State.CHANGE, {"folder": str(folder), "where": where, "success": " ".join(said)})
    st.rerun()


def set_aside_section(folder: Path) -> None:
    """What deleting, marking "no face" and editing boxes set aside in this dataset, each to restore."""
    entries = edits.set_aside_entries(folder)
    if not entries:
        return
    change_notice(folder, "set aside")
    shown = entries[:PAGE_SIZE]
    with st.expander(f"Deleted and replaced files ({len(entries)}), kept in {edits.TRASH}"):
        trash = ui.literal(ui.shown_path(folder / edits.TRASH))
        st.caption(f"Nothing is lost: each change keeps what it replaced in {trash}. Restore puts it back (what "
                   "stands there now is kept in turn). Training and exports leave that folder out; delete it "
                   "yourself to free the space.")
        for entry in shown:
            c1, c2 = st.columns([5, 1])
            c1.write(ui.literal(entry.describe()))
            if c2.button("Restore", key=f"restore_{entry.name}"):
                restore(folder, entry.name, "set aside")
        if len(entries) > len(shown):
            st.caption(f"and {len(entries) - len(shown)} older ones, in {trash}")


# ----------------------------------------------------------------------------------------------
# Recording from the webcam


class State:
    """The keys this page keeps in `st.session_state` for the webcam and the box editor, in one place."""

    RECORDER = "dataset_recorder"
    """The session's Recorder, which the frame worker thread holds too."""
    WEBCAM = "dataset_webcam"
    """The webcam component (streamlit-webrtc keeps its connection under it)."""
    SHOWN_RECORDING = "dataset_recording_shown"
    """The number of the last recording whose end the page has taken in (counts and grid refreshed)."""
    SHOWN_SINGLE = "dataset_single_shown"
    """The image of the last single photo the page has taken in (offered for correction)."""
    EDITING = "dataset_editing"
    """The photo the box editor is open on: {"image": its path, "from": "grid" or "capture"}."""
    CHANGE = "dataset_change"
    """What the last change to a photo did or why it could not: {"folder", "where", "success" and
    "entry" (to undo), or "warning"}."""
    CAPTURE_SOURCE = "last_capture_source"
    """How the single photo's box was found (the pre-labeller's name)."""


# (Comments, not strings, at the top level of a page: Streamlit writes a bare string there onto the page.)
# A few photos a second need no more frames than this, and fewer frames leave the browser's encoder
# room, so it keeps sending the camera's full size on a busy machine; see
# docs/notes/2026-11-30-webcam-journey.md.
CAMERA = {"video": {"frameRate": {"ideal": 15, "max": 15}}, "audio": False}
# While recording, the panel (a fragment) reads the recorder this often: the countdown in whole seconds.
POLL_S = 0.5
PHASE_HELP = {
    Phase.COUNTDOWN: "Get ready: look at the camera. Recording starts in {s} s.",
    Phase.FACE: "Recording your face: {s} s left. Turn your head a little, come closer and lean back: "
                "varied photos teach the model more than many alike.",
    Phase.STEP_OUT: "Step out of view now: photos without a face start in {s} s.",
    Phase.NO_FACE: "Recording without a face: {s} s left. Stay out of view.",
}


@st.cache_data(max_entries=8, show_spinner="Learning how this dataset draws its boxes…")
def _convention(folder: str, signature: tuple) -> BoxConvention:
    dataset = ui.load_dataset(Path(folder))
    if dataset is None:
        return BoxConvention()
    return learn_convention(dataset.samples, ui.make_detector(YUNET).detect)


def prelabeller(folder: Path) -> tuple[Prelabel, str]:
    """Boxes for every face YuNet sees, placed as this dataset's labels place theirs, and how to name
    that source in a label. YuNet, not the newest trained model: a model just trained on a few photos
    can be far worse, and its mistakes would become labels. Made in the script run: the frame
    worker that calls it must not touch st.*."""
    convention = _convention(str(folder), ui.folder_signature(folder))
    prelabel = functools.partial(prelabel_boxes, detect=ui.make_detector(YUNET).detect, convention=convention)
    source = ui.model_name(YUNET) + (f", boxes as this dataset draws them (learnt from {convention.pairs} faces)"
                                     if convention.pairs else "")
    return prelabel, source


def session_recorder() -> Recorder:
    if State.RECORDER not in st.session_state:
        st.session_state[State.RECORDER] = Recorder(root=ui.data_root())
    return st.session_state[State.RECORDER]


def frame_callback(recorder: Recorder):
    """The webcam callback: runs in a worker thread, so it touches no st.* and only the recorder. The
    recorder gets the frame as the camera sent it (its own size); the video goes back with the
    countdown written on it."""

    def callback(frame: av.VideoFrame) -> av.VideoFrame:
        try:
            image = frame.to_ndarray(format="bgr24")
            recorder.feed(image)  # saves what it keeps before returning: drawing on it afterwards is safe
            out = av.VideoFrame.from_ndarray(recorder.overlay(image), format="bgr24")
            out.pts, out.time_base = frame.pts, frame.time_base
            return out
        except Exception:  # a frame that cannot even be converted goes back as it came
            ui.log.warning("a webcam frame could not be converted", exc_info=True)
            return frame

    return callback


def recording_plan() -> RecordingPlan | None:
    c1, c2, c3 = st.columns(3)
    face_s = c1.number_input("Seconds with your face", 1, int(MAX_FACE_S), 20, key="record_face_s")
    rate = c2.number_input("Photos per second", 0.5, MAX_PHOTOS_PER_S, 2.0, step=0.5, key="record_rate")
    no_face_s = c3.number_input("Seconds out of view (no-face photos)", 0, int(MAX_NO_FACE_S), 5,
                                key="record_no_face_s")
    try:
        return RecordingPlan(face_s=float(face_s), photos_per_s=float(rate), no_face_s=float(no_face_s))
    except ValueError as error:
        st.error(ui.literal(ui.readable(error)))
        return None


def recording_summary(status: RecorderStatus) -> None:
    if status.phase in PHASE_HELP:
        st.info(PHASE_HELP[status.phase].format(s=math.ceil(status.seconds_left)))
    elif status.single_pending:
        st.info("Taking a photo: waiting for a frame that is not black…")
    if status.answer:
        st.warning(ui.literal(ui.shown_text(status.answer)))
    if status.recording:
        st.caption(f"planned: {status.planned} · saved: {status.saved} · with your face: {status.face_photos} "
                   f"({status.labelled} pre-labelled) · without: {status.no_face_photos} · dropped: {status.dropped} "
                   f"(black: {status.dropped_black}, frozen: {status.dropped_frozen}) · missed: {status.missed}")
    if len(status.sizes) > 1:
        sizes = " and ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(status.sizes.items(), reverse=True))
        st.warning(f"The browser sent a smaller video for part of the recording (it does when the computer or the "
                   f"network is busy): photos at {sizes}. Boxes are kept relative to each photo's size.")
    if status.busy and status.seconds_since_frame is not None and status.seconds_since_frame > 2:
        st.warning(f"No frame from the camera for {status.seconds_since_frame:.0f} s: is the video still playing?")
    if status.phase is Phase.DONE and status.recording:
        if status.stopped_early:
            st.warning(f"The recording ended early: {ui.literal(ui.shown_text(status.stopped_early))}. What it "
                       "saved is kept.")
        else:
            st.success(f"Recording finished: {status.saved} of {status.planned} planned photos saved.")
    if status.missing:
        lines = describe_missing(status.missing)
        more = f"\n- and {len(lines) - MISSING_LINES} more" if len(lines) > MISSING_LINES else ""
        st.warning(f"{len(status.missing)} of the {status.planned} planned photos "
                   f"{'were' if len(status.missing) > 1 else 'was'} not taken"
                   f"{'' if status.phase is Phase.DONE else ' so far'}:\n"
                   + "\n".join(f"- {ui.literal(ui.shown_text(line))}" for line in lines[:MISSING_LINES]) + more)
    if status.unboxed:
        st.warning(f"{ui.model_name(YUNET)} found no face in {len(status.unboxed)} of the photos with your face "
                   f"({named(status.unboxed)}): their labels hold no box, so they count as no-face photos. Find them "
                   "under \"no face\" in the photo grid above and press **Edit box** to draw the box, or **Delete**.")
    if status.faces_seen:
        st.warning(f"A face was seen in {len(status.faces_seen)} of the out-of-view photos ({named(status.faces_seen)})"
                   ". They are saved as no-face photos: find them under \"no face\" in the photo grid above and press "
                   "**Delete** on any that shows a face.")
    if status.single_note:
        st.warning(ui.literal(ui.shown_text(status.single_note)))
    if status.errors:
        st.error(f"{status.errors} photo(s) could not be saved or pre-labelled. Last error: "
                 f"{ui.literal(ui.shown_text(str(status.last_error)))}")


MISSING_LINES = 12


def named(names: tuple[str, ...], most: int = 4) -> str:
    shown = ", ".join(ui.literal(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def plan_words(plan: RecordingPlan) -> str:
    return (f"{plan.face_s:g} s with your face, {plan.photos_per_s:g} photos per second, "
            f"{plan.no_face_s:g} s out of view")


def while_recording(folder: Path, plan: RecordingPlan | None, status: RecorderStatus) -> None:
    """What a click elsewhere on the page changed that the running recording does not follow: another
    dataset chosen, other settings typed."""
    if not status.running:
        return
    left = math.ceil(status.ends_in_s)
    if status.folder is not None and not same_folder(status.folder, folder):
        st.warning(f"A recording into **{ui.literal(ui.shown_path(status.folder))}** is running "
                   f"({PHASE_WORDS.get(status.phase, status.phase.value)} now; it ends in {left} s): its photos go "
                   f"there, not into {ui.literal(folder.name)}. Record here once it ends, or after **Stop recording**.")
    if plan is not None and status.plan is not None and plan != status.plan:
        st.info(f"The recording running keeps its plan ({plan_words(status.plan)}); the settings above apply to the "
                "next one.")


def recording_panel(folder: Path, recorder: Recorder, plan: RecordingPlan | None) -> None:
    """The buttons and what the recorder is doing; refreshed every POLL_S while it is busy. A click the
    recorder refuses is answered by its status, which keeps the answer while the panel redraws."""

    @st.fragment(run_every=POLL_S if recorder.status().busy else None)
    def panel() -> None:
        c1, c2, c3 = st.columns(3)
        record = c1.button("Record", type="primary",
                           help="A countdown, then photos with your face, then a countdown to step out of "
                                "view, then photos without a face.")
        one = c2.button("Take one photo", help="Saves the next frame that is not black, pre-labelled.")
        stop = c3.button("Stop recording")
        try:
            if record and plan is None:
                st.warning("Set the recording above within its limits first (see the message there).")
            elif record:
                recorder.refuse_while_running("start")  # at once: learning the convention takes a while
                recorder.start(folder, plan, *prelabeller(folder))
            elif one:
                recorder.refuse_while_running("take one")
                prelabel, source = prelabeller(folder)
                recorder.take_one(folder, prelabel, source)
                ui.remember(State.CAPTURE_SOURCE, source)
            elif stop:
                recorder.stop()
        except CannotRecord:
            pass  # the status says why below, and keeps saying it while the panel redraws
        except (ValueError, OSError, RuntimeError) as error:
            st.error(f"Cannot record: {ui.literal(ui.readable(error))}")
        else:
            if (record and plan is not None) or one:
                st.rerun()  # the whole page, so that this panel refreshes itself while the recorder works
        status = recorder.status()
        while_recording(folder, plan, status)
        recording_summary(status)
        if status.phase is Phase.DONE and status.recording != st.session_state.get(State.SHOWN_RECORDING):
            ui.remember(State.SHOWN_RECORDING, status.recording)
            st.rerun()  # the counts and the grid above include the new photos; the refreshing stops
        if status.single is not None and status.single.image != st.session_state.get(State.SHOWN_SINGLE):
            ui.remember(State.SHOWN_SINGLE, status.single.image)
            ui.remember(State.EDITING, {"image": str(status.single.image), "from": "capture"})
            st.rerun()  # offers the photo for correction below

    panel()


def photo_editor(folder: Path, sample: data_lib.Sample, where: str) -> None:
    """The box editor on one photo of the dataset: drag a rectangle or move the edge sliders, then save
    the box, mark the photo as holding no face, or delete it (each can be undone)."""
    change_notice(folder, where)
    try:  # read under the data root like every other photo the page shows
        rgb = sample_pixels(sample)
    except (ValueError, OSError) as error:
        st.warning(ui.literal(f"{ui.shown_path(sample.image)} cannot be shown: {ui.readable(error)}"))
        return
    h, w = rgb.shape[:2]
    stem = Path(sample.image).stem
    x_key, y_key, drag_key = (f"fix_{part}_{stem}" for part in ("x", "y", "drag"))
    if sample.box is not None:
        x0, y0, x1, y1 = (round(v * side) for v, side in zip(sample.box, (w, h, w, h)))
    else:
        x0, y0, x1, y1 = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    st.session_state.setdefault(x_key, (x0, x1))
    st.session_state.setdefault(y_key, (y0, y1))
    dragged = ui.dragged_box(st.session_state.get(drag_key), w, h)
    if dragged and dragged != st.session_state.get(f"{drag_key}_applied"):  # a new rectangle: the sliders follow
        st.session_state[x_key], st.session_state[y_key] = (dragged[0], dragged[2]), (dragged[1], dragged[3])
        st.session_state[f"{drag_key}_applied"] = dragged
    c1, c2 = st.columns([3, 2])
    with c2:
        xs = st.slider("Left and right edge (px)", 0, w, key=x_key)
        ys = st.slider("Top and bottom edge (px)", 0, h, key=y_key)
        box = (xs[0], ys[0], xs[1], ys[1])
        save_box = st.button("Save this box", key=f"fix_save_{stem}")
        no_face = st.button("No face in this photo", key=f"fix_no_face_{stem}")
        delete = st.button("Delete the photo", key=f"fix_delete_{stem}")
        close = st.button("Close the editor", key=f"fix_close_{stem}")
    with c1:
        ui.box_editor(rgb, box, key=drag_key)
        st.caption("Drag a rectangle over the face to set the box; the sliders fine-tune it.")
    if close:
        st.session_state.pop(State.EDITING, None)
        st.rerun()
    for pressed, action in ((save_box, "box"), (no_face, "no face"), (delete, "delete")):
        if pressed:
            change(folder, sample, action, where, box=box)


def record_section(folder: Path, dataset: data_lib.Dataset | None) -> None:
    st.subheader("Record photos with the webcam")
    target = capture.capture_folder(folder)
    st.caption(f"Photos go to {ui.literal(ui.shown_path(target / 'images'))} at the camera's own size. Photos with "
               f"your face get a labelme label in {ui.literal(ui.shown_path(target / 'labels'))}, pre-labelled by "
               f"{ui.model_name(YUNET)}, which ships with the app, its boxes placed as this dataset's labels place "
               "theirs; photos out of view get no label, which makes them no-face photos. Black frames and frames "
               "that repeat the previous photo are dropped and counted, and so is every planned photo that could "
               "not be taken, with the reason.")
    plan = recording_plan()
    recorder = session_recorder()
    rtc, warning = rtc_configuration()
    if warning:
        st.warning(warning)
    webrtc_streamer(key=State.WEBCAM, mode=WebRtcMode.SENDRECV, rtc_configuration=rtc,
                    media_stream_constraints=CAMERA, video_frame_callback=frame_callback(recorder),
                    on_video_ended=recorder.stream_ended, async_processing=True)
    st.caption("The camera stays off until you press START and allow it. Then press Record.")
    recording_panel(folder, recorder, plan)
    editing = st.session_state.get(State.EDITING)
    if editing and editing["from"] == "capture":
        sample = find_sample(dataset, editing["image"])
        if sample is not None:
            source = st.session_state.get(State.CAPTURE_SOURCE, "the detector")
            found = f"a face pre-labelled by {source}" if sample.has_face else "no face: a no-face photo"
            st.markdown(f"Saved **{ui.literal(Path(sample.image).name)}** ({ui.literal(found)}). Correct the box "
                        "if it is wrong:")
            photo_editor(folder, sample, "capture")
            return
    change_notice(folder, "capture")  # after the photo was deleted from the editor: say so, offer Undo


EXPORT_NAMES = {"coco": "COCO (instances.json)", "yolo": "YOLO (Ultralytics)", "voc": "Pascal VOC"}


def export_section(folder: Path) -> None:
    """The dataset in another tool's format, every face and the split folders kept, as a zip to download."""
    with st.expander("Export as COCO, YOLO or Pascal VOC"):
        fmt = st.radio("Format", formats.FORMATS, format_func=EXPORT_NAMES.get, horizontal=True, key="export_format")
        status = session_recorder().status()
        if status.running and status.folder is not None and same_folder(status.folder, folder):
            st.caption("A recording is adding photos to this dataset: a zip made now holds those saved so far.")
        key = (str(folder), fmt, ui.folder_signature(folder))
        held = st.session_state.get("export_zip")
        if (held is None or held[0] != key) and st.button("Make the zip"):
            with st.spinner("Exporting…"), tempfile.TemporaryDirectory() as work:
                zip_path = Path(work) / zip_path_name(folder, fmt)
                try:
                    result = formats.export_zip(folder, fmt, zip_path, root=ui.data_root())
                except (ValueError, OSError) as error:
                    st.error(ui.readable(error))
                    return
                held = (key, zip_path.read_bytes(), result)
                st.session_state["export_zip"] = held
        if held is not None and held[0] == key:
            result = held[2]
            st.caption(f"{result.images} photos ({result.no_face} without a face), {result.faces} faces.")
            ui.skipped_files(result.skipped)
            st.download_button(f"Download {zip_path_name(folder, fmt)}", held[1], file_name=zip_path_name(folder, fmt),
                               mime="application/zip", on_click="ignore")


def zip_path_name(folder: Path, fmt: str) -> str:
    return f"{folder.name}-{fmt}.zip"


def holds_no_file(folder: Path) -> bool:
    """Whether the folder holds no file at any depth outside what was set aside (stops at the first one found)."""
    return next((p for p in folder.rglob("*") if p.is_file() and edits.TRASH not in p.relative_to(folder).parts),
                None) is None


def main() -> None:
    st.title("Dataset")
    add_dataset_section()
    folder = ui.choose_dataset()
    if folder is None:
        return
    with contextlib.suppress(OSError):  # best effort: a dataset that cannot be written holds nothing of ours
        capture.finish_interrupted_writes(folder, root=ui.data_root())
    if holds_no_file(folder):  # just created to record into: nothing is wrong with it yet
        st.info(f"**{ui.literal(folder.name)}** is empty: record photos with the webcam below.")
        dataset = None
    else:
        dataset = ui.load_dataset(folder, check_pixels=True)
    if dataset is not None:
        described = dataset.describe()  # "<folder>: what was found"
        said = described[len(str(dataset.root)):] if described.startswith(str(dataset.root)) else ": " + described
        st.write(f"**{ui.literal(folder.name)}**{ui.literal(ui.shown_text(said))}")
        counts(dataset)
        export_section(folder)
        st.subheader("Images")
        image_browser(folder, dataset)
    set_aside_section(folder)
    record_section(folder, dataset)


with ui.page_guard():
    main()
