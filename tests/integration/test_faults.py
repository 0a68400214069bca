"""Runs survive faults: kill -9, resume, STOP and SIGTERM, a full disk, a read-only folder, two trainings at once.

Real training processes on a tiny copy of faces-helen with the smallest backbone. One run is
killed after its first checkpoint; copies of it are then resumed (and stopped, terminated, or
starved of disk) side by side, so the whole module trains in about three process lifetimes.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from tests.conftest import REPO
from tests.helpers.badcorpus import helen_pairs

pytestmark = pytest.mark.slow

# Three copies of each image per epoch make an epoch long enough (9 steps) to kill it mid-way.
FAULT_TRAIN = ["--backbone", "mobilenet-0.25", "--weights", "none", "--batch-size", "4", "--copies", "3"]
EPOCHS = 50  # never reached: every run here is killed, stopped or fails long before
WAIT = 420  # seconds; generous because the machine is shared

# Simulates a disk that fills up when a model is saved: small files (status, metrics) still fit.
DISK_FULL_PREAMBLE = """
import errno, os, sys
_replace = os.replace
def _full_disk_replace(src, dst, *args, **kwargs):
    if str(dst).endswith(".keras"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    return _replace(src, dst, *args, **kwargs)
os.replace = _full_disk_replace
from facetracker.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@dataclasses.dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    out: Path
    err: Path
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> tuple[str, str]:
        return self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def describe(self) -> str:
        out, err = self.output()
        return f"{self.name} (exit {self.popen.poll()}):\n{out[-3000:]}\n{err[-3000:]}"


def start(name: str, logs: Path, args: list[str], preamble: str | None = None) -> Proc:
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    command = [sys.executable, "-c", preamble, *args] if preamble else [sys.executable, "-m", "facetracker", *args]
    popen = subprocess.Popen(command, cwd=REPO, stdout=out.open("w"), stderr=err.open("w"))
    return Proc(name, popen, out, err, time.time())


def wait_until(condition, proc: Proc, what: str, timeout: float = WAIT) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} ended before {what}: {proc.describe()}")
        if time.time() > deadline:
            proc.popen.kill()
            pytest.fail(f"{proc.name}: no {what} after {timeout} s: {proc.describe()}")
        time.sleep(0.2)


def finish(proc: Proc, timeout: float = WAIT) -> int:
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        pytest.fail(f"{proc.name} did not end: {proc.describe()}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def steps_per_epoch(run_dir: Path) -> int:
    status = runs.read_json(run_dir / runs.STATUS)
    return status["total_steps"] // status["epochs"]


def load(path: Path):
    from facetracker.nn.model import load_model

    return load_model(path)


def is_running(run_dir: Path, proc: Proc) -> bool:
    """The process has traced its graph and finished a training step."""
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    return status.get("state") == "running" and status.get("pid") == proc.pid


def in_next_epoch(run_dir: Path) -> bool:
    """The newest step record belongs to an epoch after the checkpoint's, early in it."""
    done = (runs.read_json(run_dir / runs.CHECKPOINT_STATE, {}) or {}).get("epochs_done", 0)
    steps = [r for r in runs.read_metrics(run_dir) if r["kind"] == "step"]
    if not steps or steps[-1]["epoch"] <= done:
        return False
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    spe = status["total_steps"] // status["epochs"]
    return steps[-1]["step"] - done * spe <= spe // 2


def has_started(run_dir: Path, proc: Proc) -> bool:
    """The process owns the run and has recorded itself in status.json."""
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    return status.get("state") in runs.ACTIVE_STATES and status.get("pid") == proc.pid


@pytest.fixture(scope="module")
def tiny_data(helen, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "faces"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image, label in helen_pairs(helen, 12, faces=True) + helen_pairs(helen, 4, faces=False):
        shutil.copyfile(image, folder / "images" / image.name)
        if label:
            shutil.copyfile(label, folder / "labels" / label.name)
    return folder


@dataclasses.dataclass
class Killed:
    run_dir: Path
    trainer: Proc
    second: Proc
    second_code: int
    raw_status: dict
    state: dict


@pytest.fixture(scope="module")
def killed(tiny_data, tmp_path_factory) -> Killed:
    """A run killed with SIGKILL after its first checkpoint; a second trainer tried the folder meanwhile."""
    logs = tmp_path_factory.mktemp("killed-logs")
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    args = ["train", "--data", str(tiny_data), "--run-dir", str(run_dir), *FAULT_TRAIN, "--epochs", str(EPOCHS)]
    trainer = start("first", logs, args)
    import facetracker.nn.model  # noqa: F401  (TensorFlow loads here while the trainer starts: the tests load models)
    wait_until(lambda: ownership.lock_owner(run_dir) == trainer.pid, trainer, "the run lock")
    second = start("second", logs, args)
    second_code = finish(second)
    assert trainer.popen.poll() is None, "the first trainer must still be running when the second one is refused"
    wait_until(lambda: (runs.read_json(run_dir / runs.CHECKPOINT_STATE, {}) or {}).get("epochs_done", 0) >= 1,
               trainer, "the first checkpoint")
    # Kill it while it trains the next epoch, between checkpoints, as a crash usually strikes.
    wait_until(lambda: in_next_epoch(run_dir), trainer, "a step after the checkpoint")
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.popen.wait(timeout=60)
    return Killed(run_dir, trainer, second, second_code, runs.read_json(run_dir / runs.STATUS),
                  runs.read_json(run_dir / runs.CHECKPOINT_STATE))


def test_a_second_training_on_the_same_run_folder_is_refused(killed):
    out, err = killed.second.output()
    assert killed.second_code != 0
    assert f"another training process (pid {killed.trainer.pid}) is using this run folder" in err
    assert "Traceback" not in out + err
    assert killed.raw_status["pid"] == killed.trainer.pid, "the refused trainer must not touch the run's status"


def test_kill_9_leaves_a_loadable_checkpoint_and_model_and_a_failed_status(killed):
    run_dir = killed.run_dir
    assert killed.raw_status["state"] in runs.ACTIVE_STATES  # what the dead process last wrote
    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert f"pid {killed.trainer.pid}" in status["error"] and "resume" in status["error"]
    assert ownership.lock_owner(run_dir) is None

    model = load(run_dir / runs.MODEL)
    assert model(np.zeros((1, 120, 120, 3), np.float32)).shape == (1, 5)
    checkpoint = load(run_dir / runs.CHECKPOINT_MODEL)
    assert int(checkpoint.optimizer.iterations.numpy()) == killed.state["epochs_done"] * steps_per_epoch(run_dir)
    epochs = [r["epoch"] for r in runs.read_metrics(run_dir) if r["kind"] == "epoch"]
    assert epochs[:killed.state["epochs_done"]] == list(range(1, killed.state["epochs_done"] + 1))


@dataclasses.dataclass
class Resumed:
    run_dir: Path
    proc: Proc
    code: int
    before: dict[str, str]
    """sha256 of model.keras and checkpoint/model.keras before the process started."""


@pytest.fixture(scope="module")
def resumed(killed, tmp_path_factory) -> dict[str, Resumed]:
    """Copies of the killed run resumed side by side: one stopped by a STOP file once it trains, one
    by SIGTERM as it starts, one on a disk that fills up when it saves a model."""
    logs = tmp_path_factory.mktemp("resume-logs")
    base = tmp_path_factory.mktemp("resumed")
    folders = {}
    for name in ("stop-file", "sigterm", "disk-full"):
        folders[name] = base / name
        shutil.copytree(killed.run_dir, folders[name], symlinks=True)
    before = {name: {f: digest(folder / f) for f in (runs.MODEL, runs.CHECKPOINT_MODEL)}
              for name, folder in folders.items()}
    procs = {
        "stop-file": start("stop-file", logs, ["train", "--resume", "--run-dir", str(folders["stop-file"])]),
        "sigterm": start("sigterm", logs, ["train", "--resume", "--run-dir", str(folders["sigterm"])]),
        "disk-full": start("disk-full", logs, ["train", "--resume", "--run-dir", str(folders["disk-full"])],
                           preamble=DISK_FULL_PREAMBLE),
    }
    signalled = {"stop-file": False, "sigterm": False}
    deadline = time.time() + WAIT
    while any(p.popen.poll() is None for p in procs.values()):
        if not signalled["stop-file"] and is_running(folders["stop-file"], procs["stop-file"]):
            (folders["stop-file"] / runs.STOP).touch()
            signalled["stop-file"] = True
        # SIGTERM as soon as the run has started (its handler is in place): it must stop before
        # or right after the first step, without the cost of a whole epoch.
        if not signalled["sigterm"] and has_started(folders["sigterm"], procs["sigterm"]):
            os.kill(procs["sigterm"].pid, signal.SIGTERM)
            signalled["sigterm"] = True
        if time.time() > deadline:
            for proc in procs.values():
                proc.popen.kill()
            pytest.fail("resumed runs did not end: " + "\n".join(p.describe() for p in procs.values()))
        time.sleep(0.2)
    return {name: Resumed(folders[name], proc, proc.popen.returncode, before[name]) for name, proc in procs.items()}


def test_resume_carries_on_with_the_same_epochs_optimiser_state_and_metrics(killed, resumed):
    result = resumed["stop-file"]
    run_dir = result.run_dir
    out, err = result.proc.output()
    assert result.code == 0, result.proc.describe()
    assert "Traceback" not in out + err
    status = runs.read_status(run_dir)
    assert status["epochs"] == EPOCHS, "a resume keeps the run's epoch count"

    records = runs.read_metrics(run_dir)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, steps[-1] + 1)), "step records continue without gaps or repeats"
    spe = steps_per_epoch(run_dir)
    done_before = killed.state["epochs_done"]
    first_new = next(r for r in records if r["kind"] == "step" and r["time"] >= result.proc.started)
    assert first_new["step"] == done_before * spe + 1 and first_new["epoch"] == done_before + 1
    old = [r for r in records if r["epoch"] <= done_before]
    assert old and all(r["time"] < result.proc.started for r in old), "the killed run's records are kept"
    epochs = [r["epoch"] for r in records if r["kind"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1))

    checkpoint = load(run_dir / runs.CHECKPOINT_MODEL)
    iterations = int(checkpoint.optimizer.iterations.numpy())
    steps_here = sum(1 for r in records if r["kind"] == "step" and r["time"] >= result.proc.started)
    assert iterations == steps[-1], "the optimiser counts every step of the run, before and after the kill"
    assert iterations > steps_here, "the optimiser state came from the checkpoint, not from scratch"
    load(run_dir / runs.MODEL)


def test_a_stop_file_stops_the_run_cleanly(resumed):
    result = resumed["stop-file"]
    status = runs.read_status(result.run_dir)
    assert status["state"] == "stopped" and "STOP file" in status["message"], status
    assert not (result.run_dir / ownership.LOCK).exists()
    state = runs.read_json(result.run_dir / runs.CHECKPOINT_STATE)
    assert status["message"].endswith(f"after epoch {state['epochs_done']}; resume to carry on")


def test_sigterm_stops_the_run_cleanly(resumed):
    result = resumed["sigterm"]
    out, err = result.proc.output()
    assert result.code == 0, result.proc.describe()
    assert "Traceback" not in out + err
    status = runs.read_status(result.run_dir)
    assert status["state"] == "stopped" and "stopped by signal SIGTERM" in status["message"], status
    assert not (result.run_dir / ownership.LOCK).exists()
    load(result.run_dir / runs.CHECKPOINT_MODEL)
    load(result.run_dir / runs.MODEL)


def test_a_full_disk_fails_the_run_clearly_and_keeps_the_previous_models(resumed):
    result = resumed["disk-full"]
    run_dir = result.run_dir
    out, err = result.proc.output()
    assert result.code != 0
    assert "Traceback" not in out + err, result.proc.describe()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], err[-2000:]
    assert "training failed: the disk is full" in out
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and "the disk is full" in status["error"]
    for name, sha in result.before.items():
        assert digest(run_dir / name) == sha, f"{name} changed"
    assert not [p.name for p in run_dir.rglob("*.tmp*")], "a failed save must not leave its temporary file"
    load(run_dir / runs.MODEL)
    load(run_dir / runs.CHECKPOINT_MODEL)


# ----------------------------------------------------------------------------------------------
# A run folder that cannot be written (in-process: nothing is trained)


class ReadOnly:
    """Every write under `folder` fails with EROFS, as on a read-only mount (chmod does not stop root)."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, folder: Path, monkeypatch):
        self.folder = os.path.realpath(folder)
        real = {name: getattr(os, name) for name in ("open", "replace", "rename", "unlink", "remove", "mkdir",
                                                      "rmdir", "chmod")}
        real_open = builtins.open

        def inside(path) -> bool:
            if isinstance(path, int):
                return False
            full = os.path.realpath(os.fspath(path))
            return full == self.folder or full.startswith(self.folder + os.sep)

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        def os_open(path, flags, *args, **kwargs):
            if flags & self.WRITE_FLAGS and inside(path):
                refuse(path)
            return real["open"](path, flags, *args, **kwargs)

        def any_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def two_paths(name):
            def wrapped(src, dst, *args, **kwargs):
                for path in (src, dst):
                    if inside(path):
                        refuse(path)
                return real[name](src, dst, *args, **kwargs)
            return wrapped

        def one_path(name):
            def wrapped(path, *args, **kwargs):
                if inside(path):
                    refuse(path)
                return real[name](path, *args, **kwargs)
            return wrapped

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", any_open)
        monkeypatch.setattr(io, "open", any_open)
        for name in ("replace", "rename"):
            monkeypatch.setattr(os, name, two_paths(name))
        for name in ("unlink", "remove", "mkdir", "rmdir", "chmod"):
            monkeypatch.setattr(os, name, one_path(name))



def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_read_only_run_folder_fails_clearly_and_keeps_everything(killed, tmp_path, monkeypatch, capfd,
                                                                  restore_signals):
    from facetracker.cli import main

    run_dir = tmp_path / "read-only-run"
    shutil.copytree(killed.run_dir, run_dir, symlinks=True)
    (run_dir / ownership.LOCK).unlink(missing_ok=True)
    before = snapshot(run_dir)
    with monkeypatch.context() as patch:
        ReadOnly(run_dir, patch)
        with pytest.raises(OSError):
            (run_dir / "probe").write_text("the simulation must bite")
        code = main(["train", "--resume", "--run-dir", str(run_dir)])
    out, err = capfd.readouterr()
    assert code != 0
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(run_dir) in errors[0], err
    assert "cannot write to the run folder (Read-only file system" in errors[0]
    assert snapshot(run_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the simulation above covers it")
def test_a_run_folder_without_write_permission_fails_clearly(killed, tmp_path, capfd, restore_signals):
    from facetracker.cli import main

    run_dir = tmp_path / "no-permission"
    shutil.copytree(killed.run_dir, run_dir, symlinks=True)
    before = snapshot(run_dir)
    for path in [run_dir, *run_dir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        assert main(["train", "--resume", "--run-dir", str(run_dir)]) != 0
    finally:
        for path in [run_dir, *run_dir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert "cannot write to the run folder" in capfd.readouterr().err
    assert snapshot(run_dir) == before


def test_a_run_folder_under_a_file_fails_clearly(tiny_data, tmp_path, capfd, restore_signals):
    from facetracker.cli import main

    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    code = main(["train", "--data", str(tiny_data), "--run-dir", str(blocker / "run"), *FAULT_TRAIN, "--epochs", "1"])
    out, err = capfd.readouterr()
    assert code != 0 and "Traceback" not in out + err
    assert "cannot make the run folder (Not a directory" in err and str(blocker / "run") in err
    assert blocker.read_text() == "a file where the runs folder should be"


def test_atomic_writes_keep_the_old_file_when_the_disk_fills_mid_write(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    runs.write_json(target, {"state": "running", "epoch": 3})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as raised:
        runs.write_json(target, {"state": "finished", "epoch": 4, "padding": "x" * 100_000})
    assert raised.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"state": "running", "epoch": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_stale_lock_is_taken_over_but_a_live_one_is_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from facetracker.runs import ownership, processes, run_folder as runs; "
                               "ownership.acquire_lock(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
                               str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ownership.RunLocked, match=f"pid {holder.pid}"):
            ownership.acquire_lock(run_dir)
    finally:
        holder.kill()
        holder.wait()
    ownership.acquire_lock(run_dir)
    assert ownership.lock_owner(run_dir) == os.getpid()
    ownership.release_lock(run_dir)
    assert not (run_dir / ownership.LOCK).exists()
