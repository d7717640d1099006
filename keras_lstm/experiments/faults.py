"""Kills on purpose: the moments at which a test can stop a run with SIGKILL.

A run must resume, with `--resume`, from a kill at any moment. Each place
where a kill would leave something different on disk calls `crash_at` with
its moment; setting KERAS_LSTM_CRASH_AT=<moment>[:<epoch>] makes that call
kill the process (the epoch counts from 1; without one, the first), so that
a test reproduces `kill -9` there instead of hoping to hit it by timing.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "KERAS_LSTM_CRASH_AT"
CRASH_MOMENTS = {
    "before_fit": "the model is built (or loaded); no epoch has started",
    "train_batch": "after the epoch's first training step",
    "epoch_end": "the epoch is trained and validated; its checkpoint not begun",
    "checkpoint_write": "the epoch's model file is written and state.json is in "
    "its temporary file: the rename that commits the epoch is not done",
    "checkpoint_saved": "the epoch is committed; best.keras not yet updated",
    "best_write": "best.keras is in its temporary file, not renamed",
    "best_saved": "best.keras is updated; the checkpoint's older files remain",
    "last_epoch": "fit returned after the last epoch; no final metrics written",
    "final_metrics": "the final metrics are in TensorBoard; metrics.json not",
    "metrics_write": "metrics.json is in its temporary file, not renamed",
}


def crash_at(moment: str, epoch: int | None = None) -> None:
    """SIGKILLs this process if KERAS_LSTM_CRASH_AT names this moment."""
    name, _, at = os.environ.get(CRASH_AT, "").partition(":")
    if name == moment and (epoch is None or epoch == int(at or 1)):
        os.kill(os.getpid(), signal.SIGKILL)


def check_crash_at() -> None:
    """Raises a ValueError for a KERAS_LSTM_CRASH_AT that names no moment, so a
    mistyped one fails the test that set it instead of never firing."""
    spec = os.environ.get(CRASH_AT)
    if not spec:
        return
    name, _, at = spec.partition(":")
    if name not in CRASH_MOMENTS or not (at == "" or at.isdigit()):
        raise ValueError(
            f"Received an invalid value for {CRASH_AT}: expected <moment>[:<epoch>] "
            f"with a moment from {', '.join(CRASH_MOMENTS)}, got {spec!r}"
        )
