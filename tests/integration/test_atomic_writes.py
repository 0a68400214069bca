"""Files written whole, and written where `open()` would write them.

A regular file is replaced atomically; a symbolic link is followed and the file it names replaced
(the link stays); a special file (a FIFO, a device, what `/dev/stdout` leads to) is written into and
stays what it was; a folder or a link loop is refused as `open()` refuses it. `/dev/stdout` is a link
to `/proc/self/fd/1`: the tests use a link of their own to that, so nothing outside the temporary
folder can be replaced even if the code under test were wrong.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facetracker.io import atomic
from facetracker.runs import run_folder as runs
from tests.conftest import REPO


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_a_regular_file_is_replaced_whole_and_keeps_its_mode(tmp_path):
    path = tmp_path / "figures.json"
    path.write_text("old")
    path.chmod(0o600)
    before = path.stat().st_ino
    runs.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert path.stat().st_ino != before, "replaced by a new file, not rewritten in place"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    runs.write_json(tmp_path / "new.json", [1])
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == atomic.NEW_FILE_MODE
    assert leftovers(tmp_path) == []


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "figures.json"
    target.write_text("old")
    link = tmp_path / "figures.json"
    link.symlink_to(target)
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    runs.write_json(chain, {"b": 2})
    assert chain.is_symlink() and link.is_symlink(), "the links are kept"
    assert json.loads(target.read_text()) == {"b": 2}
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "real") == []

    dangling = tmp_path / "later.json"
    dangling.symlink_to(tmp_path / "real" / "later.json")
    atomic.write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.json").read_text() == "made"


def test_a_link_to_a_device_writes_into_the_device_and_replaces_nothing(tmp_path):
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    runs.write_json(link, {"c": 3})
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert leftovers(tmp_path) == []


def test_a_fifo_receives_the_content_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there: opening to write cannot block
    try:
        runs.write_json(fifo, {"d": 4})
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert json.loads(received) == {"d": 4}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_standard_output_gets_the_json(tmp_path):
    """`--json /dev/stdout`: the content goes down the pipe; /dev/stdout is a link to /proc/self/fd/1."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    code = f"from facetracker.runs import ownership, processes, run_folder as runs; runs.write_json({str(link)!r}, {{'e': 5}})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"e": 5}
    assert link.is_symlink() and leftovers(tmp_path) == []


def test_a_folder_or_a_link_loop_is_refused_as_open_refuses_it(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        atomic.write_text(folder, "x")
    assert folder.is_dir()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OSError) as raised:
        atomic.write_text(loop, "x")
    assert raised.value.errno == errno.ELOOP and loop.is_symlink()
    assert leftovers(tmp_path) == []


def test_a_file_a_library_writes_by_name_lands_where_open_would_put_it(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "model.onnx"
    link.symlink_to(target)
    with atomic.replacing(link, suffix=".onnx") as tmp:
        assert tmp.name.endswith(".onnx") and tmp.parent == target.parent
        tmp.write_bytes(b"new model")
    assert link.is_symlink() and target.read_bytes() == b"new model"

    with pytest.raises(RuntimeError), atomic.replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the exporter failed")
    assert target.read_bytes() == b"new model", "a failed write leaves the file as it was"

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic.replacing(fifo, suffix=".keras") as tmp:
        tmp.write_bytes(b"streamed")
    reader.join(timeout=30)
    assert got == [b"streamed"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "real") == []


def test_the_evaluate_command_writes_its_json_through_a_link_on_real_faces(tmp_path, helen):
    """The command line's --json on a link: the link stays, its target gets the figures."""
    data = tmp_path / "faces"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for label in sorted((helen / "labels").glob("*.json"))[:4]:
        image = json.loads(label.read_text())["imagePath"]
        shutil.copy(label, data / "labels")
        shutil.copy(helen / "images" / Path(image).name, data / "images")
    (tmp_path / "reports").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "reports" / "2026-12-07.json")
    result = subprocess.run([sys.executable, "-m", "facetracker", "evaluate", "--model", "yunet", "--data", str(data),
                             "--json", str(link)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert link.is_symlink()
    figures = json.loads((tmp_path / "reports" / "2026-12-07.json").read_text())
    assert figures["faces"]["n_faces"] == 4


def test_a_run_taken_over_loses_the_temporary_files_of_a_killed_writer(tmp_path):
    """A writer killed between writing and renaming leaves its temporary file; the next process to take
    the run removes it, and keeps one whose writer still runs."""
    from facetracker.io.atomic import writer_tag
    from facetracker.runs import run_folder as runs

    run_dir = tmp_path / "run"
    (run_dir / runs.CHECKPOINT_DIR).mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", "from facetracker.io.atomic import writer_tag; print(writer_tag())"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    dead = [run_dir / f".status.json.{killed}.abc123.tmp", run_dir / runs.CHECKPOINT_DIR / f".state.json.{killed}.def456.tmp"]
    alive = run_dir / f".metrics.jsonl.{writer_tag()}.ghi789.tmp"
    for path in [*dead, alive]:
        path.write_text("{")
    assert sorted(runs.remove_dead_temps(run_dir)) == sorted(dead)
    assert not any(p.exists() for p in dead) and alive.exists()
