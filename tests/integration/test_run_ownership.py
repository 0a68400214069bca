"""Who owns a run folder: a recorded pid is never trusted on its own, and the run lock has one owner.

After a kill -9 the dead trainer's pid can be given to any other process. These tests put a live,
unrelated process (a `sleep`) behind such a pid and check that the run is not taken for live and
that Force stop leaves the process alone. The race tests release several processes at once on one
run folder, with and without a stale lock, and count the owners.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facetracker.runs import launcher, ownership, processes
from facetracker.runs import run_folder as runs

RACE_PROCESSES = 4
RACE_TRIALS = 40


@pytest.fixture
def unrelated_process():
    """A live process that has nothing to do with training, as a reused pid would name."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def stale_run(run_dir: Path, pid: int, *, start=None) -> Path:
    """A run folder as a trainer killed with kill -9 leaves it, its recorded pid now someone else's."""
    run_dir.mkdir(parents=True)
    (run_dir / runs.CONFIG).write_text("{}")
    (run_dir / ownership.LOCK).write_text(f"{pid}\n" if start is None else f"{pid} {start}\n")
    status = {"state": "running", "pid": pid, "epoch": 2, "epochs": 5}
    if start is not None:
        status["pid_start"] = start
    runs.write_json(run_dir / runs.STATUS, status)
    return run_dir


def still_running(process: subprocess.Popen, seconds: float = 1.0) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.parametrize("recorded_start", ["none", "another process's"])
def test_a_stale_run_naming_a_reused_pid_is_not_live_and_force_stop_spares_that_process(
        tmp_path, unrelated_process, recorded_start):
    real_start = processes.process_start_time(unrelated_process.pid)
    assert real_start is not None
    start = None if recorded_start == "none" else real_start + 1  # the dead trainer started at another time
    run_dir = stale_run(tmp_path / "runs" / "killed", unrelated_process.pid, start=start)

    assert ownership.lock_owner(run_dir) is None
    assert launcher.live_pid(run_dir) is None
    assert launcher.live_runs(tmp_path / "runs") == []
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and "ended without finishing" in status["error"]

    assert launcher.stop_run(run_dir, force=True) == "killed is not running"
    assert launcher.stop_run(run_dir) == "killed is not running"
    assert still_running(unrelated_process), "Force stop must never signal a process that is not the run's"

    # and the stale lock does not keep a new trainer out
    ownership.acquire_lock(run_dir)
    try:
        assert ownership.lock_owner(run_dir) == os.getpid()
    finally:
        ownership.release_lock(run_dir)
    assert not (run_dir / ownership.LOCK).exists()


def test_signal_process_checks_the_start_time_before_it_signals(unrelated_process):
    start = processes.process_start_time(unrelated_process.pid)
    assert not processes.signal_process(unrelated_process.pid, start + 1, signal.SIGTERM)
    assert not processes.signal_process(unrelated_process.pid, None, signal.SIGTERM)
    assert still_running(unrelated_process, 0.5)
    assert processes.signal_process(unrelated_process.pid, start, signal.SIGTERM)
    assert unrelated_process.wait(timeout=10) == -signal.SIGTERM


def test_a_launched_process_owns_the_run_lock_before_it_takes_it_over_and_force_stop_ends_it(tmp_path):
    run_dir = tmp_path / "runs" / "starting"
    run_dir.mkdir(parents=True)
    pid = launcher._spawn(run_dir, [sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        status = runs.read_json(run_dir / runs.STATUS)
        assert status["pid"] == pid and status["pid_start"] == processes.process_start_time(pid)
        assert ownership.lock_owner(run_dir) == pid and launcher.live_pid(run_dir) == pid
        assert ownership.owner_is_starting(run_dir)
        with pytest.raises(ownership.RunLocked):  # nobody else can take the run meanwhile
            ownership.acquire_lock(run_dir)
        assert runs.read_status(run_dir)["state"] == "starting"
        assert "before training began" in launcher.stop_run(run_dir, force=True)
        assert not processes.pid_alive(pid)
        assert runs.read_status(run_dir)["state"] == "stopped"
    finally:
        if processes.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_lock_holder_is_live_for_its_whole_life_and_free_once_it_dies(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from facetracker.runs import ownership, processes, run_folder as runs; ownership.acquire_lock(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(120)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert ownership.lock_owner(run_dir) == holder.pid and launcher.live_pid(run_dir) == holder.pid
        with pytest.raises(ownership.RunLocked, match=f"pid {holder.pid}"):
            ownership.acquire_lock(run_dir)
        holder.kill()  # as kill -9 does: no clean-up, run.lock stays behind
        holder.wait()
        assert (run_dir / ownership.LOCK).exists()
        assert ownership.lock_owner(run_dir) is None and launcher.live_pid(run_dir) is None
        ownership.acquire_lock(run_dir)
        assert ownership.lock_owner(run_dir) == os.getpid()
        ownership.release_lock(run_dir)
    finally:
        holder.kill()
        holder.wait()


def _contend(run_dir: str, start: multiprocessing.Barrier, decided: multiprocessing.Barrier,
             owners: multiprocessing.Queue) -> None:
    start.wait()
    try:
        ownership.acquire_lock(run_dir)
        won = True
    except ownership.RunLocked:
        won = False
    owners.put(won)
    decided.wait()  # the owner holds the lock until every contender has tried
    if won:
        ownership.release_lock(run_dir)


def race(tmp_path: Path, trials: int, stale_pid: int | None) -> list[int]:
    """Owners per trial when RACE_PROCESSES processes take one run folder's lock at the same instant."""
    context = multiprocessing.get_context("fork")
    counts = []
    for trial in range(trials):
        run_dir = tmp_path / f"{'stale' if stale_pid else 'fresh'}-{trial}"
        run_dir.mkdir()
        if stale_pid:
            (run_dir / ownership.LOCK).write_text(str(stale_pid))
        start, decided = context.Barrier(RACE_PROCESSES), context.Barrier(RACE_PROCESSES)
        owners = context.Queue()
        workers = [context.Process(target=_contend, args=(str(run_dir), start, decided, owners))
                   for _ in range(RACE_PROCESSES)]
        for worker in workers:
            worker.start()
        results = [owners.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        counts.append(sum(results))
    return counts


@pytest.mark.parametrize("stale", [False, True], ids=["no-lock", "stale-lock"])
def test_processes_released_at_once_on_one_run_folder_make_exactly_one_owner(tmp_path, monkeypatch, stale):
    monkeypatch.setattr(runs, "LOCK_RETRY_S", 0.02, raising=False)  # the contenders are forked with it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    began = time.monotonic()
    counts = race(tmp_path, RACE_TRIALS, dead.pid if stale else None)
    summary = {n: counts.count(n) for n in sorted(set(counts))}
    print(f"\n{RACE_PROCESSES} processes, {RACE_TRIALS} trials, {'stale lock' if stale else 'no lock'}: "
          f"owners per trial -> trials {summary} ({time.monotonic() - began:.1f} s)")
    assert counts == [1] * RACE_TRIALS, f"owners per trial: {summary}"


def test_a_process_recording_its_own_pid_records_its_start_time_beside_it(tmp_path):
    runs.update_status(tmp_path, state="starting", pid=os.getpid())
    status = runs.read_json(tmp_path / runs.STATUS)
    assert status["pid_start"] == processes.process_start_time(os.getpid()) is not None
    assert ownership.owner_process(tmp_path) is None, "a status file alone makes no process the run's owner"


def test_force_stop_signals_the_lock_holder_itself(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from facetracker.runs import ownership, processes, run_folder as runs; ownership.acquire_lock(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(120)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert "asked run to stop" in launcher.stop_run(run_dir)
        assert (run_dir / runs.STOP).exists() and still_running(holder, 0.3)
        assert f"sent SIGTERM to run (process {holder.pid})" in launcher.stop_run(run_dir, force=True)
        assert holder.wait(timeout=10) == -signal.SIGTERM
        assert launcher.live_pid(run_dir) is None
    finally:
        holder.kill()
        holder.wait()


HOLDER = ("import os, sys, time; from facetracker.runs import ownership, processes, run_folder as runs; ownership.acquire_lock(sys.argv[1]); "
          "runs.update_status(sys.argv[1], state='running', pid=os.getpid(), epoch=1, epochs=5); "
          "print('locked', flush=True); time.sleep(120)")


@pytest.mark.parametrize("force", [False, True], ids=["stop", "force-stop"])
def test_stop_on_a_copy_of_a_live_run_folder_leaves_the_original_running(tmp_path, force):
    """`cp -r` of a run while it trains copies run.lock and status.json (pid and start time), never the lock."""
    original = tmp_path / "runs" / "live"
    original.mkdir(parents=True)
    (original / runs.CONFIG).write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(original)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        copy = tmp_path / "backup" / "live"
        shutil.copytree(original, copy)
        copied = runs.read_json(copy / runs.STATUS)
        assert copied["pid"] == holder.pid and copied["pid_start"] == processes.process_start_time(holder.pid)

        assert ownership.owner_process(copy) is None and launcher.live_pid(copy) is None
        assert runs.read_status(copy)["state"] == "failed"  # a copy trains nothing
        assert launcher.stop_run(copy, force=force) == "live is not running"
        assert still_running(holder), "Stop on the copy must not signal the original's trainer"
        assert not (original / runs.STOP).exists()
        assert launcher.live_pid(original) == holder.pid and runs.read_status(original)["state"] == "running"
    finally:
        holder.kill()
        holder.wait()


def test_stop_on_a_copy_of_a_run_still_starting_leaves_the_original_running(tmp_path):
    original = tmp_path / "runs" / "starting"
    original.mkdir(parents=True)
    pid = launcher._spawn(original, [sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        copy = tmp_path / "backup" / "starting"
        shutil.copytree(original, copy)
        assert launcher.stop_run(copy, force=True) == "starting is not running"
        assert launcher.stop_run(copy) == "starting is not running"
        time.sleep(0.5)
        assert processes.is_same_process(pid, processes.process_start_time(pid)) and launcher.live_pid(original) == pid
        assert "before training began" in launcher.stop_run(original)
        assert not processes.pid_alive(pid)
    finally:
        if processes.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_lock_hard_linked_into_another_folder_does_not_make_that_folder_live(tmp_path):
    """`cp -al` shares run.lock's inode, and so its lock: the lock names the folder it was taken in."""
    original = tmp_path / "runs" / "live"
    original.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(original)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        linked = tmp_path / "linked"
        linked.mkdir()
        os.link(original / ownership.LOCK, linked / ownership.LOCK)
        shutil.copy(original / runs.STATUS, linked / runs.STATUS)
        assert ownership.lock_held(linked) and ownership.owner_process(linked) is None
        assert launcher.stop_run(linked, force=True) == "linked is not running"
        assert still_running(holder)
        assert ownership.lock_owner(original) == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_the_launched_trainer_takes_over_the_lock_the_launcher_took_for_it(tmp_path):
    """`train` calls acquire_lock: in a launched process it takes over the inherited lock (no second
    lock is waited for), and from then on Stop asks it through the STOP file instead of signalling it."""
    run_dir = tmp_path / "runs" / "handed-over"
    run_dir.mkdir(parents=True)
    taker = ("import sys, time; from facetracker.runs import ownership, processes, run_folder as runs; ownership.acquire_lock(sys.argv[1]); "
             "print('taken', flush=True); time.sleep(120)")
    pid = launcher._spawn(run_dir, [sys.executable, "-c", taker, str(run_dir)])
    try:
        deadline = time.monotonic() + 60
        while "taken" not in (run_dir / runs.LOG).read_text().splitlines() and time.monotonic() < deadline:
            assert processes.pid_alive(pid), (run_dir / runs.LOG).read_text()
            time.sleep(0.05)
        assert ownership.lock_owner(run_dir) == pid and not ownership.owner_is_starting(run_dir)
        assert "asked handed-over to stop" in launcher.stop_run(run_dir)
        assert (run_dir / runs.STOP).exists() and processes.pid_alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
