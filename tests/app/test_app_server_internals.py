"""The browser is told nothing of the server's layout: no Keras cache folder, no absolute path of
a dataset's files, no temporary folder of an upload, and the data root is named, not shown as ".".
Names are given relative to the data root or by their user-facing name."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from app_pages import ui
from tests.helpers.app import face_jpeg, faces, no_webrtc_session, open_page, root  # noqa: F401  (fixtures: the data root, its photos, no webcam session)


def server_paths(at, *folders: Path) -> list[str]:
    """Texts of the page's messages and captions that name one of the server's folders. (Where the
    data root is, the server's own setting, is said on purpose where it tells how to copy data in.)"""
    said = [e.value for kind in ("error", "warning", "info", "success", "caption", "toast")
            for e in getattr(at, kind)] + [c for image in at.image for c in image.captions]
    return [t for t in said if any(str(folder) in t for folder in folders)]


def test_the_train_page_does_not_show_the_keras_cache_folder(root, faces, empty_keras_home):
    at = open_page("app_pages/train.py")
    at.selectbox[[s.label for s in at.selectbox].index("Preset")].set_value("fast").run()
    at.radio(key="tr_weights_fast").set_value("imagenet").run()
    assert any("not in the server's Keras cache" in w.value for w in at.warning)
    assert server_paths(at, empty_keras_home) == []


def test_a_broken_augment_json_is_named_relative_to_the_data_root(root, faces, tmp_path):
    (faces / "augment.json").write_text("{ not json")
    at = open_page("app_pages/augment.py")
    warnings = [w.value for w in at.warning]
    assert any("faces/augment.json" in w for w in warnings), warnings
    assert server_paths(at, tmp_path) == []


def test_zip_errors_name_the_entry_never_a_temporary_folder(root, faces, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # "images" is a file and a folder: the second entry fails
        archive.writestr("mine/images", b"a file")
        archive.writestr("mine/images/a.jpg", face_jpeg())
    at = open_page("app_pages/dataset.py")
    at.text_input(key="new_dataset_name").set_value("clash").run()
    at.file_uploader(key="dataset_zip").set_value(("mine.zip", buffer.getvalue(), "application/zip")).run()
    at.button[[b.label for b in at.button].index("Unpack the zip as this dataset")].click().run()
    errors = [e.value for e in at.error]
    assert any("mine.zip" in e and "mine/images/a.jpg" in e for e in errors), errors
    assert not any(".upload-" in e or ".unzip-" in e for e in errors), errors
    assert server_paths(at, tmp_path) == [] and not (root / "clash").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [], "no temporary folder is left"


def test_a_path_outside_the_data_root_is_refused_without_showing_it_as_a_dot(root, faces, tmp_path):
    at = open_page("app_pages/dataset.py")
    at.selectbox(key="dataset_choice").set_value("another folder under the data root…").run()
    at.text_input(key="dataset_typed").set_value("../..").run()
    errors = [e.value for e in at.error]
    assert any("outside the data folder" in e and "the data root" in e for e in errors), errors
    assert not any(re.search(r"(^|\s)\.(\s|;|$)", e) for e in errors), errors
    assert server_paths(at, tmp_path) == []


def test_paths_are_named_relative_to_the_data_root_or_by_their_last_part(root, tmp_path):
    assert ui.shown_path(root) == "the data root" and ui.shown_path(root / "faces" / "a.jpg") == "faces/a.jpg"
    assert ui.shown_path(tmp_path / "elsewhere" / "b.jpg") == "b.jpg"
    assert ui.shown_text(f"{root}/faces/images/a.jpg: damaged") == "faces/images/a.jpg: damaged"
    assert ui.shown_text(f"cannot list {root}") == "cannot list the data root"
    assert ui.shown_text("/tmp/facetracker-video-x1/upload: not a video") == "upload: not a video"
    assert all(ui.shown_text(t) == t for t in ("faces-helen", "a: b", "see https://example.com/x"))
