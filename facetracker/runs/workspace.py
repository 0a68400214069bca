"""Where the data root is and what it holds: dataset folders, training runs and their models.

The app reads datasets from and writes runs to one folder, the data root (`FACETRACKER_DATA_ROOT`,
default `./data`); runs live in its `runs` folder. The pages and home screen list these; the
functions read the file system only (no TensorFlow), so listing stays fast however many runs there are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from facetracker.config.jsonconfig import parse_json
from facetracker.config.training import SETTINGS
from facetracker.data.datasets import IMAGE_EXTENSIONS, SPLITS
from facetracker.runs import run_folder as runs

DATA_ROOT_ENV = "FACETRACKER_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
RUNS_FOLDER = "runs"


def data_root() -> Path:
    """The one folder the app reads datasets from and writes runs to (created if missing)."""
    root = Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_root() -> Path:
    """Where training runs live: `<data root>/runs` (created if missing)."""
    folder = data_root() / RUNS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    return [p for p in candidates if runs.is_utf8_name(p.name) and looks_like_dataset(p)]


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
    has_config: bool = False
    early_stopping: int | None = None
    """Epochs without a better validation IoU after which the run stops (0: never; None: not recorded)."""

    @property
    def live(self) -> bool:
        return self.state in runs.ACTIVE_STATES

    @property
    def resumable(self) -> bool:
        """A run with a checkpoint carries on from it; one that ended before its first epoch
        finished starts over from its config.json."""
        return (self.has_checkpoint or self.has_config) and self.state in ("stopped", "failed", "finished",
                                                                           "unknown")


def _checked(value, types: tuple[type, ...]):
    """The value if it has one of the types (a bool is not a number here), else None."""
    return value if isinstance(value, types) and not isinstance(value, bool) else None


def _config_damage(run_dir: Path) -> tuple[dict, str | None]:
    """config.json's fields this summary uses, and why the file cannot be used (None when it can)."""
    try:
        config = parse_json((run_dir / runs.CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:  # a run launched a moment ago writes it first thing
        return {}, None
    except OSError as error:
        return {}, f"{runs.CONFIG} cannot be read ({error.strerror or error})"
    except ValueError:
        return {}, f"{runs.CONFIG} is not valid JSON"
    if not isinstance(config, dict):
        return {}, f"{runs.CONFIG} holds {type(config).__name__}, not an object"
    wanted = {"data": (str,), "backbone": (str,), "preset": (str,), "epochs": (int,), "early_stopping": (int,)}
    for field, types in wanted.items():
        value = config.get(field)
        if value is not None and _checked(value, types) is None:
            return {}, f"{runs.CONFIG}: '{field}' is {json.dumps(value)[:40]}, of the wrong type"
    epochs = config.get("epochs")
    if epochs is not None and epochs not in SETTINGS["epochs"]:  # no run trains, or resumes, with it
        return {}, f"{runs.CONFIG}: 'epochs' is {epochs}, not {SETTINGS['epochs'].describe()}"
    return config, None


def run_summary(run_dir: str | Path) -> RunSummary:
    """What the app lists about a run. A run whose files cannot be read has the state "damaged" and the reason as error."""
    run_dir = Path(run_dir)
    status = runs.read_status(run_dir)  # its fields are type-checked there
    config, damage = _config_damage(run_dir)
    if damage and status.get("state") != "damaged":
        status = {"state": "damaged", "error": damage}
    number = (int, float)
    last_val = status.get("last_val") if isinstance(status.get("last_val"), dict) else {}
    last_val = {k: v for k, v in last_val.items() if _checked(v, number) is not None}
    return RunSummary(
        name=run_dir.name, path=run_dir, state=str(status.get("state", "unknown")),
        data=config.get("data") or _checked(status.get("data"), (str,)), backbone=config.get("backbone"),
        preset=config.get("preset"), epochs=config.get("epochs") or _checked(status.get("epochs"), (int,)),
        epoch=_checked(status.get("epoch"), (int,)), best_val_iou=_checked(status.get("best_val_iou"), number),
        best_epoch=_checked(status.get("best_epoch"), (int,)), last_val=last_val,
        error=_checked(status.get("error"), (str,)), message=_checked(status.get("message"), (str,)),
        has_model=(run_dir / runs.MODEL).is_file(), has_checkpoint=(run_dir / runs.CHECKPOINT_MODEL).is_file(),
        started=_checked(status.get("started"), number), has_config=(run_dir / runs.CONFIG).is_file(),
        early_stopping=config.get("early_stopping"))


def list_run_summaries(runs_root: str | Path) -> list[RunSummary]:
    return [run_summary(p) for p in runs.list_runs(runs_root)]


UNRELIABLE_STATES = ("failed", "damaged")
"""Runs whose model is not offered first: it may be from a run that went wrong."""


def trained_runs(runs_root: str | Path) -> list[RunSummary]:
    """Runs that have saved a model (a finished run, or a live one after its first epoch), newest first."""
    return [summary for summary in list_run_summaries(runs_root) if summary.has_model]
