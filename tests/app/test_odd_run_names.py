"""A run folder whose name is not UTF-8 (made outside the app, e.g. with a bytes path) is not listed,
so it cannot break a page that shows run names; a training process in it still counts as the one run
at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facetracker.runs import launcher, ownership, workspace
from facetracker.runs import run_folder as runs
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    faces,
    no_webrtc_session,
    open_page,
    root,
    write_run,
)

PAGES = ["app_pages/home.py", "app_pages/train.py", "app_pages/detect.py", "app_pages/evaluate.py"]
ODD_NAME = b"run-\xff"


def odd_run(runs_root: Path, template: Path) -> Path:
    """A copy of a run folder (config, status, metrics, a model file) under a name that is not UTF-8."""
    folder = os.fsencode(runs_root) + b"/" + ODD_NAME
    os.mkdir(folder)
    for name in (runs.CONFIG, runs.STATUS, runs.METRICS):
        with open(folder + b"/" + name.encode(), "wb") as handle:
            handle.write((template / name).read_bytes())
    with open(folder + b"/" + runs.MODEL.encode(), "wb") as handle:
        handle.write(b"PK\x05\x06" + bytes(18))  # any model file: the page must never get as far as reading it
    return Path(os.fsdecode(folder))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_with_a_run_folder_named_in_bytes_that_are_not_utf8(faces, root, page):
    healthy = write_run(root / "runs", "healthy", faces, state="finished", steps=4, epochs_done=2)
    odd_run(root / "runs", healthy)
    assert_no_exception(open_page(page))


def test_runs_with_names_that_are_not_utf8_are_not_listed(tmp_path):
    (tmp_path / "good").mkdir()
    runs.write_json(tmp_path / "good" / runs.STATUS, {"state": "finished"})
    (tmp_path / "good" / runs.CONFIG).write_text("{}")
    (tmp_path / "good" / runs.METRICS).write_text("")
    odd = odd_run(tmp_path, tmp_path / "good")
    assert [p.name for p in runs.list_runs(tmp_path)] == ["good"]
    assert [s.name for s in workspace.list_run_summaries(tmp_path)] == ["good"]
    assert [s.name for s in workspace.trained_runs(tmp_path)] == []
    assert odd in runs.list_runs(tmp_path, every_name=True)


def test_a_live_run_in_a_folder_named_in_bytes_still_counts_as_the_run_training_now(tmp_path):
    (tmp_path / "template").mkdir()
    for name in (runs.CONFIG, runs.STATUS, runs.METRICS):
        (tmp_path / "template" / name).write_text("{}" if name != runs.METRICS else "")
    odd = odd_run(tmp_path, tmp_path / "template")
    ownership.acquire_lock(odd)
    try:
        with pytest.raises(ownership.RunLocked) as refused:
            launcher._refuse_if_busy(tmp_path / "another", tmp_path, exclusive=True)
    finally:
        ownership.release_lock(odd)
    message = str(refused.value)
    message.encode("utf-8")  # shown on the Train page: it must be text a browser can take
    assert "run-\N{REPLACEMENT CHARACTER} is training right now" in message
