"""Bad input: every reader (load_dataset, train, evaluate, predict, the Dataset page) gives one line per
bad file naming it and the reason, skips it, counts it, and finishes the job on the good files.

The corpus (tests/helpers/badcorpus.py) is made at test time from real faces-helen photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from facetracker.data import datasets as data_lib
from facetracker.data.images import model_input, sample_pixels
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from tests.conftest import REPO
from tests.helpers.badcorpus import (
    Corpus,
    huge_png_header,
    make_bad_corpus,
    make_unusable_corpus,
)

TRAIN_FAST = ["--backbone", "mobilenetv2-0.35", "--weights", "none", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def data_root_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-root")


@pytest.fixture(scope="module")
def corpus(helen, data_root_dir) -> Corpus:
    return make_bad_corpus(data_root_dir / "bad-corpus", helen)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`python -m facetracker train` on the bad corpus, once for the whole module."""
    run_dir = tmp_path_factory.mktemp("runs") / "bad-corpus-run"
    command = [sys.executable, "-m", "facetracker", "train", "--data", str(corpus.root), "--run-dir", str(run_dir),
               *TRAIN_FAST]
    trainer = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import facetracker.cli  # noqa: F401  (TensorFlow loads here while the trainer works: the tests below need it)
    import facetracker.inference.detect  # noqa: F401

    try:
        out, err = trainer.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        trainer.kill()
        out, err = trainer.communicate()
    return run_dir, subprocess.CompletedProcess(command, trainer.returncode, out, err)


def skip_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("skipped ")]


def assert_one_line_per_bad_file(output: str, corpus: Corpus, bad: list) -> None:
    """Each bad file has exactly one 'skipped <path>: <reason>' line; no other file has one."""
    lines = skip_lines(output)
    for entry in bad:
        prefix = f"skipped {corpus.root / entry.path}: "
        mine = [line for line in lines if line.startswith(prefix)]
        assert len(mine) == 1, f"{entry.path}: expected one skip line, got {mine}\n{output}"
        assert entry.reason in mine[0].lower(), f"{entry.path}: the reason should mention {entry.reason!r}: {mine[0]}"
    assert len(lines) == len(bad), "\n".join(lines)


def assert_no_traceback(*outputs: str) -> None:
    for output in outputs:
        assert "Traceback" not in output, output[-3000:]


# ----------------------------------------------------------------------------------------------
# load_dataset (what the Dataset page and training call)


def test_load_dataset_uses_every_good_file_and_skips_every_bad_one_with_its_reason(corpus):
    dataset = data_lib.load_dataset(corpus.root)
    used = {str(Path(s.image).relative_to(corpus.root)): s for s in dataset.samples}
    assert set(used) == {e.path for e in corpus.usable}
    for entry in corpus.usable:
        assert used[entry.path].has_face == entry.face, entry.path
    reported = {str(Path(s.path).relative_to(corpus.root)): s.reason for s in dataset.skipped}
    assert len(reported) == len(dataset.skipped), "a file was reported twice"
    assert set(reported) == {e.path for e in corpus.skipped}
    for entry in corpus.skipped:
        assert entry.reason in reported[entry.path].lower(), (entry.path, reported[entry.path])
    for item in dataset.skipped:
        line = str(item)
        assert "\n" not in line and line.startswith(f"skipped {item.path}: ")
    summary = dataset.summary()
    assert summary["skipped"] == len(corpus.skipped)
    assert summary["images"] == len(corpus.usable)
    assert summary["faces"] == sum(e.face for e in corpus.usable)
    assert f"{len(corpus.skipped)} skipped" in dataset.describe()


def test_awkward_file_names_are_read_like_any_other(corpus):
    dataset = data_lib.load_dataset(corpus.root)
    names = {Path(s.image).name for s in dataset.samples}
    assert {"with spaces in it.jpg", "ünïcødé-顔.jpg", "-rf --leading-dashes.jpg"} <= names


def test_unusual_pixel_formats_decode_to_the_same_rgb_picture(corpus):
    dataset = data_lib.load_dataset(corpus.root)
    by_path = {str(Path(s.image).relative_to(corpus.root)): s for s in dataset.samples}
    for path, (reference, box) in corpus.reference.items():
        sample = by_path[path]
        pixels = sample_pixels(sample)
        assert pixels.dtype == np.uint8 and pixels.shape == reference.shape, path
        difference = np.abs(pixels.astype(int) - reference.astype(int)).mean()
        assert difference < 6, f"{path}: differs from the picture it holds by {difference:.1f} grey levels"
        assert np.allclose(sample.box, box, atol=1e-3), (path, sample.box, box)


def test_an_exif_rotated_photo_is_read_upright_and_its_box_stays_on_the_face(corpus):
    path = "images/exif-rotated.jpg"
    stored = np.asarray(Image.open(corpus.root / path))
    upright, box = corpus.reference[path]
    assert stored.shape[:2] == upright.shape[1::-1] != upright.shape[:2], "the file must hold the photo on its side"
    sample = next(s for s in data_lib.load_dataset(corpus.root).samples if s.image.endswith("exif-rotated.jpg"))
    pixels = sample_pixels(sample)
    assert pixels.shape == upright.shape
    height, width = upright.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in (sample.box[0] * width, sample.box[1] * height,
                                              sample.box[2] * width, sample.box[3] * height))
    face_read, face_true = pixels[y0:y1, x0:x1].astype(int), upright[y0:y1, x0:x1].astype(int)
    assert np.abs(face_read - face_true).mean() < 6, "the box must cover the same face pixels as in the upright photo"
    # What the model is fed comes from the same upright pixels.
    assert np.abs(model_input(pixels, 120).astype(int) -
                  model_input(upright, 120).astype(int)).mean() < 6


def test_the_huge_image_is_refused_from_its_header_without_decoding(corpus, monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels of an oversized image were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    tracemalloc.start()
    try:
        for name in ("huge-20000px.png", "huge-20000px-header.jpg"):
            with pytest.raises(data_lib.ImageError, match="400 megapixels, larger than the 40 megapixels"):
                data_lib.read_image(corpus.root / "images" / name)
            with pytest.raises(data_lib.ImageError, match="400 megapixels"):
                data_lib.image_size(corpus.root / "images" / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"refusing the huge image took {peak / 2**20:.0f} MB"


@pytest.mark.parametrize("width, height", [(8000, 6000), (12000, 10000)])
def test_images_over_our_limit_but_under_pils_are_refused_by_size_without_a_warning(tmp_path, width, height):
    """48 megapixels: only our limit; 120: PIL warns (over 89) but does not refuse (from 179)."""
    path = tmp_path / "big.png"
    path.write_bytes(huge_png_header(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(data_lib.ImageError, match=f"{width}x{height} px, larger than the 40 megapixels"):
            data_lib.image_size(path)


def test_importing_the_data_module_leaves_pils_decompression_bomb_guard_on():
    """The guard protects every other image the server opens; our own limit is checked per call."""
    probe = ("from PIL import Image; default = Image.MAX_IMAGE_PIXELS; import facetracker.data.datasets; "
             "print(default, Image.MAX_IMAGE_PIXELS)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    default, after = done.stdout.split()
    assert default != "None" and after == default
    assert Image.MAX_IMAGE_PIXELS is not None and int(default) == Image.MAX_IMAGE_PIXELS


def test_without_pixel_checks_header_problems_are_still_skipped_and_the_rest_fails_on_reading(corpus):
    """evaluate reads the folder with check_pixels=False: a truncated file then fails when read."""
    dataset = data_lib.load_dataset(corpus.root, check_pixels=False)
    reported = {str(Path(s.path).relative_to(corpus.root)) for s in dataset.skipped}
    assert reported == {e.path for e in corpus.skipped} - {"images/truncated.jpg"}
    truncated = next(s for s in dataset.samples if s.image.endswith("truncated.jpg"))
    with pytest.raises(data_lib.ImageError, match="broken"):
        sample_pixels(truncated, max_side=480)


def test_a_folder_with_no_usable_image_is_refused(helen, tmp_path):
    folder = make_unusable_corpus(tmp_path / "nothing-usable", helen)
    with pytest.raises(data_lib.DatasetError, match="no usable image found.*4 file"):
        data_lib.load_dataset(folder)


# ----------------------------------------------------------------------------------------------
# train, evaluate, predict on the command line


@pytest.mark.slow
def test_train_skips_each_bad_file_with_one_line_and_trains_on_the_good_ones(trained, corpus):
    run_dir, done = trained
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_no_traceback(done.stdout, done.stderr)
    assert_one_line_per_bad_file(done.stdout, corpus, corpus.skipped)
    assert f"{len(corpus.usable)} images" in done.stdout and f"{len(corpus.skipped)} skipped" in done.stdout
    status = runs.read_status(run_dir)
    assert status["state"] == "finished" and status["skipped"] == len(corpus.skipped)
    split = runs.read_json(run_dir / runs.SPLIT)
    trained_on = {str(Path(p).relative_to(corpus.root)) for paths in split.values() for p in paths}
    assert trained_on == {e.path for e in corpus.usable}
    assert status["n_train"] == len(split["train"]) and status["n_val"] == len(split["val"])
    assert (run_dir / runs.MODEL).is_file()


@pytest.mark.slow
def test_evaluate_skips_each_bad_file_with_one_line_and_scores_the_good_ones(trained, corpus, tmp_path, capfd):
    from facetracker.cli import main

    run_dir, _ = trained
    metrics_file = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(run_dir), "--data", str(corpus.root), "--json", str(metrics_file)]) == 0
    out, err = capfd.readouterr()
    assert_no_traceback(out, err)
    assert_one_line_per_bad_file(out, corpus, corpus.skipped)
    assert f"{len(corpus.usable)} images evaluated, {len(corpus.skipped)} skipped" in out
    metrics = json.loads(metrics_file.read_text())
    assert metrics["skipped"] == len(corpus.skipped)
    assert metrics["n_faces"] == sum(e.face for e in corpus.usable)
    assert metrics["n_faces"] + metrics["n_empty"] == len(corpus.usable)


@pytest.mark.slow
def test_predict_skips_each_unreadable_image_with_one_line_and_labels_the_rest(trained, corpus, tmp_path, capfd):
    from facetracker.cli import main

    run_dir, _ = trained
    out_dir = tmp_path / "prelabels"
    assert main(["predict", "--model", str(run_dir), "--images", str(corpus.root / "images"),
                 "--out", str(out_dir)]) == 0
    out, err = capfd.readouterr()
    assert_no_traceback(out, err)
    unreadable = [e for e in corpus.image_files if not e.pixels_ok]
    readable = [e for e in corpus.image_files if e.pixels_ok]
    assert_one_line_per_bad_file(out, corpus, unreadable)
    assert f"{len(readable)} label files written" in out and f"{len(unreadable)} skipped" in out
    written = sorted(p.name for p in out_dir.glob("*.json"))
    assert written == sorted(f"{Path(e.path).stem}.json" for e in readable)
    for entry in readable:
        label = json.loads((out_dir / f"{Path(entry.path).stem}.json").read_text(encoding="utf-8"))
        width, height = data_lib.image_size(corpus.root / entry.path)
        assert (label["imageWidth"], label["imageHeight"]) == (width, height), entry.path
        assert Path(label["imagePath"]).name == Path(entry.path).name


def test_train_refuses_a_folder_with_no_usable_image_before_it_starts(helen, tmp_path, capfd):
    import signal

    from facetracker.cli import main

    folder = make_unusable_corpus(tmp_path / "nothing-usable", helen)
    run_dir = tmp_path / "run"
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = main(["train", "--data", str(folder), "--run-dir", str(run_dir), *TRAIN_FAST])
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    out, err = capfd.readouterr()
    assert code != 0
    assert_no_traceback(out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no usable image found" in errors[0] and str(folder) in errors[0]
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and "no usable image" in status["error"]
    assert not (run_dir / runs.MODEL).exists() and not (run_dir / runs.CHECKPOINT_DIR).exists()
    assert runs.read_metrics(run_dir) == []
    assert ownership.lock_owner(run_dir) is None and not (run_dir / ownership.LOCK).exists()


# ----------------------------------------------------------------------------------------------
# The Dataset page


def test_the_dataset_page_lists_each_skipped_file_with_its_reason(corpus, data_root_dir, monkeypatch):
    from unittest import mock

    from streamlit.testing.v1 import AppTest

    # The page's webcam component looks up a browser session, which AppTest does not have.
    monkeypatch.setattr("streamlit_webrtc.component.get_this_session_info", mock.Mock(return_value=None))
    page = REPO / "app_pages" / "dataset.py"
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(data_root_dir))
    monkeypatch.chdir(REPO)
    app = AppTest.from_file(str(page), default_timeout=120)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox[0].value == corpus.root.name
    expander = next(e for e in app.expander if "skipped" in e.label)
    assert expander.label.startswith(f"{len(corpus.skipped)} skipped")
    table = next(df.value for df in app.dataframe if "reason" in df.value.columns)
    shown = {row.file: row.reason for row in table.itertuples()}
    assert len(shown) == len(corpus.skipped)
    for entry in corpus.skipped:
        key = next(f for f in shown if f.endswith(entry.path))
        assert entry.reason in shown[key].lower(), (entry.path, shown[key])
    metrics = {m.label: m.value for m in app.metric}
    assert metrics.get("Skipped files") == str(len(corpus.skipped))
    assert metrics.get("Images") == str(len(corpus.usable))


def test_the_augment_page_opens_on_the_bad_corpus_and_lists_each_skipped_file(corpus, data_root_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(data_root_dir))
    monkeypatch.chdir(REPO)
    app = AppTest.from_file(str(REPO / "app_pages" / "augment.py"), default_timeout=120)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox[0].value == corpus.root.name
    # This page reads headers only (no pixel check), so the truncated photo is not found broken here.
    expected = [e for e in corpus.skipped if e.path != "images/truncated.jpg"]
    expander = next(e for e in app.expander if "skipped" in e.label)
    assert expander.label.startswith(f"{len(expected)} skipped")
    table = next(df.value for df in app.dataframe if "reason" in df.value.columns)
    shown = {row.file: row.reason for row in table.itertuples()}
    assert len(shown) == len(expected)
    for entry in expected:
        key = next(f for f in shown if f.endswith(entry.path))
        assert entry.reason in shown[key].lower(), (entry.path, shown[key])
    assert len(app.image) > 1, "the preview of a good photo must still be drawn"


# ----------------------------------------------------------------------------------------------
# Training's image cache


def test_the_training_cache_takes_every_usable_sample_and_its_manifest_is_json(corpus, tmp_path):
    from facetracker.nn import pipeline

    dataset = data_lib.load_dataset(corpus.root, check_pixels=False)
    samples = data_lib.assign_splits(dataset.samples)
    lines: list[str] = []
    late: list = []
    cache = pipeline.build_cache(samples, 32, lines.append, late)
    # Only the truncated photo is found broken this late (pixels were not checked while listing).
    assert [str(Path(item.path).relative_to(corpus.root)) for item in late] == ["images/truncated.jpg"]
    assert len(cache.images) == len(corpus.usable) and cache.images.shape[1:] == (32, 32, 3)
    assert cache.has_face.sum() == sum(e.face for e in corpus.usable)
    # Every name the run writes must be writable as UTF-8 text.
    runs.write_json(tmp_path / runs.SPLIT, data_lib.split_manifest(samples))
    runs.write_json(tmp_path / "skipped.json", [str(item) for item in dataset.skipped])


@pytest.mark.parametrize("page", ["dataset", "augment"])
def test_a_dataset_folder_whose_name_is_not_utf8_does_not_break_the_pages(helen, tmp_path, monkeypatch, page):
    from unittest import mock

    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    make_bad_corpus(root / "good", helen, n_good_faces=2, n_good_empty=1)
    os.makedirs(os.fsencode(root) + b"/caf\xe9/images")
    monkeypatch.setenv("FACETRACKER_DATA_ROOT", str(root))
    monkeypatch.chdir(REPO)
    # The Dataset page's webcam component needs a browser session, which AppTest has not.
    monkeypatch.setattr("streamlit_webrtc.component.get_this_session_info", mock.Mock(return_value=None))
    app = AppTest.from_file(str(REPO / "app_pages" / f"{page}.py"), default_timeout=120)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.selectbox[0].options[0] == "good"
