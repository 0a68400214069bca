"""A run asked to stop: a STOP file, Ctrl-C or SIGTERM, agreed across the workers of a cluster."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import tensorflow as tf

from facetracker.runs import run_folder as runs


class StopRequested:
    """Set by SIGTERM or a STOP file; the run then ends cleanly after saving.

    With several workers (`across_workers`) a stop one of them sees must stop them all after the
    same step: a worker that trains on waits in the next step's collectives for the one that left.
    There only `agree`, which every worker calls after every step, changes what `check` says.
    """

    def __init__(self, run_dir: Path, across_workers: bool = False):
        self.run_dir = run_dir
        self.across_workers = across_workers
        self.reason: str | None = None
        self._requested: str | None = None

    def install(self) -> None:
        def handler(signum, frame):
            self._requested = f"stopped by signal {signal.Signals(signum).name}"

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    def _requested_here(self) -> str | None:
        if self._requested is None and (self.run_dir / runs.STOP).exists():
            self._requested = "stopped from the STOP file"
        return self._requested

    def check(self) -> bool:
        if self.reason is None and not self.across_workers:
            self.reason = self._requested_here()
        return self.reason is not None

    def agree(self, strategy) -> bool:
        """`check`, after a step; with several workers, true on all of them when any was asked to stop."""
        if self.reason is None and self.on_any_worker(strategy, self._requested_here() is not None):
            self.reason = self._requested_here() or "stopped because another worker of the cluster was stopped"
        return self.reason is not None

    def on_any_worker(self, strategy, flag: bool) -> bool:
        """Whether `flag` holds on any worker. With several workers this is a collective: each worker
        must call it at the same point of training, as many times."""
        if not self.across_workers:
            return flag

        flags = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(float(flag)))
        return float(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)) > 0
