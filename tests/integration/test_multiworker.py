"""Two real worker processes train one model with MultiWorkerMirroredStrategy, on CPU, on localhost.

Both workers are given the same run folder, as on machines sharing a disk: only the chief (worker 0)
may write there. The other worker keeps its own files in a temporary folder and deletes it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from facetracker.data.images import model_input, read_image
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TRAIN_PHOTOS, VAL_PHOTOS, BATCH = 24, 6, 8
WORKER_TIMEOUT_S = 240
GRACE_S = 60


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for port 0, all held open together so they differ."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def small_dataset(webcam, tmp_path_factory):
    """The first photos of each split of webcam-tutorial, with their label files."""
    root = tmp_path_factory.mktemp("multiworker-data") / "faces"
    for split, count in (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for image in sorted((webcam / split / "images").iterdir())[:count]:
            shutil.copy2(image, root / split / "images" / image.name)
            label = webcam / split / "labels" / f"{image.stem}.json"
            if label.exists():
                shutil.copy2(label, root / split / "labels" / label.name)
    return root


def run_two_workers(base, *train_args, while_running=lambda run_dir: None):
    """Start worker 0 and worker 1 on the run folder `base/run` and wait for both; returns (pid, exit code,
    stdout, stderr) per worker. `while_running(run_dir)` is called every half second while they train."""
    run_dir = base / "run"
    cluster = [f"localhost:{port}" for port in free_ports(2)]
    workers = []
    for index in range(2):
        worker_tmp = base / f"tmp-worker{index}"  # each worker's own TMPDIR, to see what it leaves behind
        worker_tmp.mkdir(exist_ok=True)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(worker_tmp),
               "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "facetracker", "train", "--run-dir", run_dir, *train_args]
        logs = [open(base / f"worker{index}.{stream}", "w") for stream in ("out", "err")]
        workers.append(subprocess.Popen(list(map(str, command)), cwd=REPO, env=env, stdout=logs[0], stderr=logs[1]))
        for log in logs:
            log.close()
    started, first_exit = time.time(), None
    try:
        # A worker that ends (or dies) early leaves the other waiting for it in a collective forever:
        # stop at the first failure, and give the others a short grace once one has exited.
        while any(w.poll() is None for w in workers) and time.time() - started < WORKER_TIMEOUT_S:
            if any(w.poll() not in (None, 0) for w in workers):
                break
            if first_exit is None and any(w.poll() is not None for w in workers):
                first_exit = time.time()
            if first_exit is not None and time.time() - first_exit > GRACE_S:
                break
            while_running(run_dir)
            time.sleep(0.5)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return [(w.pid, w.returncode, (base / f"worker{i}.out").read_text(), (base / f"worker{i}.err").read_text())
            for i, w in enumerate(workers)]


def fresh_run(dataset, epochs: int) -> list:
    return ["--data", dataset, "--backbone", "mobilenet-0.25", "--weights", "none", "--epochs", epochs,
            "--batch-size", BATCH, "--copies", "1", "--strategy", "multiworker"]


def report(results) -> str:
    return "\n".join(f"--- worker {index} exited {code}:\n{out[-2000:]}\n{err[-2000:]}"
                     for index, (_, code, out, err) in enumerate(results))


@pytest.fixture(scope="module")
def two_worker_run(small_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("multiworker")
    return base / "run", base, run_two_workers(base, *fresh_run(small_dataset, epochs=1))


def test_both_workers_finish(two_worker_run):
    _, _, results = two_worker_run
    assert [code for _, code, _, _ in results] == [0, 0], report(results)
    assert all("finished" in out for _, _, out, _ in results), report(results)


def test_only_the_chief_writes_the_run_folder(two_worker_run):
    run_dir, base, results = two_worker_run
    chief_pid = results[0][0]
    status = runs.read_status(run_dir)
    assert status["state"] == "finished" and status["pid"] == chief_pid
    assert status["n_train"] == TRAIN_PHOTOS and status["n_val"] == VAL_PHOTOS
    steps_per_epoch = -(-TRAIN_PHOTOS // BATCH)
    records = runs.read_metrics(run_dir)
    # One writer: each global step and the epoch are recorded once, not once per worker.
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, steps_per_epoch + 1))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]
    assert runs.read_json(run_dir / runs.CHECKPOINT_STATE)["epochs_done"] == 1
    assert ownership.lock_owner(run_dir) is None  # released by its only holder
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []
    # The other worker's temporary run folder is gone once it is done.
    assert list((base / "tmp-worker1").iterdir()) == []


def test_the_saved_model_loads_and_predicts(two_worker_run, small_dataset):
    run_dir, _, _ = two_worker_run
    from facetracker.nn.model import load_model

    model = load_model(run_dir / runs.MODEL)
    photo = sorted((small_dataset / "val" / "images").iterdir())[0]
    output = model(model_input(read_image(photo), 120)[None].astype(np.float32)).numpy()
    assert output.shape == (1, 5) and np.isfinite(output).all()
    assert 0.0 <= output[0, 0] <= 1.0


@pytest.fixture(scope="module")
def stopped_run(small_dataset, tmp_path_factory):
    """Only the chief sees the STOP file; a worker left training would wait for it forever."""
    def stop_once_training(run_dir):
        if runs.read_status(run_dir).get("state") == "running" and not (run_dir / runs.STOP).exists():
            (run_dir / runs.STOP).write_text("stop\n")

    base = tmp_path_factory.mktemp("multiworker-stop")
    return base, run_two_workers(base, *fresh_run(small_dataset, epochs=3), while_running=stop_once_training)


def test_a_stop_file_stops_every_worker_at_the_same_step(stopped_run):
    base, results = stopped_run
    assert [code for _, code, _, _ in results] == [0, 0], report(results)
    status = runs.read_status(base / "run")
    assert status["state"] == "stopped" and "STOP file" in status["message"], status
    assert status["pid"] == results[0][0]
    assert [r["epoch"] for r in runs.read_metrics(base / "run") if r["kind"] == "epoch"] != [1, 2, 3]
    assert "stopped" in results[1][2], report(results)


def test_a_stopped_run_resumes_on_every_worker(stopped_run):
    """The other worker starts from the chief's checkpoint too, through its own temporary folder."""
    base, _ = stopped_run
    done_before = runs.read_json(base / "run" / runs.CHECKPOINT_STATE)["epochs_done"]
    results = run_two_workers(base, "--resume", "--epochs", done_before + 1)
    assert [code for _, code, _, _ in results] == [0, 0], report(results)
    status = runs.read_status(base / "run")
    assert status["state"] == "finished" and status["pid"] == results[0][0]
    assert [r["epoch"] for r in runs.read_metrics(base / "run") if r["kind"] == "epoch"] == \
        list(range(1, done_before + 2))
    assert runs.read_json(base / "run" / runs.CHECKPOINT_STATE)["epochs_done"] == done_before + 1
    assert list((base / "tmp-worker1").iterdir()) == []


def test_workers_share_out_each_pass_over_the_images():
    """Seeded alike, each worker draws only its own images of a pass, and together they draw every image once."""
    from facetracker.config.training import TrainConfig
    from facetracker.nn.pipeline import image_order

    count, copies = 12, 2
    config = TrainConfig(copies=copies, seed=3)
    whole = [int(i) for i in image_order(count, config).take(count * copies)]
    shares = [[int(i) for i in image_order(count, config, shard=(2, index)).take(count * copies // 2)]
              for index in (0, 1)]
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2]
    assert sorted(shares[0] + shares[1]) == sorted(list(range(count)) * copies)


def test_the_chief_is_the_chief_task_or_else_worker_0(monkeypatch):
    from facetracker.config.jsonconfig import ConfigError
    from facetracker.nn.distribution import is_chief

    def cluster(task_type: str, index: int, chief: bool = False) -> str:
        tasks = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if chief else {})}
        return json.dumps({"cluster": tasks, "task": {"type": task_type, "index": index}})

    for tf_config, chief in [(cluster("worker", 0), True), (cluster("worker", 1), False),
                             (cluster("worker", 0, chief=True), False), (cluster("chief", 0, chief=True), True)]:
        monkeypatch.setenv("TF_CONFIG", tf_config)
        assert is_chief("multiworker") is chief, tf_config
        assert is_chief("default") is True  # one process: it writes its run folder
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        is_chief("multiworker")
