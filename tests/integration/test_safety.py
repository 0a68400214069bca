"""Safety: the data root, paths typed by people, file types by content, zip uploads, model and config files."""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetracker.io import safety
from facetracker.io.safety import UnsafeArchive, UnsafePath
from facetracker.runs import workspace

# ----------------------------------------------------------------------------------------------
# Data root


def test_data_root_comes_from_the_environment_and_is_created(tmp_path, monkeypatch):
    root = tmp_path / "somewhere" / "facetracker-data"
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(root))
    assert workspace.data_root() == root.resolve()
    assert root.is_dir()
    assert workspace.runs_root() == root.resolve() / "runs"
    assert (root / "runs").is_dir()


def test_data_root_defaults_to_data_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("FACETRACKER_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert workspace.data_root() == (tmp_path / "data").resolve()
    assert (tmp_path / "data").is_dir()


# ----------------------------------------------------------------------------------------------
# Paths typed into the app


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "faces" / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("not for the app")
    return root


@pytest.mark.parametrize("typed, expected", [
    ("faces", "faces"),
    ("faces/images", "faces/images"),
    ("faces/../faces/images", "faces/images"),
    ("./faces", "faces"),
    ("new-dataset-not-made-yet", "new-dataset-not-made-yet"),
    ("", "."),
])
def test_paths_inside_the_root_are_resolved(root, typed, expected):
    assert safety.resolve_under(root, typed) == (root / expected).resolve()


def test_an_absolute_path_inside_the_root_is_accepted(root):
    assert safety.resolve_under(root, str(root / "faces")) == (root / "faces").resolve()


@pytest.mark.parametrize("typed", [
    "..", "../outside", "faces/../../outside/secret.txt", "/etc", "/etc/passwd", "~", "../data2",
])
def test_paths_leading_outside_the_root_are_refused(root, typed):
    with pytest.raises(UnsafePath, match="outside the data folder"):
        safety.resolve_under(root, typed)


def test_a_sibling_folder_sharing_the_name_prefix_is_outside(root):
    sibling = root.parent / (root.name + "-other")
    sibling.mkdir()
    with pytest.raises(UnsafePath, match="outside"):
        safety.resolve_under(root, str(sibling))


def test_a_symlink_inside_the_root_pointing_out_is_refused(root):
    os.symlink(root.parent / "outside", root / "innocent-looking")
    with pytest.raises(UnsafePath, match="innocent-looking.*outside the data folder"):
        safety.resolve_under(root, "innocent-looking")
    with pytest.raises(UnsafePath):
        safety.resolve_under(root, "innocent-looking/secret.txt")


def test_a_symlink_that_stays_inside_the_root_is_accepted(root):
    os.symlink(root / "faces", root / "alias")
    assert safety.resolve_under(root, "alias/images") == (root / "faces" / "images").resolve()


def test_a_symlink_loop_is_refused_with_a_message(root):
    os.symlink("loop", root / "loop")
    with pytest.raises(UnsafePath, match="loop"):
        safety.resolve_under(root, "loop/images")


def test_a_nul_character_is_refused(root):
    with pytest.raises(UnsafePath, match="NUL"):
        safety.resolve_under(root, "faces\x00/etc/passwd")


# ----------------------------------------------------------------------------------------------
# File types by content


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _video_bytes(fmt: str, codec: str) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = 64, 64
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("images/a.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize("make, kind", [
    (lambda: _image_bytes("JPEG"), "jpeg"),
    (lambda: _image_bytes("PNG"), "png"),
    (lambda: _image_bytes("WEBP"), "webp"),
    (lambda: _image_bytes("BMP"), "bmp"),
    (lambda: _video_bytes("mp4", "mpeg4"), "mp4"),
    (lambda: _video_bytes("webm", "libvpx"), "webm"),
    (lambda: _video_bytes("avi", "mjpeg"), "avi"),
    (lambda: _video_bytes("mov", "mpeg4"), "mov"),
    (_zip_bytes, "zip"),
])
def test_sniff_kind_knows_real_files_by_their_first_bytes(make, kind):
    content = make()
    assert safety.sniff_kind(content[:safety.SNIFF_BYTES]) == kind
    assert safety.sniff_kind(content) == kind


@pytest.mark.parametrize("content", [
    b"",
    b"GIF89a" + b"\x00" * 40,
    b"this is a shopping list, not a photo\n",
    b"BMW service history, 2019-2024\n" + b" " * 40,  # starts with "B" "M" but is text
    b"<html><body>not an image</body></html>",
    b"\x7fELF\x02\x01\x01" + b"\x00" * 40,  # a program
    b"MZ\x90\x00" + b"\x00" * 40,
    b"%PDF-1.7\n" + b"\x00" * 40,
    b"RIFF\x00\x00\x00\x00WAVEfmt ",  # audio in the same container family as webp and avi
], ids=["empty", "gif", "text", "bm-text", "html", "elf", "exe", "pdf", "wav"])
def test_sniff_kind_refuses_what_is_not_an_accepted_kind(content):
    assert safety.sniff_kind(content) is None


def test_sniff_kind_ignores_the_file_name(tmp_path):
    disguised = tmp_path / "holiday.jpg"
    disguised.write_bytes(_image_bytes("PNG"))
    assert safety.sniff_file(disguised) == "png"
    fake = tmp_path / "photo.jpg"
    fake.write_text("#!/bin/sh\nrm -rf /\n")
    assert safety.sniff_file(fake) is None


def test_matroska_is_not_taken_for_webm():
    assert safety.sniff_kind(_video_bytes("matroska", "mpeg4")) is None


# ----------------------------------------------------------------------------------------------
# Zip uploads


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, content in entries:
            zf.writestr(name, content)
    return buffer.getvalue()


def lie_about_size(archive: bytes, entry: str, claimed: int) -> bytes:
    """Patch the uncompressed size an entry declares, in its local header and the central directory."""
    data = bytearray(archive)
    encoded = entry.encode()
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 26)[0]
        if bytes(data[at + 30: at + 30 + name_len]) == encoded:
            struct.pack_into("<I", data, at + 22, claimed)
        at = data.find(b"PK\x03\x04", at + 4)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46: at + 46 + name_len]) == encoded:
            struct.pack_into("<I", data, at + 24, claimed)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def upload(tmp_path) -> Path:
    """The folder a zip is unpacked into, inside a parent that must stay clean too."""
    parent = tmp_path / "datasets"
    parent.mkdir()
    return parent / "unpacked"


def test_a_good_zip_is_unpacked_with_its_folders(upload):
    pixels = _image_bytes("PNG")
    archive = make_zip([("faces/images/a b.png", pixels), ("faces/labels/a b.json", b"{}"),
                        ("faces/images/ünï.png", pixels), ("__MACOSX/._junk", b"resource fork")])
    written = safety.extract_zip(io.BytesIO(archive), upload, max_total_bytes=10_000, max_entries=10)
    assert sorted(p.relative_to(upload).as_posix() for p in written) == [
        "faces/images/a b.png", "faces/images/ünï.png", "faces/labels/a b.json"]
    assert (upload / "faces/images/a b.png").read_bytes() == pixels
    assert leftovers(upload.parent) == ["unpacked", "unpacked/faces", "unpacked/faces/images",
                                        "unpacked/faces/images/a b.png", "unpacked/faces/images/ünï.png",
                                        "unpacked/faces/labels", "unpacked/faces/labels/a b.json"]


def test_a_zip_on_disk_is_unpacked_too(tmp_path, upload):
    path = tmp_path / "faces.zip"
    path.write_bytes(make_zip([("images/x.txt", b"x")]))
    assert safety.extract_zip(path, upload, 100, 5) == [upload.resolve() / "images" / "x.txt"]


@pytest.mark.parametrize("evil, why", [
    ("../escaped.txt", "climbs out"),
    ("faces/../../escaped.txt", "climbs out"),
    ("..\\escaped.txt", "climbs out"),
    ("/tmp/escaped.txt", "absolute path"),
    ("C:/escaped.txt", "absolute path"),
])
def test_zip_slip_entries_are_refused_and_nothing_is_written(upload, evil, why):
    archive = make_zip([("faces/images/ok.txt", b"fine"), (evil, b"gotcha")])
    with pytest.raises(UnsafeArchive, match=why):
        safety.extract_zip(io.BytesIO(archive), upload, 10_000, 10)
    assert leftovers(upload.parent) == []
    assert not Path("/tmp/escaped.txt").exists()


def test_a_symlink_entry_is_refused(upload):
    link = zipfile.ZipInfo("faces/images/passwd.jpg")
    link.external_attr = (0o120777 << 16)
    archive = make_zip([("faces/images/ok.txt", b"fine"), (link, b"/etc/passwd")], zipfile.ZIP_STORED)
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        safety.extract_zip(io.BytesIO(archive), upload, 10_000, 10)
    assert leftovers(upload.parent) == []


def test_too_many_files_are_refused_before_unpacking(upload, monkeypatch):
    archive = make_zip([(f"images/{i}.txt", b"x") for i in range(11)])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("opened an entry of a refused zip"))
    with pytest.raises(UnsafeArchive, match="11 entries .files and folders., more than the 10 allowed"):
        safety.extract_zip(io.BytesIO(archive), upload, 10_000, 10)
    assert leftovers(upload.parent) == []


def many_folders_zip(count: int) -> bytes:
    """A zip of `count` empty folder entries (plus one file): tiny on disk, slow to unpack."""
    return make_zip([(f"faces/images/{i}/", b"") for i in range(count)] + [("faces/labels/a.json", b"{}")],
                    zipfile.ZIP_STORED)


def test_folder_entries_count_against_the_entry_limit(upload, monkeypatch):
    archive = many_folders_zip(20)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("opened an entry of a refused zip"))
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: pytest.fail("made a folder for a refused zip"))
    with pytest.raises(UnsafeArchive, match="21 entries .files and folders., more than the 10 allowed"):
        safety.extract_zip(io.BytesIO(archive), upload, 10_000, 10)
    assert leftovers(upload.parent) == []


def test_sixty_thousand_folders_are_refused_quickly_at_the_dataset_page_limit(upload):
    archive = many_folders_zip(60_000)
    started = time.perf_counter()
    with pytest.raises(UnsafeArchive, match="60,001 entries .files and folders., more than the 50,000 allowed"):
        safety.extract_zip(io.BytesIO(archive), upload, 4 * 1024**3, 50_000)  # the Dataset page's limits
    assert time.perf_counter() - started < 5
    assert leftovers(upload.parent) == []


@pytest.mark.parametrize("count", [30, 70_000])  # 70,000: past 65,535, the count sits in the ZIP64 end record
def test_the_entry_count_is_read_from_the_end_record_before_the_directory_is_parsed(upload, monkeypatch, count):
    archive = many_folders_zip(count)
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("parsed the directory of a refused zip"))
    with pytest.raises(UnsafeArchive, match=f"{count + 1:,} entries"):
        safety.extract_zip(io.BytesIO(archive), upload, 10_000, 10)
    assert leftovers(upload.parent) == []


def test_an_end_record_that_declares_too_few_entries_is_caught_by_counting_them(upload):
    archive = bytearray(many_folders_zip(20))
    end = archive.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", archive, end + 8, 1, 1)  # entries on this disk, entries in all
    with pytest.raises(UnsafeArchive, match="21 entries"):
        safety.extract_zip(io.BytesIO(bytes(archive)), upload, 10_000, 10)
    assert leftovers(upload.parent) == []


def test_a_zip_with_a_comment_is_counted_and_unpacked(upload):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("faces/images/x.txt", b"x")
        zf.comment = b"made by a camera app " * 1000  # the end record is then 21 kB before the end
    written = safety.extract_zip(io.BytesIO(buffer.getvalue()), upload, 10_000, 10)
    assert [p.relative_to(upload).as_posix() for p in written] == ["faces/images/x.txt"]


def test_a_zip_bomb_declaring_its_size_is_refused_before_unpacking(upload, monkeypatch):
    archive = make_zip([("images/zeros.bin", bytes(30_000_000))])
    assert len(archive) < 100_000
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("opened an entry of a refused zip"))
    with pytest.raises(UnsafeArchive, match="would expand to 30,000,000 bytes"):
        safety.extract_zip(io.BytesIO(archive), upload, 1_000_000, 10)
    assert leftovers(upload.parent) == []


def test_a_zip_bomb_lying_in_its_header_is_caught_by_counting_real_bytes(upload):
    honest = make_zip([("images/small.txt", b"fine"), ("images/zeros.bin", bytes(30_000_000))])
    archive = lie_about_size(honest, "images/zeros.bin", 1000)
    assert zipfile.ZipFile(io.BytesIO(archive)).getinfo("images/zeros.bin").file_size == 1000
    with pytest.raises(UnsafeArchive, match="expands past the 1,000,000 bytes allowed.*whatever its header says"):
        safety.extract_zip(io.BytesIO(archive), upload, 1_000_000, 10)
    assert leftovers(upload.parent) == []


def test_an_entry_larger_than_declared_but_within_the_limit_is_refused_as_lying(upload):
    archive = lie_about_size(make_zip([("images/a.bin", bytes(5000))]), "images/a.bin", 1000)
    with pytest.raises(UnsafeArchive, match="declares 1,000 bytes but holds 5,000"):
        safety.extract_zip(io.BytesIO(archive), upload, 1_000_000, 10)
    assert leftovers(upload.parent) == []


def test_a_refused_zip_leaves_an_existing_target_as_it_was(upload):
    upload.mkdir()
    (upload / "keep.txt").write_text("mine")
    good_then_bad = lie_about_size(make_zip([("new.txt", b"new"), ("zeros.bin", bytes(3_000_000))]),
                                   "zeros.bin", 10)
    with pytest.raises(UnsafeArchive):
        safety.extract_zip(io.BytesIO(good_then_bad), upload, 1_000_000, 10)
    assert leftovers(upload.parent) == ["unpacked", "unpacked/keep.txt"]
    with pytest.raises(UnsafeArchive, match="keep.txt already exists"):
        safety.extract_zip(io.BytesIO(make_zip([("keep.txt", b"theirs")])), upload, 1000, 10)
    assert (upload / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_something_that_is_not_a_zip_is_refused(upload, content):
    with pytest.raises(UnsafeArchive, match="not a zip"):
        safety.extract_zip(io.BytesIO(content), upload, 1000, 10)
    assert leftovers(upload.parent) == []


def test_a_damaged_entry_is_refused(upload):
    archive = bytearray(make_zip([("images/a.txt", b"hello world " * 100)]))
    at = archive.index(b"images/a.txt") + len("images/a.txt")
    archive[at + 5: at + 15] = b"\xff" * 10  # scribble over the compressed data
    with pytest.raises(UnsafeArchive, match="damaged|declares"):
        safety.extract_zip(io.BytesIO(bytes(archive)), upload, 100_000, 10)
    assert leftovers(upload.parent) == []


# ----------------------------------------------------------------------------------------------
# Model files: loaded with safe_mode, so code inside them is refused, not run


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory) -> tuple[Path, Path]:
    """A .keras file whose Lambda layer would write a marker file if its code ever ran."""
    import keras

    folder = tmp_path_factory.mktemp("lambda-model")
    marker = folder / "code-ran"
    path = str(marker)
    inputs = keras.Input((120, 120, 3))
    outputs = keras.layers.Lambda(lambda x: (open(path, "w").write("ran"), x[:, 0, 0, :1] * 0 + 0.5)[1])(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([outputs] * 5))
    model.save(folder / "lambda.keras")
    marker.unlink()
    return folder / "lambda.keras", marker


def test_a_model_with_a_lambda_layer_is_refused_without_running_its_code(lambda_model):
    from facetracker.inference.runtimes import load_runtime
    from facetracker.nn.model import load_model

    path, marker = lambda_model
    with pytest.raises(ValueError, match="the model holds code \\(a Lambda layer .*\\), which this app never runs"):
        load_model(path)
    with pytest.raises(ValueError, match="Lambda"):
        load_runtime(path)
    assert not marker.exists()


def test_the_cli_refuses_a_lambda_model_with_one_line(lambda_model, tmp_path, capfd):
    from facetracker.cli import main

    path, marker = lambda_model
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    assert main(["evaluate", "--model", str(path), "--data", str(tmp_path)]) == 2
    out, err = capfd.readouterr()
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "holds code (a Lambda layer" in error_lines[0]
    assert error_lines[0].endswith("python -m facetracker train`"), "the whole sentence, not cut mid-word"
    assert "Traceback" not in out + err
    assert not marker.exists()


def test_the_package_never_unpickles(tmp_path):
    package = Path(__file__).resolve().parent.parent / "facetracker"
    for source in package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for risky in ("import pickle", "pickle.load", "allow_pickle=True", "safe_mode=False", "import dill",
                      "enable_unsafe_deserialization", "import marshal"):
            assert risky not in text, f"{source.name} uses {risky}"


# ----------------------------------------------------------------------------------------------
# A run's config.json is checked before a resume uses it



def _run_folder(tmp_path: Path, **changes) -> Path:
    from facetracker.config.training import config_for

    run = tmp_path / "run"
    run.mkdir()
    values = config_for(str(tmp_path / "data"), "fast").to_dict()
    for key, value in changes.items():
        if value is _DELETE:
            values.pop(key, None)
        else:
            values[key] = value
    (run / "config.json").write_text(json.dumps(values))
    return run


_DELETE = object()


@pytest.mark.parametrize("changes, message", [
    ({"evil": "__import__('os').system('id')"}, "unknown field(s) evil"),
    ({"epochs": -3}, "epochs must be a whole number from 1 to 10000, got -3"),
    ({"epochs": "10; rm -rf /"}, "field 'epochs' must be a whole number"),
    ({"lr": "0.001"}, "field 'lr' must be a number"),
    ({"backbone": "../../../../tmp/evil"}, "backbone must be one of"),
    ({"batch_size": 10**9}, "batch_size must be a whole number from 1 to 4096"),
    ({"augment": {"hflip_p": 0.5, "exec": "x"}}, "unknown field(s) exec"),
    ({"augment": "not an object"}, "expected a JSON object"),
])
def test_resume_refuses_a_tampered_config(tmp_path, capfd, restore_signals, changes, message):
    from facetracker.cli import main

    run = _run_folder(tmp_path, **changes)
    assert main(["train", "--resume", "--run-dir", str(run)]) == 2
    out, err = capfd.readouterr()
    assert f"{run / 'config.json'}" in err and message in err, err
    assert "Traceback" not in out + err
    assert not (run / "status.json").exists(), "a refused config must not start a run"


def test_resume_refuses_a_config_that_is_not_json(tmp_path, capfd, restore_signals):
    from facetracker.cli import main

    run = _run_folder(tmp_path)
    (run / "config.json").write_text("{'epochs': 3,")
    assert main(["train", "--resume", "--run-dir", str(run)]) == 2
    assert "not valid JSON" in capfd.readouterr().err


def test_resume_refuses_tampered_checkpoint_bookkeeping(tmp_path, capfd, restore_signals):
    from facetracker.cli import main
    from facetracker.runs import ownership
    from facetracker.runs import run_folder as runs

    run = _run_folder(tmp_path)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "model.keras").write_bytes(b"never loaded: the state is checked first")
    (run / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": "all of them", "best_val_iou": 0.5}))
    assert main(["train", "--resume", "--run-dir", str(run)]) == 2
    out, err = capfd.readouterr()
    assert "'epochs_done' must be a number" in err and "Traceback" not in out + err
    status = runs.read_status(run)
    assert status["state"] == "failed" and "epochs_done" in status["error"]
    assert ownership.lock_owner(run) is None
