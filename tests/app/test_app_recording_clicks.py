"""AppTest of the Dataset page while a recording runs and of its photo grid, on real photos
(faces-helen, copied into a temporary data root).

Every click during a recording is answered, and the answer stays while the panel redraws; a
recording whose stream has gaps lists each photo it did not take, with the reason; each photo of
the grid can be deleted, marked "no face" or opened in the box editor, and every such change can be
undone or restored. The webcam component cannot run under AppTest, so the recorder it feeds is
driven directly (with a stand-in clock).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from unittest import mock

import numpy as np
from streamlit.testing.v1 import AppTest

from app_pages import ui
from facetracker.data import formats
from facetracker.labelling import edits
from facetracker.labelling.recording import ANSWER_S, Recorder
from tests.helpers import browser as bt
from tests.helpers.app import (  # noqa: F401  (fixtures)
    ENTRY,
    N_EMPTY,
    N_FACES,
    assert_no_exception,
    click,
    copy_helen,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
)


def recording_page(root: Path) -> tuple[AppTest, Recorder, mock.Mock]:
    """The Dataset page with a recorder on a stand-in clock, the camera sending."""
    clock = mock.Mock(return_value=0.0)
    at = AppTest.from_file(ENTRY, default_timeout=120)
    at.session_state["dataset_recorder"] = recorder = Recorder(root=root, clock=clock)
    at.switch_page("app_pages/dataset.py")
    at.run()
    assert_no_exception(at)
    return at, recorder, clock


def shown(at, kind: str) -> list[str]:
    """The texts of one kind of element as a person reads them (the Markdown escapes undone)."""
    return [re.sub(r"\\(.)", r"\1", text).replace(ui.WORD_JOINER, "") for text in texts(at, kind)]


def warned(at: AppTest, text: str) -> bool:
    return any(text in w for w in shown(at, "warning"))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_every_click_during_a_recording_is_answered_and_the_answer_stays(faces, root, helen):
    copy_helen(helen, root / "other", 2, 1)
    at, recorder, clock = recording_page(root)
    click(at, "Record")
    assert warned(at, "No frames are coming from the camera: press START on the video and allow the camera first.")
    frame = bt.face_frames_from_dataset(n=1)[0]
    recorder.feed(frame.copy())  # the camera is on
    click(at, "Record")  # a 3 s countdown, 20 s with the face, 3 s to step out, 5 s out of view: 31 s
    assert any("Recording starts in 3 s" in i for i in shown(at, "info"))

    clock.return_value = 1.0
    click(at, "Record")
    assert_no_exception(at)
    answer = ("A recording is running (the countdown now; it ends in 30 s); it goes on. A new one can start once it "
              "ends or you stop it.")
    assert warned(at, answer), shown(at, "warning")
    for t in (1.5, 2.0, 2.5):  # the panel redraws itself while the recording runs
        clock.return_value = t
        at.run()
        assert warned(at, answer)

    clock.return_value = 4.0
    click(at, "Take one photo")
    assert warned(at, "A recording is running (the photos with your face now; it ends in 27 s): it is taking the "
                      "photos, so no single one is taken now. Take one once it ends or you stop it.")
    assert not warned(at, answer), "the newer answer replaces the older"

    # settings typed meanwhile are for the next recording, and the page says so
    at.number_input(key="record_face_s").set_value(10).run()
    assert any("The recording running keeps its plan (20 s with your face, 2 photos per second, 5 s out of view); the "
               "settings above apply to the next one." in i for i in shown(at, "info")), shown(at, "info")
    captions = shown(at, "caption")
    assert any("a zip made now holds those saved so far" in c for c in captions)
    assert any("A recording is adding photos to this dataset: they appear here when it ends" in c for c in captions)

    # another dataset chosen meanwhile: the recording goes on into the first one, and the page says where
    at.selectbox(key="dataset_choice").set_value("other").run()
    assert_no_exception(at)
    assert warned(at, "A recording into **faces** is running (the photos with your face now; it ends in 27 s): its "
                      "photos go there, not into other. Record here once it ends, or after **Stop recording**.")
    click(at, "Record")
    assert warned(at, "A recording is running (the photos with your face now")
    assert recorder.status().folder.name == "faces"
    at.selectbox(key="dataset_choice").set_value("faces").run()

    # the grid's buttons act during a recording too
    photo = sorted((faces / "images").iterdir())[0].name
    grid_button(at, "delete", photo).click().run()
    assert_no_exception(at)
    assert any(f"{photo} deleted." in s for s in shown(at, "success")) and not (faces / "images" / photo).exists()
    assert recorder.status().running

    clock.return_value = 5.0
    click(at, "Stop recording")
    assert_no_exception(at)
    assert warned(at, "The recording ended early: stopped by hand during the photos with your face")
    assert warned(at, "50 of the 50 planned photos were not taken")  # no frame came after the start
    clock.return_value = 6.0
    click(at, "Stop recording")
    assert warned(at, "No recording is running: there is nothing to stop.")
    at.run()
    assert warned(at, "No recording is running: there is nothing to stop.")
    clock.return_value = 6.0 + ANSWER_S
    at.run()
    assert not warned(at, "No recording is running"), "an answer goes once it has been read"
    assert_no_exception(at)


def test_a_recording_with_gaps_lists_each_photo_it_did_not_take(faces, root):
    """The plan of 40 photos with the face at 2 per second; under load, two gaps of about 0.9 s
    between frames, one of which swallows a photo's whole slot."""
    at, recorder, clock = recording_page(root)
    at.number_input(key="record_no_face_s").set_value(0).run()
    shots = bt.face_frames_from_dataset(n=8)
    recorder.feed(shots[0].copy())
    click(at, "Record")
    assert_no_exception(at)
    fps = 15
    for i in range(int(23.2 * fps) + 1):  # the 3 s countdown, then 20 s of photos
        t = round(i / fps, 4)
        if 9.95 < t < 10.85 or 15.6 < t < 16.45:
            continue
        clock.return_value = t
        recorder.feed(np.roll(shots[int(t * 2) % len(shots)], 8 * int(t * 2), axis=1))
    at.run()
    assert_no_exception(at)
    caption = next(c for c in shown(at, "caption") if c.startswith("planned:"))
    assert caption.startswith("planned: 40 · saved: 39 · with your face: 39") and caption.endswith(
        "dropped: 0 (black: 0, frozen: 0) · missed: 1"), caption
    assert warned(at, "1 of the 40 planned photos was not taken:\n- photo 15 of 40 with your face (due 10.0 s into "
                      "the recording): no frame arrived for 0.9 s"), shown(at, "warning")
    assert any("Recording finished: 39 of 40 planned photos saved" in s for s in shown(at, "success"))
    assert len(list((faces / "images").glob("rec-*.jpg"))) == 39


def grid_button(at: AppTest, action: str, name: str):
    """The grid's `action` button (delete, no_face, edit) under the photo `name`."""
    return next(b for b in at.button if b.key and b.key.startswith(f"grid_{action}_") and b.key.endswith("/" + name))


def test_the_grid_deletes_marks_no_face_and_edits_each_photo_and_every_change_can_be_undone(faces, root):
    at = open_page("app_pages/dataset.py")
    assert metrics(at)["Images"] == str(N_FACES + N_EMPTY)
    with_face = sorted(p.name for p in (faces / "images").iterdir()
                       if (faces / "labels" / f"{p.stem}.json").exists())
    first = with_face[0]
    label = faces / "labels" / f"{Path(first).stem}.json"
    original_label = label.read_bytes()

    # delete, then undo
    grid_button(at, "delete", first).click().run()
    assert_no_exception(at)
    assert not (faces / "images" / first).exists() and not label.exists()
    assert metrics(at)["Images"] == str(N_FACES + N_EMPTY - 1)
    assert any(f"{first} deleted. What it replaced is kept in faces/.deleted/" in s for s in shown(at, "success"))
    click(at, "Undo")
    assert (faces / "images" / first).exists() and label.read_bytes() == original_label
    assert metrics(at)["Images"] == str(N_FACES + N_EMPTY)
    assert any(f"Put back images/{first}, labels/{label.name}." in s for s in shown(at, "success"))

    # "no face", then undo
    grid_button(at, "no_face", first).click().run()
    assert not label.exists() and metrics(at)["No face"] == str(N_EMPTY + 1)
    click(at, "Undo")
    assert label.read_bytes() == original_label and metrics(at)["No face"] == str(N_EMPTY)
    no_face_photo = next(p.name for p in (faces / "images").iterdir()
                         if not (faces / "labels" / f"{p.stem}.json").exists())
    at.radio(key="grid_filter").set_value("no face").run()
    assert grid_button(at, "no_face", no_face_photo).disabled, "a no-face photo has no label to set aside"
    grid_button(at, "edit", no_face_photo).click().run()
    click(at, "No face in this photo")  # in the editor the button is there: pressed, it says why it did nothing
    assert warned(at, f"{no_face_photo} is a no-face photo already: it has no label file")
    click(at, "Close the editor")
    assert not any("Editing" in m for m in shown(at, "markdown"))
    at.radio(key="grid_filter").set_value("all").run()

    # the box editor from the grid: save a box, undo it, then restore the edit from the list
    grid_button(at, "edit", first).click().run()
    assert_no_exception(at)
    assert any(f"Editing {first}" in m for m in shown(at, "markdown"))
    stem = Path(first).stem
    at.slider(key=f"fix_x_{stem}").set_value((20, 120)).run()
    at.slider(key=f"fix_y_{stem}").set_value((30, 150)).run()
    click(at, "Save this box")
    assert_no_exception(at)
    assert json.loads(label.read_text())["shapes"][0]["points"] == [[20.0, 30.0], [120.0, 150.0]]
    assert any(f"Box saved for {first}" in s for s in shown(at, "success"))
    click(at, "Undo")
    assert label.read_bytes() == original_label
    assert any(f"Put back labels/{label.name}. What stood there (labels/{label.name}) is kept in faces/.deleted/" in s
               for s in shown(at, "success"))
    expander = next(e for e in at.expander if e.label.startswith("Deleted and replaced files (1)"))
    assert any("replaced when an earlier version was restored" in m for m in shown(expander, "markdown"))
    click(at, "Restore")
    assert json.loads(label.read_text())["shapes"][0]["points"] == [[20.0, 30.0], [120.0, 150.0]]
    assert (faces / edits.TRASH).is_dir() and len(edits.set_aside_entries(faces)) == 1  # the label as it was

    # delete from the editor: it closes, the photo is set aside, and Undo brings it back
    click(at, "Delete the photo")
    assert_no_exception(at)
    assert not (faces / "images" / first).exists()
    assert not any(f"Editing {first}" in m for m in shown(at, "markdown"))
    click(at, "Undo")
    assert (faces / "images" / first).exists() and metrics(at)["Images"] == str(N_FACES + N_EMPTY)


def test_a_coco_dataset_grid_says_why_it_has_no_buttons(faces, root):
    formats.export_dataset(faces, "coco", root / "faces-coco", root=root)
    at = open_page("app_pages/dataset.py")
    at.selectbox(key="dataset_choice").set_value("faces-coco").run()
    assert_no_exception(at)
    assert any("The photos of a COCO dataset share one label file" in c for c in shown(at, "caption"))
    assert not [b for b in at.button if b.key and b.key.startswith("grid_")]
