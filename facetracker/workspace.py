"""What a data root holds: dataset folders, training runs and the models they made.

The app's pages and home screen list these; the functions read the file system only (no
TensorFlow), so listing stays fast however many runs there are.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from facetracker import runs
from facetracker.data import IMAGE_EXTENSIONS, SPLITS

RUNS_FOLDER = "runs"


def looks_like_dataset(folder: str | Path) -> bool:
    """A folder with images/, labels/, annotations/, split folders, or images right inside it."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if any((folder / name).is_dir() for name in ("images", "labels", "annotations", *SPLITS)):
        return True
    try:
        with os.scandir(folder) as entries:
            return any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries)
    except OSError:
        return False


def list_datasets(data_root: str | Path) -> list[Path]:
    """Dataset folders directly under the data root (not the runs folder), by name."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    try:
        candidates = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.name != RUNS_FOLDER)
    except OSError:
        return []
    return [p for p in candidates if _is_utf8(p.name) and looks_like_dataset(p)]


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8: no page, JSON file or browser can show it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class RunSummary:
    name: str
    path: Path
    state: str
    data: str | None
    backbone: str | None
    preset: str | None
    epochs: int | None
    epoch: int | None
    best_val_iou: float | None
    best_epoch: int | None
    last_val: dict
    error: str | None
    message: str | None
    has_model: bool
    has_checkpoint: bool
    started: float | None

    @property
    def live(self) -> bool:
        return self.state in runs.ACTIVE_STATES

    @property
    def resumable(self) -> bool:
        return self.has_checkpoint and self.state in ("stopped", "failed", "finished", "unknown")


def run_summary(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    status = runs.read_status(run_dir)
    config = runs.read_json(run_dir / runs.CONFIG, {}) or {}
    if not isinstance(config, dict):
        config = {}
    last_val = status.get("last_val") if isinstance(status.get("last_val"), dict) else {}
    return RunSummary(
        name=run_dir.name, path=run_dir, state=str(status.get("state", "unknown")),
        data=config.get("data") or status.get("data"), backbone=config.get("backbone"),
        preset=config.get("preset"), epochs=config.get("epochs") or status.get("epochs"),
        epoch=status.get("epoch"), best_val_iou=status.get("best_val_iou"), best_epoch=status.get("best_epoch"),
        last_val=last_val, error=status.get("error"), message=status.get("message"),
        has_model=(run_dir / runs.MODEL).is_file(), has_checkpoint=(run_dir / runs.CHECKPOINT_MODEL).is_file(),
        started=status.get("started"))


def list_run_summaries(runs_root: str | Path) -> list[RunSummary]:
    from facetracker.launcher import run_folders

    return [run_summary(p) for p in run_folders(runs_root)]


def trained_runs(runs_root: str | Path) -> list[RunSummary]:
    """Runs that have saved a model (a finished run, or a live one after its first epoch), newest first."""
    return [summary for summary in list_run_summaries(runs_root) if summary.has_model]
