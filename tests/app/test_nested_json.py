"""JSON nested too deeply to read (100,000 lists inside each other) in a file the app or CLI reads is
refused with a message naming the file, like any other bad JSON: it never stops a page."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from facetracker.config.jsonconfig import (
    MAX_NESTING,
    ConfigError,
    NestedTooDeep,
    parse_json,
)
from facetracker.data.augment import AUGMENT_FILE, AugmentConfig
from facetracker.data.datasets import find_coco
from facetracker.runs import run_folder as runs
from facetracker.runs import workspace
from tests.conftest import REPO
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    copy_helen,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
    write_run,
)

DEEP_LISTS = "[" * 100_000 + "]" * 100_000
DEEP_OBJECTS = '{"a":' * 100_000 + "1" + "}" * 100_000
# Deep enough to hurt code that walks the value, shallow enough for Python's parser to read.
DEEP_FIELD = '{"hflip_p": ' + "[" * 900 + "]" * 900 + "}"


@pytest.mark.parametrize("text", [DEEP_LISTS, DEEP_OBJECTS, "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)],
                         ids=["100000 lists", "100000 objects", "one level too many"])
def test_deeply_nested_json_is_a_value_error_saying_so(text):
    with pytest.raises(ValueError, match="nested more than") as raised:
        parse_json(text)
    assert isinstance(raised.value, NestedTooDeep)


def test_the_nesting_this_programs_files_use_is_read():
    nested = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert json.dumps(parse_json(nested)) == nested


@pytest.mark.parametrize("text", [DEEP_LISTS, DEEP_FIELD], ids=["100000 lists", "a field 900 lists deep"])
def test_a_deeply_nested_augment_json_is_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / AUGMENT_FILE
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested more than") as raised:
        AugmentConfig.load(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("page", ["app_pages/augment.py", "app_pages/train.py"])
def test_the_augment_and_train_pages_say_which_augment_json_cannot_be_read(faces, page):
    (faces / AUGMENT_FILE).write_text(DEEP_LISTS)
    at = open_page(page)
    shown = texts(at, "warning") + texts(at, "error")
    assert any(f"faces/{AUGMENT_FILE}" in text and "nested more than" in text for text in shown), shown


def test_the_cli_names_the_augment_json_it_cannot_read(faces, tmp_path):
    (faces / AUGMENT_FILE).write_text(DEEP_LISTS)
    result = subprocess.run([sys.executable, "-m", "facetracker", "train", "--data", str(faces), "--run-dir",
                             str(tmp_path / "run"), "--epochs", "1"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(faces / AUGMENT_FILE) in line and "nested more than" in line, line


@pytest.mark.parametrize("damaged", [runs.STATUS, runs.CONFIG, runs.METRICS])
def test_a_run_file_nested_too_deeply_leaves_every_page_working(faces, root, damaged):
    write_run(root / "runs", "healthy", faces, state="finished", steps=4, epochs_done=2)
    bad = write_run(root / "runs", "bad", faces, state="finished", steps=4, epochs_done=1)
    (bad / damaged).write_text(DEEP_LISTS if damaged != runs.METRICS else DEEP_LISTS + "\n")
    states = {s.name: s.state for s in workspace.list_run_summaries(root / "runs")}
    assert states == {"healthy": "finished", "bad": "finished" if damaged == runs.METRICS else "damaged"}
    for page in ["app_pages/home.py", "app_pages/train.py", "app_pages/detect.py", "app_pages/evaluate.py"]:
        assert_no_exception(open_page(page))


def test_a_deeply_nested_coco_file_is_reported_beside_a_good_one(tmp_path, helen):
    folder = copy_helen(helen, tmp_path / "faces", faces=3, empty=1)
    (folder / "annotations").mkdir()
    (folder / "annotations" / "instances_bad.json").write_text(DEEP_OBJECTS)
    (folder / "annotations" / "instances_good.json").write_text(json.dumps({"images": [], "annotations": []}))
    found = dict(find_coco(folder))
    assert found[folder / "annotations" / "instances_good.json"] == {"images": [], "annotations": []}
    reason = str(found[folder / "annotations" / "instances_bad.json"])
    assert "its JSON is nested too deeply to read (lists or objects nested more than" in reason, reason
