"""Deleting a photo, marking it "no face" and setting its box from the app: each keeps what it
replaces in the dataset's `.deleted/` folder and can be undone, in labelme, YOLO and Pascal VOC
datasets; a COCO dataset's photos are refused with the reason. On real photos (faces-helen portraits,
faces-afw-groups group photos), copied: the shared folder is never written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from facetracker.data import datasets as data
from facetracker.data import formats
from facetracker.labelling import edits

N_FACES, N_EMPTY = 6, 2


def copy_photos(source: Path, target: Path, faces: int, empty: int = 0) -> Path:
    """`faces` labelled photos (image + labelme JSON) and `empty` photos without a label."""
    (target / "images").mkdir(parents=True)
    (target / "labels").mkdir()
    labelled = sorted((source / "labels").glob("*.json"))[:faces]
    for label in labelled:
        image = Path(json.loads(label.read_text())["imagePath"]).name
        shutil.copy(label, target / "labels")
        shutil.copy(source / "images" / image, target / "images")
    stems = {p.stem for p in (source / "labels").glob("*.json")}
    for image in [p for p in sorted((source / "images").iterdir()) if p.stem not in stems][:empty]:
        shutil.copy(image, target / "images")
    return target


@pytest.fixture
def portraits(tmp_path, helen) -> Path:
    return copy_photos(helen, tmp_path / "root" / "portraits", N_FACES, N_EMPTY)


@pytest.fixture
def root(portraits) -> Path:
    return portraits.parent


def load(folder: Path, root: Path) -> data.Dataset:
    return data.load_dataset(folder, check_pixels=False, root=root)


def by_name(dataset: data.Dataset) -> dict[str, data.Sample]:
    return {Path(s.image).name: s for s in dataset.samples}


def digest(folder: Path) -> dict[str, str]:
    """Every file of the dataset outside `.deleted/`, by path, with a hash of its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and edits.TRASH not in p.relative_to(folder).parts}


def test_a_deleted_photo_leaves_the_dataset_and_comes_back_as_it_was(portraits, root):
    before = digest(portraits)
    dataset = load(portraits, root)
    photo = next(s for s in dataset.samples if s.has_face)
    aside = edits.delete_photo(portraits, photo, root=root)
    name = Path(photo.image).name
    assert aside.action == edits.DELETED and aside.photo == f"images/{name}"
    assert sorted(aside.kept) == sorted([f"images/{name}", f"labels/{Path(photo.label).name}"])
    assert (aside.entry / edits.KEPT / "images" / name).is_file() and not Path(photo.image).exists()
    after = load(portraits, root)
    assert len(after.samples) == len(dataset.samples) - 1 and name not in by_name(after)
    assert not after.skipped, "what was set aside is not read as part of the dataset"
    assert [e.name for e in edits.set_aside_entries(portraits)] == [aside.name]

    done = edits.restore(portraits, aside.name, root=root)
    assert sorted(done.restored) == sorted(aside.kept) and done.replaced is None
    assert digest(portraits) == before, "every file back, byte for byte"
    assert edits.set_aside_entries(portraits) == [] and not aside.entry.exists()
    assert by_name(load(portraits, root))[name].faces == photo.faces


def test_a_photo_marked_no_face_loses_its_label_until_restored(portraits, root):
    photo = next(s for s in load(portraits, root).samples if s.has_face)
    name = Path(photo.image).name
    aside = edits.mark_no_face(portraits, photo, root=root)
    assert aside.action == edits.NO_FACE and aside.kept == (f"labels/{Path(photo.label).name}",)
    marked = by_name(load(portraits, root))[name]
    assert not marked.has_face and marked.label is None
    with pytest.raises(edits.CannotEdit, match="is a no-face photo already"):
        edits.mark_no_face(portraits, marked, root=root)
    edits.restore(portraits, aside.name, root=root)
    assert by_name(load(portraits, root))[name].faces == photo.faces


def test_a_box_set_by_hand_replaces_the_label_and_the_old_one_can_come_back(portraits, root):
    photo = next(s for s in load(portraits, root).samples if s.has_face)
    name, label = Path(photo.image).name, Path(photo.label)
    old_label = label.read_bytes()
    width, height = data.image_size(photo.image)
    aside = edits.set_face_box(portraits, photo, (10, 20, 110, 140), root=root)
    assert aside.action == edits.BOX_SET and aside.kept == aside.written == (f"labels/{label.name}",)
    assert (aside.entry / edits.KEPT / "labels" / label.name).read_bytes() == old_label
    content = json.loads(label.read_text())
    faces = [s for s in content["shapes"] if s["label"] == "face"]
    assert len(faces) == 1 and faces[0]["points"] == [[10.0, 20.0], [110.0, 140.0]]
    assert faces[0]["description"] == "corrected by hand" and content["imagePath"] == json.loads(old_label)["imagePath"]
    edited = by_name(load(portraits, root))[name]
    assert edited.box == pytest.approx((10 / width, 20 / height, 110 / width, 140 / height))

    done = edits.restore(portraits, aside.name, root=root)
    assert label.read_bytes() == old_label
    assert done.replaced is not None and done.replaced.action == edits.REPLACED, "the edited label is kept too"
    assert (done.replaced.entry / edits.KEPT / "labels" / label.name).read_text() == json.dumps(content, indent=1)
    edits.restore(portraits, done.replaced.name, root=root)  # and the undo can be undone
    assert json.loads(label.read_text()) == content


def test_a_no_face_photo_given_a_box_gets_a_label_which_undo_sets_aside(portraits, root):
    photo = next(s for s in load(portraits, root).samples if not s.has_face)
    name = Path(photo.image).name
    aside = edits.set_face_box(portraits, photo, (5, 5, 60, 80), root=root)
    label = portraits / "labels" / f"{Path(name).stem}.json"
    assert aside.kept == () and aside.written == (f"labels/{label.name}",)
    content = json.loads(label.read_text())
    assert content["imagePath"] == f"../images/{name}"
    assert by_name(load(portraits, root))[name].has_face
    done = edits.restore(portraits, aside.name, root=root)
    assert not label.exists() and done.replaced is not None
    assert not by_name(load(portraits, root))[name].has_face


def test_setting_a_box_on_a_group_photo_keeps_the_other_faces(tmp_path, data_root):
    from tests.conftest import require

    groups = require(data_root / "faces-afw-groups", "faces-afw-groups")
    folder = copy_photos(groups, tmp_path / "groups", 3)
    photo = next(s for s in load(folder, tmp_path).samples if len(s.faces) >= 2)
    others = sorted(photo.faces[1:])
    width, height = data.image_size(photo.image)
    edits.set_face_box(folder, photo, (0, 0, width // 2, height // 2), root=tmp_path)
    edited = by_name(load(folder, tmp_path))[Path(photo.image).name]
    assert len(edited.faces) == len(photo.faces)
    assert edited.box == pytest.approx((0, 0, (width // 2) / width, (height // 2) / height))
    assert sorted(edited.faces[1:]) == pytest.approx(others)


@pytest.mark.parametrize("fmt, label_folder, suffix", [("yolo", "labels", ".txt"), ("voc", "annotations", ".xml")])
def test_yolo_and_voc_labels_are_rewritten_in_their_own_format(portraits, root, fmt, label_folder, suffix):
    out = root / f"portraits-{fmt}"
    formats.export_dataset(portraits, fmt, out, root=root)
    dataset = load(out, root)
    assert dataset.layout == fmt
    photo = next(s for s in dataset.samples if s.has_face)
    empty = next(s for s in dataset.samples if not s.has_face)
    width, height = data.image_size(photo.image)
    edits.set_face_box(out, photo, (30, 40, 130, 170), root=root)
    label = out / label_folder / f"{Path(photo.image).stem}{suffix}"
    assert Path(photo.label) == label
    edited = by_name(load(out, root))[Path(photo.image).name]
    assert edited.box == pytest.approx((30 / width, 40 / height, 130 / width, 170 / height), abs=1e-5)
    # a photo without a box gets one in the dataset's format; "no face" sets both labels aside
    edits.set_face_box(out, empty, (1, 2, 50, 60), root=root)
    assert (out / label_folder / f"{Path(empty.image).stem}{suffix}").is_file()
    reloaded = load(out, root)
    assert reloaded.layout == fmt and by_name(reloaded)[Path(empty.image).name].has_face
    edits.mark_no_face(out, by_name(reloaded)[Path(photo.image).name], root=root)
    assert not label.exists() and not by_name(load(out, root))[Path(photo.image).name].has_face


def test_a_coco_photo_is_refused_with_the_reason(portraits, root):
    out = root / "portraits-coco"
    formats.export_dataset(portraits, "coco", out, root=root)
    photo = load(out, root).samples[0]
    for change in (edits.delete_photo, edits.mark_no_face):
        with pytest.raises(edits.CannotEdit, match="holds the boxes of other photos too"):
            change(out, photo, root=root)
    with pytest.raises(edits.CannotEdit, match=r"instances\.json"):
        edits.set_face_box(out, photo, (1, 1, 20, 20), root=root)
    assert not (out / edits.TRASH).exists()


def test_a_label_linked_from_outside_the_root_is_refused_and_nothing_moves(portraits, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    photo = next(s for s in load(portraits, root).samples if s.has_face)
    label = Path(photo.label)
    shutil.move(label, outside / label.name)
    label.symlink_to(outside / label.name)
    for change in (edits.delete_photo, edits.mark_no_face):
        with pytest.raises(edits.CannotEdit, match="links outside the data root"):
            change(portraits, photo, root=root)
    with pytest.raises(edits.CannotEdit, match="links outside the data root"):
        edits.set_face_box(portraits, photo, (1, 1, 40, 40), root=root)
    assert Path(photo.image).is_file() and label.is_symlink()
    assert edits.set_aside_entries(portraits) == []


def test_an_empty_box_is_refused_and_a_damaged_entry_can_still_be_restored(portraits, root):
    photo = next(s for s in load(portraits, root).samples if s.has_face)
    with pytest.raises(edits.CannotEdit, match="is empty"):
        edits.set_face_box(portraits, photo, (10, 10, 11, 11), root=root)
    assert edits.set_aside_entries(portraits) == [], "a refused change leaves no entry"
    aside = edits.delete_photo(portraits, photo, root=root)
    (aside.entry / edits.MANIFEST).write_text("{not json")
    listed = edits.set_aside_entries(portraits)
    assert [(e.action, sorted(e.kept)) for e in listed] == [("set aside", sorted(aside.kept))]
    edits.restore(portraits, aside.name, root=root)
    assert Path(photo.image).is_file() and Path(photo.label).is_file()
    with pytest.raises(edits.CannotEdit, match="no such entry"):
        edits.restore(portraits, aside.name, root=root)
    with pytest.raises(edits.CannotEdit, match="names no entry"):
        edits.restore(portraits, "../images", root=root)


def test_restoring_a_photo_whose_name_was_taken_again_keeps_both(portraits, root):
    photo = next(s for s in load(portraits, root).samples if s.has_face)
    original = Path(photo.image).read_bytes()
    aside = edits.delete_photo(portraits, photo, root=root)
    newcomer = next(p for p in (portraits / "images").iterdir()).read_bytes()
    Path(photo.image).write_bytes(newcomer)  # a new photo of the same name meanwhile
    done = edits.restore(portraits, aside.name, root=root)
    assert Path(photo.image).read_bytes() == original
    assert (done.replaced.entry / edits.KEPT / "images" / Path(photo.image).name).read_bytes() == newcomer
