"""Dataset: what a folder holds, what was skipped and why, its images with their boxes, and webcam capture."""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from facetracker import capture, safety, workspace
from facetracker import data as data_lib
from facetracker.convention import BoxConvention
from facetracker.detect import YUNET
from facetracker.prelabel import learn_convention, prelabel_boxes
from app_pages import ui

PAGE_SIZE = 12
ZIP_MAX_BYTES = 4 * 1024**3
ZIP_MAX_ENTRIES = 50_000  # files and folders


# ----------------------------------------------------------------------------------------------
# Adding a dataset


def safe_folder_name(name: str) -> str | None:
    name = name.strip()
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name) and name != workspace.RUNS_FOLDER else None


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
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=root))
    try:
        safety.extract_zip(uploaded, staging, ZIP_MAX_BYTES, ZIP_MAX_ENTRIES)
        content = staging
        children = [p for p in staging.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if not workspace.looks_like_dataset(staging) and len(children) == 1 and children[0].is_dir():
            content = children[0]
        if not workspace.looks_like_dataset(content):
            raise ValueError(f"{uploaded.name}: no images/, labels/ or train/ val/ test/ folders inside")
        content.rename(target)
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
                st.error("Name the folder with letters, digits, '.', '_' or '-' (not 'runs').")
            else:
                try:
                    with st.spinner("Unpacking…"):
                        target = import_zip(uploaded, folder)
                    ui.select_dataset(target.name)
                    st.rerun()
                except (ValueError, OSError, safety.UnsafeArchive) as error:
                    st.error(ui.readable(error))
        if c2.button("Create an empty dataset"):
            folder = safe_folder_name(name)
            if folder is None:
                st.error("Name the folder with letters, digits, '.', '_' or '-' (not 'runs').")
            else:
                try:
                    create_empty_dataset(folder)
                    ui.select_dataset(folder)
                    st.rerun()
                except OSError as error:
                    st.error(ui.readable(error))


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
    st.caption(f"Label format: {summary['layout']}. Faces labelled: {summary['labelled_faces']}"
               + (f" ({summary['several_faces']} images with several). " if summary["several_faces"] else ". ")
               + ("Split into folders: " if dataset.has_splits else
                  "No split folders: training splits the images by a seeded hash of their names."))
    if splits:
        st.dataframe(pd.DataFrame(splits), hide_index=True)
    ui.skipped_files(dataset.skipped)
    if dataset.notes:
        with st.expander(f"{len(dataset.notes)} notes"):
            st.write("\n".join(f"- {note}" for note in dataset.notes))


def image_browser(dataset: data_lib.Dataset) -> None:
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
    images, captions = [], []
    for sample in chosen:
        pixels = ui.sample_thumbnail(sample)
        if pixels is None:
            continue
        for box in sample.faces:
            pixels = ui.draw_box(pixels, box, label="face")
        images.append(pixels)
        faces = len(sample.faces)
        captions.append(f"{sample.name}{' · ' + sample.split if sample.split else ''}"
                        f"{' · no face' if not faces else f' · {faces} faces' if faces > 1 else ''}")
    ui.image_grid(images, captions)


# ----------------------------------------------------------------------------------------------
# Webcam capture


@st.cache_data(max_entries=8, show_spinner="Learning how this dataset draws its boxes…")
def _convention(folder: str, signature: tuple) -> BoxConvention:
    dataset = ui.load_dataset(Path(folder))
    if dataset is None:
        return BoxConvention()
    return learn_convention(dataset.samples, ui.make_detector(YUNET).detect)


def prelabel(folder: Path, frame_bgr: np.ndarray) -> tuple[tuple | None, str]:
    """The most confident face YuNet sees, placed as this dataset's labels place their boxes, and
    which detector said so. YuNet, not the newest trained model: a model just trained on a few photos
    can be far worse, and its mistakes would become labels."""
    convention = _convention(str(folder), ui.folder_signature(folder))
    boxes = prelabel_boxes(frame_bgr, ui.make_detector(YUNET).detect, convention)
    source = ui.model_name(YUNET) + (f", boxes as this dataset draws them (learnt from {convention.pairs} faces)"
                                     if convention.pairs else "")
    return (boxes[0] if boxes else None), source


def save_new_photo(folder: Path, photo) -> None:
    frame = cv2.imdecode(np.frombuffer(photo.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        st.error("The camera sent an image that cannot be decoded; take another photo.")
        return
    with st.spinner("Pre-labelling…"):
        box, source = prelabel(folder, frame)
    saved = capture.save_capture(folder, frame, box, source=source, root=ui.data_root())
    ui.remember("last_capture", saved)
    ui.remember("last_capture_source", source)


def correct_capture(saved: capture.Capture) -> None:
    source = st.session_state.get("last_capture_source", "the detector")
    found = f"a face pre-labelled by {source}" if saved.box else "no face: saved as a no-face sample"
    st.markdown(f"Saved **{saved.image.name}** ({found}). Correct the box if it is wrong:")
    try:  # read under the data root like every other photo the page shows
        rgb = data_lib.read_image(saved.image, root=ui.data_root())
    except (ValueError, OSError) as error:
        st.warning(f"{ui.shown_path(saved.image)} cannot be shown: {ui.readable(error)}")
        return
    w, h = saved.width, saved.height
    x_key, y_key, drag_key = (f"fix_{part}_{saved.image.stem}" for part in ("x", "y", "drag"))
    x0, y0, x1, y1 = saved.box or (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
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
        save_box = st.button("Save this box")
        no_face = st.button("No face in this photo")
        delete = st.button("Delete the photo")
    with c1:
        ui.box_editor(rgb, box, key=drag_key)
        st.caption("Drag a rectangle over the face to set the box; the sliders fine-tune it.")
    try:
        if save_box:
            ui.remember("last_capture", capture.relabel(saved.label, box, root=ui.data_root()))
            ui.remember("capture_message", f"Box saved for {saved.image.name}.")
        elif no_face:
            ui.remember("last_capture", capture.relabel(saved.label, None, note="marked as no face",
                                                        root=ui.data_root()))
            ui.remember("capture_message", f"{saved.image.name} saved as a no-face sample.")
        elif delete:
            capture.discard(saved, root=ui.data_root())
            st.session_state.pop("last_capture", None)
            ui.remember("capture_message", f"{saved.image.name} deleted.")
        else:
            return
    except (ValueError, OSError) as error:
        st.error(ui.readable(error))
        return
    st.rerun()  # the counts and the grid above include the change


def capture_section(folder: Path) -> None:
    st.subheader("Capture from the webcam")
    target = capture.capture_folder(folder)
    st.caption(f"Photos go to `{ui.shown_path(target / 'images')}` with a labelme label in "
               f"`{ui.shown_path(target / 'labels')}`, pre-labelled by {ui.model_name(YUNET)}, which ships with the "
               "app, its boxes placed as this dataset's labels place theirs.")
    photo = st.camera_input("Take a photo", key="capture_camera")
    if photo is not None and photo.file_id != st.session_state.get("last_capture_id"):
        ui.remember("last_capture_id", photo.file_id)
        try:
            save_new_photo(folder, photo)
        except (ValueError, OSError, RuntimeError) as error:
            st.error(f"Could not save the photo: {ui.readable(error)}")
        else:
            st.rerun()  # the counts and the grid above include the new photo
    message = st.session_state.pop("capture_message", None)
    if message:
        st.success(message)
    saved = st.session_state.get("last_capture")
    if saved is not None and Path(saved.image).parent.parent.resolve() == target.resolve():
        correct_capture(saved)


def main() -> None:
    st.title("Dataset")
    add_dataset_section()
    folder = ui.choose_dataset()
    if folder is None:
        return
    dataset = ui.load_dataset(folder, check_pixels=True)
    if dataset is not None:
        st.write(dataset.describe().replace(str(folder), f"**{folder.name}**", 1))
        counts(dataset)
        st.subheader("Images")
        image_browser(dataset)
    capture_section(folder)


with ui.page_guard():
    main()
