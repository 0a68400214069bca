"""AppTest of every page of the Streamlit app, on a temporary data root holding real photos.

Each test opens the app through its entry script (`streamlit_app.py`, which wires the pages with
st.navigation), switches to a page and uses its widgets as a person would. The webcam component
cannot run under AppTest (it looks up a browser session, which AppTest does not have), so that
lookup is patched away; the frame callback's shared object is driven directly instead.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import zipfile
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_pages import ui
from facetracker.config.training import PRESETS
from facetracker.runs import ownership, processes
from facetracker.runs import run_folder as runs
from tests.helpers import browser as bt
from tests.helpers.app import (  # noqa: F401
    ENTRY,
    N_EMPTY,
    N_FACES,
    assert_no_exception,
    click,
    copy_helen,
    face_jpeg,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
    write_run,
)

# ----------------------------------------------------------------------------------------------
# Home and "nothing trained yet"


def test_home_with_an_empty_data_root_says_how_to_add_data(root):
    at = open_page("app_pages/home.py")
    assert dict((m.label, m.value) for m in at.metric) == {"Datasets": "0", "Training runs": "0",
                                                          "Trained models": "0"}
    assert any("no dataset yet" in w for w in texts(at, "warning"))
    assert any(str(root) in m and "cp -r" in m for m in texts(at, "markdown"))


def test_every_page_works_with_nothing_trained(faces):
    home = open_page("app_pages/home.py")
    assert dict((m.label, m.value) for m in home.metric)["Datasets"] == "1"
    assert any("Train a model" in link.label for link in home.get("page_link"))
    train = open_page("app_pages/train.py")
    assert any("No training run yet" in i for i in texts(train, "info"))
    detect = open_page("app_pages/detect.py")
    assert any("YuNet runs" in i for i in texts(detect, "info"))
    evaluate = open_page("app_pages/evaluate.py")
    assert any("No trained model yet" in i for i in texts(evaluate, "info"))
    for page in ("app_pages/dataset.py", "app_pages/augment.py"):
        open_page(page)


# ----------------------------------------------------------------------------------------------
# Dataset


def test_dataset_page_counts_skipped_files_and_pages_of_images(faces):
    (faces / "images" / "notes.jpg").write_text("not a photo")
    at = open_page("app_pages/dataset.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Images": str(N_FACES + N_EMPTY), "With a face": str(N_FACES), "No face": str(N_EMPTY),
                       "Skipped files": "1"}
    skipped = at.dataframe[0].value
    assert list(skipped["file"]) == ["faces/images/notes.jpg"] and "not an image" in skipped["reason"][0]
    assert len(at.image) == 12
    at.number_input(key="grid_page").set_value(2).run()
    assert len(at.image) == N_FACES + N_EMPTY - 12
    at.radio(key="grid_filter").set_value("no face").run()
    assert [c for img in at.image for c in img.captions] and all("no face" in c for img in at.image
                                                                 for c in img.captions)


def test_dataset_page_shows_every_face_of_group_photos(root, data_root):
    import shutil

    from tests.conftest import require

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    for label in sorted((groups / "labels").glob("*.json"))[:6]:
        for sub, name in (("labels", label.name), ("images", f"{label.stem}.jpg")):
            (root / "groups" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(groups / sub / name, root / "groups" / sub / name)
    at = open_page("app_pages/dataset.py")
    labelled = sum(len(json.loads(f.read_text())["shapes"]) for f in (root / "groups" / "labels").iterdir())
    assert any(f"Faces labelled: {labelled} (" in c for c in texts(at, "caption"))
    captions = [c for img in at.image for c in img.captions]
    assert sum(c.endswith(" faces") for c in captions) >= 3


def test_dataset_page_offers_the_dataset_as_a_coco_yolo_or_voc_zip(faces):
    at = open_page("app_pages/dataset.py")
    assert not at.get("download_button"), "the zip is made when asked for"
    at.radio(key="export_format").set_value("yolo").run()
    at.button[[b.label for b in at.button].index("Make the zip")].click().run()
    assert_no_exception(at)
    assert f"{N_FACES + N_EMPTY} photos ({N_EMPTY} without a face), {N_FACES} faces." in texts(at, "caption")
    assert "faces-yolo.zip" in at.get("download_button")[0].proto.label
    at.radio(key="export_format").set_value("coco").run()  # another format: its own zip, when asked
    assert not at.get("download_button")


def test_dataset_path_outside_the_data_root_is_refused(faces, tmp_path):
    at = open_page("app_pages/dataset.py")
    at.selectbox(key="dataset_choice").set_value("another folder under the data root…").run()
    at.text_input(key="dataset_typed").set_value("../..").run()
    assert_no_exception(at)
    assert any("outside the data folder" in e for e in texts(at, "error"))
    (faces.parent / "escape").symlink_to(tmp_path)
    at.text_input(key="dataset_typed").set_value("escape").run()
    assert any("outside the data folder" in e for e in texts(at, "error"))
    assert not at.metric


def test_a_new_empty_dataset_is_offered_for_recording_without_a_warning(root):
    at = open_page("app_pages/dataset.py")
    at.text_input(key="new_dataset_name").set_value("my-face").run()
    at.button[[b.label for b in at.button].index("Create an empty dataset")].click().run()
    assert_no_exception(at)
    assert (root / "my-face" / "images").is_dir()
    assert any("my-face** is empty: record photos" in i for i in texts(at, "info")), texts(at, "info")
    assert texts(at, "warning") == [] and texts(at, "error") == []
    assert "Record" in [b.label for b in at.button]


def test_one_webcam_photo_is_prelabelled_then_corrected(faces):
    at = open_page("app_pages/dataset.py")
    recorder = at.session_state["dataset_recorder"]
    click(at, "Take one photo")
    assert any("press START" in w for w in texts(at, "warning")), "a click that cannot act says why"
    frame = bt.face_frames_from_dataset(n=1)[0]
    recorder.feed(frame.copy())  # the camera is on
    click(at, "Take one photo")
    assert_no_exception(at)
    assert any("waiting for a frame" in i for i in texts(at, "info"))
    recorder.feed(np.zeros_like(frame))  # a black frame is passed over
    recorder.feed(frame.copy())
    at.run()
    assert_no_exception(at)
    labels = sorted((faces / "labels").glob("capture-*.json"))
    images = sorted((faces / "images").glob("capture-*.jpg"))
    assert len(labels) == len(images) == 1 and labels[0].stem == images[0].stem
    shapes = json.loads(labels[0].read_text())["shapes"]
    assert len(shapes) == 1, "YuNet should have pre-labelled the face"
    assert "YuNet" in shapes[0]["description"]
    (x0, y0), (x1, y1) = shapes[0]["points"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    # the photo is now part of the dataset, with its box
    assert {m.label: m.value for m in at.metric}["With a face"] == str(N_FACES + 1)

    at.slider(key=f"fix_x_{images[0].stem}").set_value((100, 300)).run()
    at.slider(key=f"fix_y_{images[0].stem}").set_value((50, 350)).run()
    click(at, "Save this box")
    assert_no_exception(at)
    assert json.loads(labels[0].read_text())["shapes"][0]["points"] == [[100.0, 50.0], [300.0, 350.0]]

    click(at, "No face in this photo")
    assert not labels[0].exists() and len(list((faces / ".deleted").rglob(labels[0].name))) == 2, \
        "its label is set aside (with the copy kept when the box was saved), not destroyed"
    assert {m.label: m.value for m in at.metric}["No face"] == str(N_EMPTY + 1)
    recorder.feed(frame.copy())
    at.run()
    assert len(list((faces / "images").glob("capture-*.jpg"))) == 1, "one click, one photo"


def test_a_recording_on_the_page_shows_its_counts_and_warnings(faces, root):
    from facetracker.labelling.recording import Recorder

    clock = mock.Mock(return_value=0.0)
    at = AppTest.from_file(ENTRY, default_timeout=90)
    at.session_state["dataset_recorder"] = recorder = Recorder(root=root, clock=clock)
    at.switch_page("app_pages/dataset.py")
    at.run()
    at.number_input(key="record_face_s").set_value(2).run()
    at.number_input(key="record_no_face_s").set_value(1).run()
    click(at, "Stop recording")
    assert any("No recording is running" in w for w in texts(at, "warning"))
    frame = bt.face_frames_from_dataset(n=1)[0]
    recorder.feed(frame.copy())
    click(at, "Record")
    assert_no_exception(at)
    assert any("Recording starts in 3 s" in i for i in texts(at, "info"))
    click(at, "Record")
    assert any("A recording is running" in w for w in texts(at, "warning"))

    def feed(t: float, image: np.ndarray) -> None:
        clock.return_value = t
        recorder.feed(image)

    feed(3.0, frame.copy())  # face phase (3 to 5 s), a photo every 0.5 s
    feed(3.5, np.zeros_like(frame))  # black
    feed(4.0, frame.copy())  # the same as the kept one: frozen
    feed(4.5, np.roll(frame, 40, axis=1))
    at.run()
    assert any("Recording your face: 1 s left" in i for i in texts(at, "info"))
    feed(8.0, frame.copy())  # no-face phase (8 to 9 s), but the face is still there
    feed(9.5, frame.copy())
    at.run()
    assert_no_exception(at)
    caption = next(c for c in texts(at, "caption") if c.startswith("planned:"))
    assert caption == ("planned: 6 · saved: 3 · with your face: 2 (2 pre-labelled) · without: 1 · dropped: 2 "
                       "(black: 1, frozen: 1) · missed: 1")
    assert any("A face was seen in 1 of the out-of-view photos" in w for w in texts(at, "warning"))
    assert any("3 of the 6 planned photos were not taken" in w and "no frame arrived for 1.5 s" in w
               for w in texts(at, "warning"))
    assert any("Recording finished: 3 of 6 planned photos saved" in s for s in texts(at, "success"))
    assert {m.label: m.value for m in at.metric}["Images"] == str(N_FACES + N_EMPTY + 3), "counts refreshed"
    assert len(list((faces / "labels").glob("rec-*.json"))) == 2


def test_a_rectangle_dragged_on_the_photo_becomes_a_pixel_box():
    def dragged(x, y):
        return {"selection": {"points": [], "box": [{"xref": "x", "yref": "y", "x": x, "y": y}], "lasso": []}}

    assert ui.dragged_box(dragged([310.6, 120.2], [400.4, 80.0]), 640, 480) == (120, 80, 311, 400)
    assert ui.dragged_box(dragged([-20, 700], [100, 900]), 640, 480) == (0, 100, 640, 480), "kept inside"
    assert ui.dragged_box(dragged([50, 50.4], [10, 90]), 640, 480) is None, "a click is not a box"
    assert ui.dragged_box({"selection": {"box": []}}, 640, 480) is None
    assert ui.dragged_box(None, 640, 480) is None


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zipped_dataset_is_unpacked_and_a_zip_slip_refused(faces, root):
    files = {f"mine/images/{p.name}": p.read_bytes() for p in sorted((faces / "images").glob("*.jpg"))[:3]}
    files.update({f"mine/labels/{p.name}": p.read_bytes() for p in sorted((faces / "labels").glob("*.json"))[:3]})
    at = open_page("app_pages/dataset.py")
    at.text_input(key="new_dataset_name").set_value("uploaded").run()
    at.file_uploader(key="dataset_zip").set_value(("mine.zip", zipped(files), "application/zip")).run()
    at.button[[b.label for b in at.button].index("Unpack the zip as this dataset")].click().run()
    assert_no_exception(at)
    assert sorted(p.name for p in (root / "uploaded").iterdir()) == ["images", "labels"]
    assert len(list((root / "uploaded" / "images").iterdir())) == 3
    assert at.selectbox(key="dataset_choice").value == "uploaded"

    at.text_input(key="new_dataset_name").set_value("evil").run()
    at.file_uploader(key="dataset_zip").set_value(
        ("evil.zip", zipped({"images/a.jpg": b"x", "../../escaped.txt": b"x"}), "application/zip")).run()
    at.button[[b.label for b in at.button].index("Unpack the zip as this dataset")].click().run()
    assert_no_exception(at)
    assert any("'..'" in e for e in texts(at, "error"))
    assert not (root / "evil").exists() and not (root.parent / "escaped.txt").exists()


# ----------------------------------------------------------------------------------------------
# Augment


def test_augment_preview_follows_the_sliders_and_saves_the_config(faces):
    at = open_page("app_pages/augment.py")
    labels = {s.label for s in at.slider}
    assert len(labels) == 19  # every AugmentConfig field, plus the number of samples
    at.radio(key="aug_kind").set_value(at.radio(key="aug_kind").options[1]).run()  # as a one-face model trains
    assert len(at.image) == 1 + at.slider(key="aug_count").value
    # with nothing saved the sliders start from the preset the Train page offers first (no upside-down faces)
    assert at.slider(key="aug_vflip_p").value == 0.0 and at.slider(key="aug_crop_min_scale").value == 0.4
    assert at.slider(key="aug_mosaic_p").value == 0.4  # the multi preset's: it finds every face
    before = [img.value for img in at.image]
    at.number_input(key="aug_seed").set_value(7).run()
    after_seed = [img.value for img in at.image]
    assert after_seed[0] == before[0] and after_seed[1:] != before[1:], "a new seed must give new samples"
    for name in ("crop_p", "brightness_contrast_p", "gamma_p", "rgb_shift_p", "hflip_p"):
        at.slider(key=f"aug_{name}").set_value(0.0)
    at.slider(key="aug_vflip_p").set_value(1.0).run()
    assert_no_exception(at)
    samples = [tuple(img.value) for img in at.image][1:]
    assert len(set(samples)) == 1, "with only a certain vertical flip left, every sample is the same"
    at.button[[b.label for b in at.button].index("Save for this dataset")].click().run()
    saved = json.loads((faces / "augment.json").read_text())
    assert saved["vflip_p"] == 1.0 and saved["hflip_p"] == 0.0 and saved["crop_p"] == 0.0
    # a fresh session reads the saved settings back into the sliders
    again = open_page("app_pages/augment.py")
    assert again.slider(key="aug_vflip_p").value == 1.0
    # impossible settings give a message, not a preview
    again.slider(key="aug_crop_min_scale").set_value(0.9)
    again.slider(key="aug_crop_max_scale").set_value(0.5).run()
    assert any(ui.literal("crop_min_scale") in e for e in texts(again, "error")) and not again.image


def test_augment_preview_shows_mosaics_and_zoom_outs_with_every_face_boxed(faces):
    at = open_page("app_pages/augment.py")
    at.radio(key="aug_kind").set_value(at.radio(key="aug_kind").options[0])
    at.slider(key="aug_zoom_out_p").set_value(0.0)
    at.slider(key="aug_crop_p").set_value(0.0)
    at.slider(key="aug_mosaic_max").set_value(2)
    at.slider(key="aug_mosaic_p").set_value(1.0).run()
    assert_no_exception(at)
    captions = [c for img in at.image for c in img.captions]
    counts = [int(c.split("· ")[1].split()[0]) for c in captions if c.startswith("sample ")]
    # 2x2 mosaics of photos with one face each (or none): several faces in most samples, all kept
    assert counts and max(counts) >= 2, counts
    at.slider(key="aug_mosaic_p").set_value(0.0)
    at.slider(key="aug_zoom_out_p").set_value(1.0).run()
    assert_no_exception(at)
    before = [img.value for img in at.image]
    assert len(before) == 1 + at.slider(key="aug_count").value


# ----------------------------------------------------------------------------------------------
# Train


@pytest.fixture
def sleeper_command():
    """Training replaced by a sleeping process: launching, refusing and stopping are what is tested."""
    started: list[int] = []
    real_spawn = __import__("facetracker.runs.launcher", fromlist=["_spawn"])._spawn

    def spawn(run_dir, command):
        pid = real_spawn(run_dir, [sys.executable, "-c", "import time; time.sleep(120)"])
        started.append(pid)
        return pid

    with mock.patch("facetracker.runs.launcher._spawn", side_effect=spawn):
        yield started
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_finished_run_is_green_only_when_it_beat_guessing_on_enough_photos(faces, root):
    good = write_run(root / "runs", "good", faces, state="finished", steps=2, epochs_done=1)
    runs.update_status(good, best_val_iou=0.81, best_epoch=1,
                       verdict={"val_photos": 40, "val_faces": 36, "model_val_iou": 0.81, "mean_box_val_iou": 0.45,
                                "prelabel_val_iou": 0.83, "warnings": []})
    at = open_page("app_pages/train.py")
    assert any("Finished: best validation mean IoU 0.810" in m and "Your model: mean IoU 0.810 on the 40 validation "
               "photos; the same box on every photo: 0.450; YuNet, trained elsewhere: 0.830" in m
               for m in texts(at, "success"))
    lazy = write_run(root / "runs", "lazy", faces, state="finished", steps=2, epochs_done=1)
    runs.update_status(lazy, best_val_iou=0.0, best_epoch=1,
                       verdict={"val_photos": 2, "val_faces": 2, "model_val_iou": 0.0, "mean_box_val_iou": 0.5,
                                "warnings": ["only 2 validation photos: too few to judge the model",
                                             "no better than guessing: ..."]})
    at = open_page("app_pages/train.py")
    at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("lazy").run()
    assert not any("Finished" in m for m in texts(at, "success")), "never a green finish over a useless model"
    assert any("Finished" in w and "too few to judge" in w and "no better than guessing" in w
               for w in texts(at, "warning"))


def test_a_small_dataset_is_given_the_quick_preset_and_the_reason_if_another_is_chosen(faces, root):
    at = open_page("app_pages/train.py")
    assert at.selectbox[[s.label for s in at.selectbox].index("Preset")].value == "quick"
    assert at.number_input(key="tr_epochs_quick_imagenet").value == PRESETS["quick"]["epochs"]
    assert not any("**quick** preset" in i for i in texts(at, "info"))
    at.selectbox[[s.label for s in at.selectbox].index("Preset")].set_value("multi").run()
    assert any(f"With {N_FACES + N_EMPTY} photos" in i and "**quick** preset" in i and "frozen" in i
               for i in texts(at, "info")), texts(at, "info")


def test_a_model_worse_than_the_pre_labels_finishes_with_a_warning(faces, root):
    run_dir = write_run(root / "runs", "behind", faces, state="finished", steps=2, epochs_done=1)
    runs.update_status(run_dir, best_val_iou=0.62, best_epoch=12,
                       verdict={"val_photos": 12, "val_faces": 10, "model_val_iou": 0.62, "mean_box_val_iou": 0.45,
                                "prelabel_val_iou": 0.85,
                                "warnings": ["worse than YuNet: its boxes ... score 0.85"]})
    at = open_page("app_pages/train.py")
    assert not any("Finished" in m for m in texts(at, "success"))
    assert any("YuNet, trained elsewhere: 0.850" in w and "worse than YuNet" in w for w in texts(at, "warning"))


def test_start_is_refused_on_a_dataset_with_nothing_to_train_on(faces, root, sleeper_command):
    empty = root / "empty"
    (empty / "images").mkdir(parents=True)
    unlabelled = root / "unlabelled"
    (unlabelled / "images").mkdir(parents=True)
    for photo in list((faces / "images").iterdir())[:3]:
        (unlabelled / "images" / photo.name).write_bytes(photo.read_bytes())
    for folder, says in ((empty, "no usable image"), (unlabelled, "no photo with a labelled face")):
        at = open_page("app_pages/train.py")
        at.selectbox(key="dataset_choice").set_value(folder.name).run()
        start = at.button[[b.label for b in at.button].index("Start training")]
        assert start.disabled, folder.name
        assert any(says in w for w in texts(at, "warning")), texts(at, "warning")
    assert sleeper_command == []


def test_start_launches_one_run_and_a_reload_cannot_start_a_second(faces, root, sleeper_command):
    at = open_page("app_pages/train.py")
    preset = at.selectbox[[s.label for s in at.selectbox].index("Preset")]
    assert preset.value == "quick", "a dataset under 150 photos starts on the preset made for it"
    preset.set_value("fast").run()
    at.radio(key="tr_weights_fast").set_value("none").run()
    from facetracker.config.training import RANDOM_INIT
    assert at.number_input(key="tr_epochs_fast_none").value == RANDOM_INIT["fast"]["epochs"]  # the longer schedule
    at.number_input(key="tr_epochs_fast_none").set_value(2).run()
    at.text_input(key="tr_name").set_value("first").run()
    start = at.button[[b.label for b in at.button].index("Start training")]
    assert not start.disabled
    start.click().run()
    assert_no_exception(at)
    run_dir = root / "runs" / "first"
    status = runs.read_status(run_dir)
    assert status["state"] == "starting" and status["pid"] == sleeper_command[0]
    recorded = json.loads((run_dir / runs.CONFIG).read_text())  # the page's config, as the process reads it
    assert recorded["augment"]["vflip_p"] == 0.0 and recorded["epochs"] == 2  # the fast preset's, and the form's
    assert recorded["data_root"] == str(root.resolve())  # what the run reads stays under the app's data root

    second = open_page("app_pages/train.py")  # another tab, or a reload
    assert second.button[[b.label for b in second.button].index("Start training")].disabled
    assert any("first" in i and "training now" in i for i in texts(second, "info"))
    assert second.selectbox[[s.label for s in second.selectbox].index("Run")].value == "first"
    assert len(sleeper_command) == 1

    second.button[[b.label for b in second.button].index("Stop")].click().run()
    assert_no_exception(second)
    deadline = time.monotonic() + 10
    while processes.pid_alive(sleeper_command[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs.read_status(run_dir)["state"] == "stopped"


def test_a_live_run_shows_progress_and_growing_charts(faces, root, request):
    run_dir = write_run(root / "runs", "live", faces, state="running", pid=os.getpid(), steps=5)
    ownership.acquire_lock(run_dir)  # this process plays the trainer, which holds the run lock for its life
    request.addfinalizer(lambda: ownership.release_lock(run_dir))
    at = open_page("app_pages/train.py")
    assert [p.value for p in at.get("progress")] and "epoch 1/3" in at.get("progress")[0].proto.text
    assert "images/s" in at.get("progress")[0].proto.text
    assert any("5 training steps and 0 validated epochs" in c for c in texts(at, "caption"))
    for step in range(6, 9):
        runs.append_metrics(run_dir, {"kind": "step", "epoch": 1, "step": step, "loss": 0.1, "class_loss": 0.1,
                                      "box_loss": 0.1})
    runs.append_metrics(run_dir, {"kind": "epoch", "epoch": 1, "step": 8, "val_mean_iou": 0.4, "val_accuracy": 0.9})
    at.run()
    assert any("8 training steps and 1 validated epochs" in c for c in texts(at, "caption"))
    assert len(at.get("vega_lite_chart")) == 2
    at.button[[b.label for b in at.button].index("Stop")].click().run()
    assert (run_dir / runs.STOP).exists(), "a run that holds its lock is asked to stop with the STOP file"


def test_a_failed_run_shows_its_error_and_offers_resume(faces, root):
    run_dir = write_run(root / "runs", "broken", faces, state="running", pid=2**22 + 12345, steps=3, epochs_done=1)
    (run_dir / runs.LOG).write_text("epoch 1/3: loss 0.5\nerror: the disk is full (model.keras)\n")
    (run_dir / runs.CHECKPOINT_DIR).mkdir()
    (run_dir / runs.CHECKPOINT_MODEL).write_bytes(b"checkpoint")
    at = open_page("app_pages/train.py")
    assert any("The run failed: the disk is full" in e for e in texts(at, "error"))
    assert "Resume from the last checkpoint" in [b.label for b in at.button]
    table = at.dataframe[0].value
    assert list(table["run"]) == ["broken"] and list(table["state"]) == ["failed"]


def test_a_run_killed_before_its_first_epoch_offers_to_start_again_with_its_recorded_epochs(faces, root):
    run_dir = write_run(root / "runs", "early", faces, state="running", pid=2**22 + 12346, steps=2)
    config = json.loads((run_dir / runs.CONFIG).read_text())
    runs.write_json(run_dir / runs.CONFIG, {**config, "epochs": 9})  # as a resume to 9 epochs records it
    at = open_page("app_pages/train.py")
    assert "Start again (no epoch had finished)" in [b.label for b in at.button]
    assert at.number_input(key="resume_epochs_early").value == 9


# ----------------------------------------------------------------------------------------------
# Detect


def test_detect_shows_the_callback_figures_and_its_errors_and_saves_frames(faces):
    at = open_page("app_pages/detect.py")
    processor = at.session_state["detect_processor"]
    frame = bt.face_frames_from_dataset(n=1)[0]
    for _ in range(3):
        out = processor.process(frame.copy())
    assert out.shape == frame.shape and not np.array_equal(out, frame), "the box and the speed are drawn"
    at.run()
    assert any("processed frames: 3 · with a face: 3 · errors: 0" in c for c in texts(at, "caption"))
    assert {m.label: m.value for m in at.metric}["Faces now"] == "1"
    assert any("faces seen: 1 · processed frames: 3" in c for c in texts(at, "caption"))

    class Broken:
        def detect(self, frame):
            raise RuntimeError("model exploded")

    processor.detector = Broken()
    assert np.array_equal(processor.process(frame.copy()), frame), "a failing frame goes out raw"
    at.run()
    assert any("model exploded" in e and "1 frame(s) failed" in e for e in texts(at, "error"))

    at.button[[b.label for b in at.button].index("Save the frame as no-face (the model fired wrongly)")].click().run()
    assert_no_exception(at)
    saved = list((faces / "labels").glob("negative-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["shapes"] == []
    assert (faces / "images" / f"{saved[0].stem}.jpg").is_file()


def small_video(frames: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_detect_on_an_uploaded_photo_video_and_a_fake(faces, monkeypatch):
    monkeypatch.setenv("FACETRACKER_ICE_SERVERS", "stun:forgot-the-json")
    at = open_page("app_pages/detect.py")
    assert any("FACETRACKER_ICE_SERVERS is not valid JSON" in w for w in texts(at, "warning"))
    uploader = at.file_uploader(key="detect_upload")
    uploader.set_value(("me.jpg", face_jpeg(), "image/jpeg")).run()
    assert_no_exception(at)
    assert any(c.startswith("1 face, best probability") for img in at.image for c in img.captions)

    at.file_uploader(key="detect_upload").set_value(("fake.jpg", b"just text, not a photo", "image/jpeg")).run()
    assert any("neither an image" in e for e in texts(at, "error"))

    frames = bt.face_frames_from_dataset(n=3)
    at.file_uploader(key="detect_upload").set_value(("clip.mp4", small_video(frames * 2), "video/mp4")).run()
    assert_no_exception(at)
    assert at.get("video"), "the boxed video is shown"
    caption = next(c for c in texts(at, "caption") if "frames (at most" in c)
    assert caption.startswith("6 frames") and "a face on 0" not in caption

    # The video is boxed again only when its model changes (a run still training saved a new one).
    import facetracker.inference.video

    calls = []
    real_annotate = facetracker.inference.video.annotate_video
    with mock.patch("facetracker.inference.video.annotate_video", side_effect=lambda *a, **k: calls.append(1) or
                    real_annotate(*a, **k)):
        at.run()
        assert calls == [], "a rerun shows the boxed video it has"
        with mock.patch("app_pages.ui.model_version", return_value=("haar", "a newer model")):
            at.run()
    assert_no_exception(at)
    assert calls == [1], "the newer model boxes the video again"


# ----------------------------------------------------------------------------------------------
# Evaluate


@pytest.fixture
def tiny_run(faces, root) -> Path:
    """A finished run holding an untrained (random) model: enough to check what the page shows."""
    from facetracker.nn.model import build_model, inference_copy

    run_dir = write_run(root / "runs", "tiny", faces, state="finished", steps=2, epochs_done=1)
    model = build_model("mobilenet-0.25", "none", head="spatial")
    inference_copy(model).save(run_dir / runs.MODEL)
    return run_dir


def test_evaluate_shows_metrics_histogram_and_worst_and_best(tiny_run):
    at = open_page("app_pages/evaluate.py")
    assert not any("new to the model" in c for c in texts(at, "caption"))  # its own dataset: splits offered
    assert not at.checkbox, "one box a photo: nothing to look closer for"
    at.selectbox(key="eval_split_faces").set_value("all images").run()
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert_no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"Mean IoU", "IoU ≥ 0.5", "Accuracy", "Precision", "Recall", "AP50", "Faces found",
                            "Boxes right", "AP50 per face", "AP50:95", "IoU of found faces", "COCO mAP50",
                            "COCO mAP50:95", "AP small", "AP medium", "AP large"}
    assert all(v == "–" or 0.0 <= float(v) <= 1.0 for v in metrics.values())
    assert any(c == f"{N_FACES} images with a face, {N_EMPTY} without" for c in texts(at, "caption"))
    assert any(c.startswith(f"{N_FACES} labelled faces in {N_FACES + N_EMPTY} photos. Found by face width: ")
               for c in texts(at, "caption"))
    assert at.get("vega_lite_chart"), "the IoU histogram"
    captions = [c for img in at.image for c in img.captions]
    assert sum("IoU" in c for c in captions) == 16  # 8 worst and 8 best
    # an untrained model misses faces: the photos where it did are shown, most missed first
    assert any(e.label.startswith("Photos with missed faces (") for e in at.expander)
    assert any(c.endswith("of 1 missed") for c in captions)


def test_evaluate_and_detect_take_a_model_that_finds_every_face(faces, root):
    """A dense model (untrained) is evaluated per photo and per face; its threshold starts at its kind's."""
    from facetracker.config.training import config_for
    from facetracker.inference.dense import DEFAULT_THRESHOLD
    from facetracker.nn.model import build_model

    run_dir = write_run(root / "runs", "dense", faces, state="finished", steps=2, epochs_done=1)
    config = config_for(str(faces), "multi", backbone="mobilenet-0.25", weights="none", epochs=3, image_size=128,
                        cache_size=128)
    runs.write_json(run_dir / runs.CONFIG, config.to_dict())
    build_model("mobilenet-0.25", "none", head="dense", size=128).save(run_dir / runs.MODEL)
    at = open_page("app_pages/evaluate.py")
    assert at.slider[[s.label for s in at.slider].index("Threshold")].value == DEFAULT_THRESHOLD
    at.selectbox(key="eval_split_faces").set_value("all images").run()
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert_no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert all(v == "–" or 0.0 <= float(v) <= 1.0 for v in metrics.values()) and "Faces found" in metrics
    # photos are searched closer by default, as the Detect page does for an uploaded photo
    assert at.checkbox(key="eval_look_closer").value is True
    at.checkbox(key="eval_look_closer").uncheck().run()
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert_no_exception(at)
    assert "Faces found" in {m.label for m in at.metric}
    detect_page = open_page("app_pages/detect.py")
    assert detect_page.slider[0].value == DEFAULT_THRESHOLD
    # the webcam runs it shaped for 640x480 frames, 1.2 times the scale of its 128 px square (128x96)
    assert any("on a 160x128 px input" in c for c in texts(detect_page, "caption"))


def test_a_failed_run_is_not_offered_first_and_a_model_brings_its_dataset(tiny_run, faces, root):
    """Detect and Evaluate open on the newest run that did not fail, and on Evaluate choosing another
    model moves the dataset picker to the dataset that model trained on."""
    import shutil

    other = root / "other-faces"
    shutil.copytree(faces, other)
    time.sleep(0.05)  # runs are listed newest first by their config.json's time
    failed = write_run(root / "runs", "failed", other, state="failed", steps=2, epochs_done=1, error="it broke")
    shutil.copy(tiny_run / runs.MODEL, failed / runs.MODEL)

    at = open_page("app_pages/evaluate.py")
    assert at.selectbox(key="eval_run").format_func(at.selectbox(key="eval_run").value).startswith("tiny ")
    assert at.selectbox(key="dataset_choice").value == "faces"
    choices = at.selectbox(key="eval_run").options
    at.selectbox(key="eval_run").set_value(next(i for i, label in enumerate(choices) if label.startswith("failed")))
    at.run()
    assert at.selectbox(key="dataset_choice").value == "other-faces", "the failed run's own dataset"
    at.selectbox(key="dataset_choice").set_value("faces").run()
    assert at.selectbox(key="dataset_choice").value == "faces", "and the person may still pick another"

    detect_page = open_page("app_pages/detect.py")
    assert detect_page.selectbox[0].value.startswith("tiny ")


# ----------------------------------------------------------------------------------------------
# An unexpected error


def test_an_unexpected_error_is_one_readable_line(faces):
    with mock.patch("facetracker.runs.workspace.list_run_summaries", side_effect=RuntimeError("the disk vanished")):
        at = AppTest.from_file(ENTRY, default_timeout=90)
        at.switch_page("app_pages/train.py")
        at.run()
    assert not at.exception
    assert texts(at, "error") == [f"{ui.UNEXPECTED}: the disk vanished. The details are in the server's log; "
                                  "the other pages still work."]
