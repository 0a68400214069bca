"""The app reads and writes only inside its data root, wherever links point: captures, their labels, settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.data.files import OUTSIDE_ROOT
from facetracker.labelling import capture
from tests.conftest import REPO
from tests.helpers.synthetic import face_image, labelme


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def places(tmp_path) -> tuple[Path, Path]:
    """(data root, a folder outside it holding one photo)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    cv2.imwrite(str(outside / "theirs.jpg"), face_image(100, 80, (20, 20, 60, 50)))
    return root, outside


FRAME = np.full((48, 64, 3), 90, np.uint8)


@pytest.mark.parametrize("linked", ["images", "labels", "dataset"])
def test_a_capture_into_a_folder_linking_out_of_the_root_is_refused_and_writes_nothing(places, linked):
    root, outside = places
    dataset = root / "faces"
    if linked == "dataset":
        os.symlink(outside, dataset)
    else:
        (dataset / "images").mkdir(parents=True)
        (dataset / "labels").mkdir()
        os.rmdir(dataset / linked)
        os.symlink(outside, dataset / linked)
    before = tree(outside)
    with pytest.raises(ValueError, match="links outside the data root"):
        capture.save_capture(dataset, FRAME, None, root=root)
    assert tree(outside) == before


def test_a_split_folder_linking_out_gets_no_new_folders_outside(places):
    root, outside = places
    dataset = root / "split"
    (dataset / "val" / "images").mkdir(parents=True)
    os.symlink(outside, dataset / "train")  # captures go to train/, which would create outside/images
    with pytest.raises(ValueError, match="links outside the data root"):
        capture.save_capture(dataset, FRAME, None, root=root)
    assert tree(outside) == ["theirs.jpg"]


def test_relabel_and_discard_refuse_files_out_of_the_root(places):
    root, outside = places
    saved = capture.save_capture(root / "faces", FRAME, None, root=root)
    # A label whose imagePath climbs out: relabelling would hand back (and discard delete) a file outside.
    record = json.loads(saved.label.read_text())
    record["imagePath"] = "../../../outside/theirs.jpg"
    saved.label.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="links outside the data root"):
        capture.relabel(saved.label, (5, 5, 30, 30), root=root)
    # A label that is itself a link out of the root is neither read nor rewritten.
    (outside / "theirs.json").write_text(labelme("theirs.jpg", 100, 80, (20, 20, 60, 50)))
    before = (outside / "theirs.json").read_text()
    os.remove(saved.label)
    os.symlink(outside / "theirs.json", saved.label)
    with pytest.raises(ValueError, match="links outside the data root"):
        capture.relabel(saved.label, None, root=root)
    assert (outside / "theirs.json").read_text() == before
    with pytest.raises(ValueError, match="links outside the data root"):
        capture.discard(capture.Capture(outside / "theirs.jpg", saved.label, 100, 80, None), root=root)
    assert tree(outside) == ["theirs.jpg", "theirs.json"]


def test_inside_the_root_a_capture_is_saved_relabelled_and_discarded(places):
    root, _ = places
    saved = capture.save_capture(root / "faces", FRAME, (4, 4, 40, 40), root=root)
    assert saved.image.parent == (root / "faces" / "images").resolve()
    fixed = capture.relabel(saved.label, None, root=root)
    assert fixed.image == saved.image and data.load_dataset(root / "faces", root=root).samples[0].box is None
    capture.discard(fixed, root=root)
    assert not saved.image.exists() and not saved.label.exists()


def test_the_dataset_page_lists_no_photo_from_outside_and_refuses_to_capture_there(places, monkeypatch):
    from unittest import mock

    from streamlit.testing.v1 import AppTest

    # The webcam component looks up a browser session, which AppTest does not have.
    monkeypatch.setattr("streamlit_webrtc.component.get_this_session_info", mock.Mock(return_value=None))

    root, outside = places
    dataset = root / "faces"
    (dataset / "images").mkdir(parents=True)
    cv2.imwrite(str(dataset / "images" / "mine.jpg"), face_image(100, 80, None))
    os.symlink(outside / "theirs.jpg", dataset / "images" / "theirs.jpg")
    (outside / "labels").mkdir()
    os.symlink(outside / "labels", dataset / "labels")  # where a capture's label would go
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(root))
    monkeypatch.chdir(REPO)
    app = AppTest.from_file(str(REPO / "app_pages" / "dataset.py"), default_timeout=120)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox[0].value == "faces"
    table = next(df.value for df in app.dataframe if "reason" in df.value.columns)
    reasons = {Path(row.file).name: row.reason for row in table.itertuples()}
    assert reasons == {"theirs.jpg": OUTSIDE_ROOT}
    assert len(app.image) == 1, "only the photo inside the data root may be shown"
    before = tree(outside)
    recorder = app.session_state["dataset_recorder"]
    recorder.feed(face_image(64, 48, None))  # the camera is on
    app.button[[b.label for b in app.button].index("Take one photo")].click().run()
    recorder.feed(face_image(64, 48, None))
    app.run()
    errors = [e.value for e in app.error]
    assert any("could not be saved" in e and "links outside the data root" in e for e in errors), errors
    assert tree(outside) == before


def test_the_augment_page_does_not_read_settings_linked_from_outside_the_root(places, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, outside = places
    dataset = root / "faces"
    (dataset / "images").mkdir(parents=True)
    cv2.imwrite(str(dataset / "images" / "mine.jpg"), face_image(100, 80, None))
    (outside / "augment.json").write_text('{"hflip_p": 0.95}')
    os.symlink(outside / "augment.json", dataset / "augment.json")
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(root))
    monkeypatch.chdir(REPO)
    app = AppTest.from_file(str(REPO / "app_pages" / "augment.py"), default_timeout=120)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert any("links outside the data root" in w.value for w in app.warning), [w.value for w in app.warning]
    assert app.slider(key="aug_hflip_p").value != 0.95
