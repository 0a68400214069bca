"""A run folder with a damaged file (hand-edited, or written by another program) is listed as damaged
with the reason, and every page keeps working around it."""

from __future__ import annotations

import json

import pytest

from facetracker.runs import run_folder as runs
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
    write_run,
)

PAGES = ["app_pages/home.py", "app_pages/train.py", "app_pages/detect.py", "app_pages/evaluate.py"]


def damage_status_pid(run_dir):
    status = runs.read_json(run_dir / runs.STATUS)
    runs.write_json(run_dir / runs.STATUS, {**status, "state": "running", "pid": "1234x"})
    return "'pid' is \"1234x\""


def metrics_line(line: str):
    def damage(run_dir):
        with open(run_dir / runs.METRICS, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return None  # a bad line is skipped: the run itself stays readable
    return damage


def damage_config(run_dir):
    (run_dir / runs.CONFIG).write_text("[1, 2]")
    return "config.json holds list"


DAMAGES = {"status pid not a number": damage_status_pid, "metrics line [1,2]": metrics_line("[1, 2]"),
           "metrics line \"x\"": metrics_line('"x"'), "metrics line 5": metrics_line("5"),
           "metrics step not a number": metrics_line('{"kind": "step", "epoch": 1, "step": "x", "loss": 1}'),
           "config.json a list": damage_config}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_every_page_opens_with_a_damaged_run_present(faces, root, damage):
    write_run(root / "runs", "healthy", faces, state="finished", steps=4, epochs_done=2)
    bad = write_run(root / "runs", "bad", faces, state="finished", steps=4, epochs_done=1)
    reason = DAMAGES[damage](bad)
    for page in PAGES:
        at = open_page(page)  # asserts no exception and no "Something went wrong"
        assert_no_exception(at)
    at = open_page("app_pages/train.py")
    table = at.dataframe[0].value
    states = dict(zip(table["run"], table["state"]))
    assert states["healthy"] == "finished"
    if reason:
        assert states["bad"] == "damaged"
        assert reason in dict(zip(table["run"], table["error"]))["bad"]
        at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("bad").run()
        assert_no_exception(at)
        assert any("cannot be read" in e and reason in e for e in texts(at, "error"))
    else:
        assert states["bad"] == "finished"
        at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("bad").run()
        assert_no_exception(at)
        assert any("4 training steps and 1 validated epochs" in c for c in texts(at, "caption"))


def test_metrics_reading_keeps_the_good_records_around_bad_lines(tmp_path):
    lines = ['{"kind": "step", "epoch": 1, "step": 1, "loss": 0.5}', "[1, 2]", '"x"', "5", "null",
             '{"kind": "step", "epoch": 1, "step": "2", "loss": 0.4}', '{"kind": "step", "epoch": 1, "step": 3, '
             '"loss": "low"}', '{"kind": "epoch", "epoch": 1, "step": 3, "val_mean_iou": 0.5}', '{"kind": "st']
    (tmp_path / runs.METRICS).write_text("\n".join(lines))
    assert [r["step"] for r in runs.read_metrics(tmp_path)] == [1, 3]


@pytest.mark.parametrize("status, reason", [
    ({"state": "running", "pid": "12a"}, "'pid'"), ({"state": 3}, "'state'"), ([1, 2], "holds list"),
    ({"state": "finished", "epoch": "two"}, "'epoch'"), ({"state": "finished", "last_val": [1]}, "'last_val'"),
    ({"state": "finished", "best_val_iou": "high"}, "'best_val_iou'"), ({"pid": 5}, "no 'state'")])
def test_a_status_with_fields_of_the_wrong_type_reads_as_damaged(tmp_path, status, reason):
    (tmp_path / runs.CONFIG).write_text("{}")
    (tmp_path / runs.STATUS).write_text(json.dumps(status))
    read = runs.read_status(tmp_path)
    assert read["state"] == "damaged" and reason in read["error"]
