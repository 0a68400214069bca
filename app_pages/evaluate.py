"""Evaluate: how good a trained model is on a dataset split, and where it goes wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app_pages import ui
from facetracker.config.training import preset_advice
from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels
from facetracker.evaluation.evaluate import (
    Evaluation,
    FaceEvaluation,
    evaluate,
    evaluate_every_face,
)
from facetracker.evaluation.face_metrics import SIZE_BINS
from facetracker.evaluation.verdict import MIN_VALIDATION_PHOTOS
from facetracker.runs import run_folder as runs
from facetracker.runs import workspace


class State:
    """Every key this page keeps in `st.session_state`, in one place."""

    RUN = "eval_run"
    """The model picker."""
    RESULT = "eval_result"
    """(what was evaluated, Evaluation): a rerun shows it without evaluating again."""
    SPLIT_PREFIX = "eval_split_"
    """The split picker, one per dataset folder (its splits differ)."""
    THRESHOLD = "eval_threshold"
    LOOK_CLOSER = "eval_look_closer"
    DATASET_OF = "eval_dataset_of"
    """The run whose dataset the picker was last set to: choosing another model moves it to that one's."""


SPLITS = {"test": "test", "validation": "val", "training": "train", "all images": None}
GRID = 8
METRICS = [("mean_iou", "Mean IoU", "mean overlap of predicted and true box, over images with a face"),
           ("iou50", "IoU ≥ 0.5", "share of face images whose box overlaps the truth by at least half"),
           ("accuracy", "Accuracy", "face / no-face decisions right at the threshold"),
           ("precision", "Precision", "of the images called 'face', the share that hold one"),
           ("recall", "Recall", "of the images with a face, the share called 'face'"),
           ("ap50", "AP50", "average precision, a detection counting when its IoU is at least 0.5")]


def choose_run() -> workspace.RunSummary | None:
    trained = workspace.trained_runs(ui.runs_root())
    if not trained:
        st.info(f"No trained model yet. Train one on the Train page ({preset_advice()}), then come back to "
                "measure it.")
        st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
        return None
    labels = [f"{s.name} ({s.backbone or 'model'}, {s.state})" for s in trained]
    usable = [i for i, s in enumerate(trained) if s.state not in workspace.UNRELIABLE_STATES]
    if State.RUN not in st.session_state and usable:
        st.session_state[State.RUN] = usable[0]  # the newest run that did not fail
    index = st.selectbox("Model", range(len(trained)), format_func=lambda i: labels[i], key=State.RUN)
    return trained[index]


def follow_the_models_dataset(run: workspace.RunSummary) -> None:
    """When another model is chosen, the dataset picker moves to the dataset that model trained on
    (it is still free to pick another); without this a model was scored on the last model's data."""
    if st.session_state.get(State.DATASET_OF) == str(run.path):
        return
    st.session_state[State.DATASET_OF] = str(run.path)
    name = ui.relative_to_root(run.data) if run.data else None
    if name in {folder.name for folder in workspace.list_datasets(ui.data_root())}:
        ui.select_dataset(name)


def run_evaluation(run: workspace.RunSummary, folder: Path, split: str | None,
                   threshold: float, look_closer: bool) -> tuple[Evaluation, FaceEvaluation] | None:
    """The per-photo evaluation and the per-face figures, after the Evaluate button (kept for reruns)."""
    model = run.path / runs.MODEL
    key = (str(run.path), model.stat().st_mtime_ns, str(folder), ui.folder_signature(folder), split, threshold,
           look_closer)
    held = st.session_state.get(State.RESULT)
    if held is not None and held[0] == key:
        return held[1]
    if not st.button("Evaluate", type="primary"):
        return None
    bar = st.progress(0.0, text="Loading the model…")
    try:
        result = evaluate(run.path, folder, split=split, threshold=threshold, root=ui.data_root(),
                          progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                    text=f"image {done} of {total}"))
        faces = evaluate_every_face(run.path, folder, split=split, threshold=threshold, root=ui.data_root(),
                                    look_closer=look_closer, progress=lambda done, total: bar.progress(
                                        done / max(total, 1), text=f"every face: image {done} of {total}"))
    except (data_lib.DatasetError, ValueError, OSError, RuntimeError) as error:
        bar.empty()
        st.error(ui.literal(ui.readable(error)))
        return None
    bar.empty()
    st.session_state[State.RESULT] = (key, (result, faces))
    return result, faces


def too_few_to_judge(result: Evaluation, split_label: str) -> None:
    """A split of a handful of photos scores 1.000 or 0.000 by luck: said before its figures."""
    photos = len(result.samples)
    if photos >= MIN_VALIDATION_PHOTOS:
        return
    faces = sum(sample.has_face for sample in result.samples)
    st.warning(f"Only {photos} photos ({faces} with a face) in the {split_label} split: too few to judge the model, "
               f"since one photo more or less moves every figure below by a tenth or more (at least "
               f"{MIN_VALIDATION_PHOTOS} are needed). Choose 'all images' of a dataset the model never trained on, "
               "or add photos.")


def metric_row(metrics: dict) -> None:
    columns = st.columns(len(METRICS))
    for column, (name, label, help_text) in zip(columns, METRICS):
        value = metrics.get(name, float("nan"))
        column.metric(label, "–" if value != value else f"{value:.3f}", help=help_text)
    st.caption(f"{metrics['n_faces']} images with a face, {metrics['n_empty']} without")


FACE_METRICS = [("recall", "Faces found", "labelled faces matched by a box at IoU 0.5 or more, at the threshold"),
                ("precision", "Boxes right", "boxes at the threshold that match a labelled face"),
                ("ap50", "AP50 per face", "average precision over every box, right when IoU >= 0.5"),
                ("ap50_95", "AP50:95", "the mean of the APs at IoU 0.50, 0.55, ... 0.95"),
                ("mean_iou", "IoU of found faces", "mean IoU of the faces that were found")]


COCO_METRICS = [("coco_map50", "COCO mAP50", "COCO's AP at IoU 0.5 (pycocotools; 101 recall points)"),
                ("coco_map50_95", "COCO mAP50:95", "COCO's AP over IoU 0.50:0.05:0.95, its headline figure"),
                ("coco_ap_small", "AP small", "COCO's AP50:95 over faces of area under 32² px"),
                ("coco_ap_medium", "AP medium", "COCO's AP50:95 over faces of 32² to 96² px"),
                ("coco_ap_large", "AP large", "COCO's AP50:95 over faces of area over 96² px")]


def face_row(faces: dict) -> None:
    """Every box against every labelled face: what counts on photos with several faces; below, COCO's figures."""
    for row in (FACE_METRICS, COCO_METRICS):
        for column, (name, label, help_text) in zip(st.columns(len(row)), row):
            value = faces.get(name, float("nan"))
            column.metric(label, "–" if value != value else f"{value:.3f}", help=help_text)
    sizes = [f"{name} {faces[f'recall_{name}']:.2f} of {faces[f'n_{name}']}" for name, low, high in SIZE_BINS
             if faces.get(f"n_{name}")]
    st.caption(f"{faces['n_faces']} labelled faces in {faces['n_photos']} photos. Found by face width: "
               + ", ".join(sizes) + " (tiny < 16 px, small < 32, medium < 96, large). COCO's figures are "
               "pycocotools' own, on the same boxes; they differ from ours mainly by sampling the "
               "precision-recall curve at 101 points.")


def missed_faces(faces: FaceEvaluation) -> None:
    """The photos where labelled faces were not found, most missed first, each face and box drawn."""
    from facetracker.evaluation.face_metrics import match

    missed = []
    for sample, photo in zip(faces.samples, faces.photos):
        confident = photo.scores >= faces.threshold
        found = match(type(photo)(photo.boxes[confident], photo.scores[confident], photo.truth))[1] >= 0.5
        if (~found).any():
            missed.append((int((~found).sum()), sample, photo, confident))
    if not missed:
        st.caption("Every labelled face was found." if faces.photos else "")
        return
    missed.sort(key=lambda item: -item[0])
    with st.expander(f"Photos with missed faces ({len(missed)} of {len(faces.photos)})"):
        st.caption("Green: the labelled faces. Red: the model's boxes at the threshold, with their probability.")
        images, captions = [], []
        for count, sample, photo, confident in missed[:GRID]:
            try:  # the photo as it was scored (at most 640 px a side), where the boxes are
                drawn = sample_pixels(sample, max_side=640)
            except (ValueError, OSError):
                continue
            for box in photo.truth:
                drawn = ui.draw_box(drawn, tuple(box), normalised=False)
            for box, score in zip(photo.boxes[confident], photo.scores[confident]):
                drawn = ui.draw_box(drawn, tuple(box), ui.PREDICTED_COLOUR, f"{score:.2f}", normalised=False)
            images.append(drawn)
            captions.append(f"{sample.name} · {count} of {len(photo.truth)} missed")
        ui.image_grid(images, captions)


def iou_histogram(result: Evaluation) -> None:
    has_face = np.array([s.has_face for s in result.samples], bool)
    if not has_face.any():
        st.caption("No image with a face in this split: no IoU to show.")
        return
    counts, edges = np.histogram(result.ious[has_face], bins=10, range=(0.0, 1.0))
    frame = pd.DataFrame({"IoU": [f"{lo:.1f}–{hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:])], "images": counts})
    st.bar_chart(frame, x="IoU", y="images", height=240)


def prediction_tiles(result: Evaluation, indices, threshold: float) -> None:
    images, captions = [], []
    for i in indices:
        sample = result.samples[i]
        pixels = ui.sample_thumbnail(sample, 360)
        if pixels is None:
            continue
        drawn = ui.draw_box(pixels, sample.box)
        said_face = result.probs[i] >= threshold
        drawn = ui.draw_box(drawn, tuple(result.boxes[i]), ui.PREDICTED_COLOUR,
                            label=f"p {result.probs[i]:.2f}") if said_face or sample.has_face else drawn
        images.append(drawn)
        captions.append(f"{sample.name} · IoU {result.ious[i]:.2f} · p {result.probs[i]:.2f}" if sample.has_face
                        else f"{sample.name} · no face · p {result.probs[i]:.2f}")
    ui.image_grid(images, captions)


def worst_and_best(result: Evaluation, threshold: float) -> None:
    st.caption("Green: the true box. Red: the model's box and probability.")
    faces = [i for i, s in enumerate(result.samples) if s.has_face]
    empty = [i for i, s in enumerate(result.samples) if not s.has_face]
    by_iou = sorted(faces, key=lambda i: result.ious[i])
    tabs = st.tabs(["Worst boxes", "Best boxes", "No-face images called a face"])
    for tab, chosen in ((tabs[0], by_iou[:GRID]), (tabs[1], by_iou[::-1][:GRID])):
        with tab:
            if chosen:
                prediction_tiles(result, chosen, threshold)
            else:
                st.caption("no image with a face in this split")
    with tabs[2]:
        wrong = sorted((i for i in empty if result.probs[i] >= threshold), key=lambda i: -result.probs[i])
        if wrong:
            prediction_tiles(result, wrong[:GRID], threshold)
        else:
            st.caption("none" if empty else "no no-face image in this split")


def main() -> None:
    st.title("Evaluate")
    run = choose_run()
    if run is None:
        return
    follow_the_models_dataset(run)
    default = Path(run.data) if run.data else None
    folder = ui.choose_dataset(default=default)
    if folder is None:
        return
    own_data = default is not None and folder.resolve() == default.resolve()
    split_folders = any((folder / s).is_dir() for s in data_lib.SPLITS)
    c1, c2 = st.columns(2)
    split_label = c1.selectbox("Split", list(SPLITS), index=0 if own_data or split_folders else len(SPLITS) - 1,
                               key=f"{State.SPLIT_PREFIX}{folder.name}",
                               help="A dataset without split folders is split as this run split it")
    if not own_data and not split_folders:
        st.caption("The model was not trained on this dataset, so every image in it is new to the model: "
                   "'all images' measures it fairly.")
    default = ui.model_threshold(str(run.path))
    threshold = c2.slider("Threshold", 0.05, 0.95, default, 0.05, key=f"{State.THRESHOLD}_{default}")
    look_closer = ui.finds_every_face(str(run.path)) and st.checkbox(
        "Look closer, as for photos", value=True, key=State.LOOK_CLOSER,
        help="Every face is also searched in tiles of the photo at twice the scale, as the Detect page does "
             "for an uploaded photo: faces half as small are found, for about seven times the model's work. "
             "Off: the photo is scored as live video runs the model, whole in one pass on the network "
             "built for the webcam's 640x480 frames.")
    evaluated = run_evaluation(run, folder, SPLITS[split_label], threshold, look_closer)
    if evaluated is None:
        return
    result, faces = evaluated
    too_few_to_judge(result, split_label)
    metric_row(result.metrics)
    st.subheader("Every face")
    face_row(faces.metrics)
    missed_faces(faces)
    ui.skipped_files(result.skipped)
    st.subheader("IoU of the predicted boxes")
    iou_histogram(result)
    st.subheader("Predictions")
    worst_and_best(result, threshold)


with ui.page_guard():
    main()
