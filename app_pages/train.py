"""Train: choose the options, launch a run as its own process, and watch it train."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import ui
from facetracker.config.catalog import BACKBONE_NAMES, WEIGHTS, cached_weights_file
from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import (
    PRESETS,
    SETTINGS,
    SMALL_DATASET_PHOTOS,
    SMALL_DATASET_PRESET,
    TrainConfig,
    config_for,
    default_augment,
    preset_advice,
    suggested_preset,
)
from facetracker.data.augment import AugmentConfig
from facetracker.evaluation.verdict import comparison_line, meaning
from facetracker.runs import launcher, ownership, workspace
from facetracker.runs import run_folder as runs

REFRESH_S = 2
CUSTOM = "custom (no preset)"
MAX_CHART_POINTS = 1500


# ----------------------------------------------------------------------------------------------
# Options


def whole_bounds(setting: str) -> tuple[int, int]:
    """A whole-number setting's allowed values as a field's minimum and maximum (see `SETTINGS`)."""
    return int(SETTINGS[setting].low), int(SETTINGS[setting].high)


def option_values(preset: str | None, weights: str | None = None) -> dict:
    """The form's defaults: what `config_for` makes of the preset and the weights chosen."""
    return config_for("", preset, weights=weights).to_dict()


def weights_note(backbone: str, weights: str) -> str | None:
    """A warning when ImageNet weights would have to be downloaded (the machine may be offline)."""
    if weights != "imagenet":
        return None
    if cached_weights_file(backbone).is_file():
        return None
    # Where the Keras cache is on the server is no business of the browser's: the README says it.
    return (f"The ImageNet weights of {backbone} are not in the server's Keras cache: training downloads "
            "them first, which needs internet. Offline, choose weights 'none' or tick the fallback below.")


def augment_choice(folder: Path, preset: str | None) -> AugmentConfig | None:
    options = {}
    try:
        saved = default_augment(folder)
    except ConfigError as error:
        st.warning(f"{ui.literal(ui.readable(error))}; it is not offered")
        saved = None
    if saved is not None:
        options["saved for this dataset (Augment page)"] = saved
    options[f"the {preset} preset's" if preset else "the defaults"] = AugmentConfig.from_dict(
        option_values(preset).get("augment", {}), source="preset")
    label = st.radio("Augmentation", list(options), horizontal=True, key="train_augment")
    return options[label]


def training_options(folder: Path, n_photos: int) -> tuple[TrainConfig, str] | None:
    """The run's config and name as `launcher.start_run` takes them (None after showing why they cannot
    be used)."""
    names = list(PRESETS) + [CUSTOM]
    preset_label = st.selectbox("Preset", names, index=names.index(suggested_preset(n_photos)),
                                help="multi: every face at any size, live on a CPU, from a few hundred photos. "
                                     "quick: a few dozen webcam photos, two to three minutes. fast: one face, "
                                     "MobileNetV2. original: VGG16 as in the tutorial.")
    if suggested_preset(n_photos) == SMALL_DATASET_PRESET and preset_label != SMALL_DATASET_PRESET:
        st.info(f"With {n_photos} photos (under {SMALL_DATASET_PHOTOS}), the **{SMALL_DATASET_PRESET}** preset "
                "suits this dataset: it keeps the ImageNet backbone frozen (fine-tuning it on so few photos only "
                "learns them by heart) and trains in two to three minutes.")
    preset = None if preset_label == CUSTOM else preset_label
    values = option_values(preset)
    key = preset_label.split()[0]
    c1, c2 = st.columns(2)
    backbones = list(BACKBONE_NAMES)
    backbone = c1.selectbox("Backbone", backbones, index=backbones.index(values["backbone"]), key=f"tr_backbone_{key}")
    weights = c2.radio("Start from", list(WEIGHTS), index=list(WEIGHTS).index(values["weights"]),
                       horizontal=True, key=f"tr_weights_{key}",
                       help="imagenet: weights learnt on ImageNet (better, needs them cached or internet); "
                            "none: random weights (the fast preset then trains longer, with its grid box head: "
                            "about 20 minutes on 2 CPU cores for 650 photos)")
    # A preset trains longer from random weights; the fields below follow the choice.
    values = option_values(preset, weights)
    key = f"{key}_{weights}"
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", *whole_bounds("epochs"), int(values["epochs"]), key=f"tr_epochs_{key}")
    batch_size = c2.number_input("Batch size", *whole_bounds("batch_size"), int(values["batch_size"]),
                                 key=f"tr_batch_{key}")
    lr = c3.number_input("Learning rate", SETTINGS["lr"].low, SETTINGS["lr"].high, float(values["lr"]),
                         format="%.6f", step=1e-4, key=f"tr_lr_{key}")
    copies = c4.number_input("Augmented copies per epoch", *whole_bounds("copies"), int(values["copies"]),
                             key=f"tr_copies_{key}")
    note = weights_note(backbone, weights)
    if note:
        st.warning(note)
    allow_random = st.checkbox("If the ImageNet weights cannot be had, train from random weights instead",
                               value=False, key="tr_allow_random")
    augment = augment_choice(folder, preset)
    name = st.text_input("Run name (empty: made from the dataset, backbone and time)", key="tr_name").strip()
    try:  # checked here, before anything is launched
        config = config_for(folder, preset, backbone=backbone, weights=weights, epochs=int(epochs),
                            batch_size=int(batch_size), lr=float(lr), copies=int(copies), augment=augment,
                            allow_random_weights=allow_random, data_root=str(ui.data_root().resolve()))
    except ConfigError as error:
        st.error(ui.literal(ui.readable(error)))
        return None
    return config, name or launcher.new_run_name(ui.runs_root(), folder, backbone)


def photos_to_train_on(folder: Path) -> int | None:
    """How many photos the folder holds to train on (None when nothing: the page then says what is
    missing, since a run started on it would only fail)."""
    dataset = ui.load_dataset(folder)  # says itself why a folder cannot be read
    if dataset is None:
        return None
    if not any(sample.has_face for sample in dataset.samples):
        st.warning(f"{ui.literal(ui.shown_path(folder))} has no photo with a labelled face yet: label some (or capture them "
                   "on the Dataset page, pre-labelled for you) before training.")
        return None
    return len(dataset.samples)


def start_section(folder: Path, live: list[workspace.RunSummary]) -> None:
    n_photos = photos_to_train_on(folder)
    chosen = training_options(folder, n_photos) if n_photos is not None else None
    if live:
        st.info(f"**{ui.literal(live[0].name)}** is training now. One run at a time shares this machine's cores: "
                "stop it below or wait for it to finish.")
    if st.button("Start training", type="primary", disabled=chosen is None or bool(live)):
        config, name = chosen
        try:
            run_dir = launcher.start_run(ui.runs_root(), name, config)
        except (ownership.RunLocked, FileExistsError, ValueError, OSError) as error:
            st.error(ui.literal(ui.readable(error)))
            return
        ui.remember("train_run", run_dir.name)
        st.rerun()


# ----------------------------------------------------------------------------------------------
# Watching a run


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "estimating"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_bar(status: dict) -> None:
    progress = status.get("progress") or 0.0
    if status.get("state") == "starting":
        st.progress(0.0, text=ui.literal(ui.shown_text(status.get("message") or "starting")))
        return
    text = (f"epoch {status.get('epoch', '?')}/{status.get('epochs', '?')} · step {status.get('step', 0)}"
            f"/{status.get('total_steps', '?')} · {status.get('images_per_s') or 0:.1f} images/s · "
            f"{duration(status.get('eta_s'))} left")
    st.progress(min(max(float(progress), 0.0), 1.0), text=text)


def thin(frame: pd.DataFrame, limit: int = MAX_CHART_POINTS) -> pd.DataFrame:
    if len(frame) <= limit:
        return frame
    return frame.iloc[:: len(frame) // limit + 1]


def charts(records: list[dict]) -> None:
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    st.caption(f"{len(steps)} training steps and {len(epochs)} validated epochs logged")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Loss per step**")
        losses = [c for c in ("loss", "class_loss", "box_loss") if any(c in r for r in steps)]
        if steps and losses:
            frame = thin(pd.DataFrame(steps)[["step", *losses]].rename(columns={"loss": "total"}))
            st.line_chart(frame, x="step", y=[("total" if c == "loss" else c) for c in losses], height=260)
        else:
            st.caption("appears after the first training step")
    with c2:
        st.markdown("**Validation per epoch**")
        columns = [c for c in ("val_mean_iou", "val_iou50", "val_accuracy") if any(c in r for r in epochs)]
        if epochs and columns:
            frame = pd.DataFrame(epochs)[["epoch", *columns]].rename(
                columns={"val_mean_iou": "mean IoU", "val_iou50": "IoU ≥ 0.5", "val_accuracy": "accuracy"})
            st.line_chart(frame, x="epoch", y=[c for c in frame.columns if c != "epoch"], height=260)
        else:
            st.caption("appears after the first epoch")


def controls(summary: workspace.RunSummary) -> None:
    if summary.live:
        c1, c2 = st.columns([1, 3])
        if c1.button("Stop", key=f"stop_{summary.name}", help="Saves after the current step, then ends"):
            ui.remember("stop_clicked", summary.name)
            st.toast(ui.literal(launcher.stop_run(summary.path)))
        if st.session_state.get("stop_clicked") == summary.name and c2.button("Force stop (SIGTERM)"):
            st.toast(ui.literal(launcher.stop_run(summary.path, force=True)))
        return
    if summary.resumable:
        c1, c2 = st.columns([1, 2])
        # config.json holds the epochs the run trains towards (a resume records its new total there);
        # a finished run is offered five more, as far as the limit allows.
        low, high = whole_bounds("epochs")
        wanted = int(summary.epochs or low) + (5 if summary.state == "finished" else 0)
        epochs = c1.number_input("Epochs in total", low, high, min(max(wanted, low), high),
                                 key=f"resume_epochs_{summary.name}")
        label = "Resume from the last checkpoint" if summary.has_checkpoint else "Start again (no epoch had finished)"
        if stopped_early(summary) and summary.has_checkpoint:
            patience = (f"so it stops early again after {summary.early_stopping} epochs without a better one"
                        if summary.early_stopping else "")
            st.caption(f"This run stopped early at epoch {summary.epoch or '?'} of the {summary.epochs or '?'} asked "
                       "for, since its validation IoU stopped improving. Resuming trains on towards the total below, "
                       f"counting the epochs without a better validation IoU afresh{', ' + patience if patience else ''}.")
        if c2.button(label, key=f"resume_{summary.name}"):
            try:
                launcher.resume_run(summary.path, epochs=int(epochs))
            except (ownership.RunLocked, FileNotFoundError, ConfigError, OSError) as error:
                st.error(ui.literal(ui.readable(error)))
                return
            st.rerun()


def stopped_early(summary: workspace.RunSummary) -> bool:
    return summary.state == "finished" and (summary.message or "").startswith("stopped early")


def finished_words(summary: workspace.RunSummary, status: dict) -> None:
    """Finished, and how far to trust it: green only for a model that the verdict found no fault with."""
    best = summary.best_val_iou
    said = "Finished"
    if stopped_early(summary):
        said += ": " + ui.literal(summary.message.split(";")[0])
    if isinstance(best, (int, float)):
        said += f"{'. Best' if stopped_early(summary) else ': best'} validation mean IoU {best:.3f} at epoch {summary.best_epoch}"
    verdict = status.get("verdict") if isinstance(status.get("verdict"), dict) else {}
    if "model_val_iou" in verdict:
        line = comparison_line(verdict)
        said += f". {line[0].upper()}{line[1:]}"  # the verdict's own words and figures
    warnings = [w for w in verdict.get("warnings", []) if isinstance(w, str)] \
        if isinstance(verdict.get("warnings"), list) else []
    if warnings:
        st.warning(said + ". But " + "; and ".join(ui.literal(w) for w in warnings) + ".")
    else:
        st.success(said + ".")
    explained = meaning(verdict)
    if explained:
        st.caption(" ".join(explained))


def run_panel(run_dir: Path, live: bool) -> None:
    @st.fragment(run_every=REFRESH_S if live else None)
    def panel() -> None:
        summary = workspace.run_summary(run_dir)
        status = runs.read_status(run_dir)
        state = summary.state
        st.markdown(f"**{ui.literal(summary.name)}** · {ui.literal(state)}"
                    + (f" · {ui.literal(summary.backbone)}" if summary.backbone else "")
                    + (f" · data {ui.literal(ui.shown_path(summary.data))}" if summary.data else ""))
        if summary.live:
            progress_bar(status)
        elif state == "failed":
            st.error(f"The run failed: {ui.literal(ui.shown_text(launcher.failure_reason(run_dir) or ''))}")
        elif state == "stopped":
            st.warning(ui.literal(ui.shown_text(status.get("message") or "stopped")))
        elif state == "damaged":
            st.error(f"This run's files cannot be read: {ui.literal(ui.shown_text(summary.error or ''))}. The other "
                     "runs are not affected.")
        elif state == "finished":
            finished_words(summary, status)
        if summary.has_model and not summary.live:
            ui.what_the_model_knows(run_dir)
        charts(runs.read_metrics(run_dir))
        controls(summary)
        with st.expander("Training log"):
            st.code(launcher.log_tail(run_dir, 40) or "(empty)", language=None)
        if live and not summary.live:
            st.rerun()  # the whole page: the run list and the Start button change

    panel()


def past_runs(summaries: list[workspace.RunSummary]) -> None:
    rows = []
    for s in summaries:
        rows.append({"run": s.name, "state": s.state, "dataset": Path(s.data).name if s.data else "",
                     "backbone": s.backbone or "", "epochs": f"{s.epoch or 0}/{s.epochs or '?'}",
                     "best val IoU": s.best_val_iou, "val accuracy": s.last_val.get("accuracy"),
                     "model": "saved" if s.has_model else "", "error": s.error or ""})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def main() -> None:
    st.title("Train")
    summaries = workspace.list_run_summaries(ui.runs_root())
    live = [s for s in summaries if s.live]
    with st.expander("New training run", expanded=not live):
        folder = ui.choose_dataset()
        if folder is not None:
            start_section(folder, live)
    if not summaries:
        st.info(f"No training run yet: choose the options above and press Start. {preset_advice()[0].upper()}"
                f"{preset_advice()[1:]}.")
        return
    names = [s.name for s in summaries]
    wanted = live[0].name if live else st.session_state.get("train_run")
    shown = st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0)
    by_name = {s.name: s for s in summaries}
    run_panel(by_name[shown].path, by_name[shown].live)
    st.subheader("All runs")
    past_runs(summaries)


with ui.page_guard():
    main()
