"""Home: what is loaded (datasets, runs, models) and what to do next."""

from __future__ import annotations

import streamlit as st

from app_pages import ui
from facetracker.config.training import preset_advice
from facetracker.inference.detect import YUNET_LABEL
from facetracker.runs import workspace


def loaded_overview(datasets, summaries, models, live) -> None:
    c1, c2, c3 = st.columns(3)
    c1.metric("Datasets", len(datasets))
    c2.metric("Training runs", len(summaries), f"{len(live)} training now" if live else None, delta_color="off")
    c3.metric("Trained models", len(models))
    if datasets:
        st.markdown("**Datasets** under the data root: " + ", ".join(ui.literal(p.name) for p in datasets))
    if summaries:
        st.markdown("**Runs**: " + ", ".join(f"{ui.literal(s.name)} ({ui.literal(s.state)})" for s in summaries[:8])
                    + (" …" if len(summaries) > 8 else ""))


def next_step(datasets, models, live) -> None:
    st.subheader("What to do next")
    if live:
        st.info(f"**{ui.literal(live[0].name)}** is training right now: watch its charts on the Train page.")
        st.page_link("app_pages/train.py", label="Watch the training run", icon=":material/model_training:")
    if not datasets:
        st.warning("There is no dataset yet.")
        ui.how_to_add_data()
        st.page_link("app_pages/dataset.py", label="Upload a zip or take webcam photos", icon=":material/photo_library:")
        st.page_link("app_pages/detect.py", label=f"Meanwhile, try {YUNET_LABEL}, a face detector that ships with "
                     "the app, on your webcam", icon=":material/videocam:")
        return
    if not models:
        st.markdown("1. Check your dataset: counts, skipped files and boxes, on the **Dataset** page.\n"
                    "2. Preview and tune the augmentation on the **Augment** page.\n"
                    f"3. Train a model on the **Train** page: {preset_advice()}.")
        st.page_link("app_pages/dataset.py", label="Look at the dataset", icon=":material/photo_library:")
        st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
        return
    st.markdown(f"Your newest model is **{ui.literal(models[0].name)}**. See it box your face live, or measure it.")
    st.page_link("app_pages/detect.py", label="Detect faces on the webcam", icon=":material/videocam:")
    st.page_link("app_pages/evaluate.py", label="Evaluate the model", icon=":material/analytics:")
    st.page_link("app_pages/train.py", label="Train another model", icon=":material/model_training:")


def main() -> None:
    st.title("FaceTracker")
    st.write("Train your own face detector from a folder of labelled photos, then run it live on your webcam.")
    try:
        root = ui.data_root()
        datasets = workspace.list_datasets(root)
        summaries = workspace.list_run_summaries(ui.runs_root())
    except OSError as error:
        st.error(f"Cannot read the data root: {ui.literal(ui.readable(error))}")
        return
    st.caption(f"Data root: `{root}` (datasets and runs live here; set FACETRACKER_DATA_ROOT to change it)")
    models = [s for s in summaries if s.has_model]
    live = [s for s in summaries if s.live]
    loaded_overview(datasets, summaries, models, live)
    next_step(datasets, models, live)


with ui.page_guard():
    main()
