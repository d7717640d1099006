"""The checkpoint protocol: every finished epoch committed so any kill resumes.

A run's `resume/` folder holds the last finished epoch: its model (with the
optimizer) in `epoch-<n>.keras`, and `state.json`, which names that file and
records the epoch, the best epoch's logs and the wall time. Writing
state.json (by rename, see `atomic`) commits the epoch; best.keras is a copy
of a committed model file, remade on resume if a kill came first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time

import keras

from keras_lstm.experiments import faults
from keras_lstm.experiments.atomic import WriteError, save_atomically, write_json

# The last finished epoch: state.json, and the model (with its optimizer) that
# state.json names. Writing state.json commits an epoch (see RunCheckpoint).
RESUME = "resume"
# Its name in runs written before: the name of TensorFlow's checkpoint state
# file, which TensorBoard's projector looks for beside each folder of logs on
# every page load, warning that it is a directory. --resume renames it.
OLD_RESUME = "checkpoint"
BEST_MODEL = "best.keras"


def rename_old_resume(run_dir: str) -> None:
    """Renames a run's OLD_RESUME folder to RESUME, where there is only the old.

    Called by the process that holds the run's lock, before it reads the
    folder. One rename of a directory within the run folder is atomic: a kill
    leaves the folder under one name or the other, whole, and the next
    --resume reads it under either. Nothing is copied, so nothing can be half
    written. Where both exist, RESUME is the one written last (every epoch is
    committed there) and the old folder is left as it is.
    """
    old, new = os.path.join(run_dir, OLD_RESUME), os.path.join(run_dir, RESUME)
    if os.path.isdir(old) and not os.path.lexists(new):
        try:
            os.rename(old, new)
        except OSError as error:
            raise WriteError(new, error) from error


def resume_folder(run_dir: str) -> str:
    """Where a run's last finished epoch is read from: RESUME, or OLD_RESUME in
    a run that only has the old. A worker that is not the chief reads the run
    as it finds it, before or after the chief renames the folder."""
    new = os.path.join(run_dir, RESUME)
    old = os.path.join(run_dir, OLD_RESUME)
    return old if os.path.isdir(old) and not os.path.isdir(new) else new


def read_state(run_dir: str) -> dict | None:
    """The state of the run's last committed epoch, or None before the first."""
    path = os.path.join(resume_folder(run_dir), "state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_model(run_dir: str, state: dict) -> keras.Model:
    """The model, with its optimizer, of the epoch that `state` commits."""
    return keras.saving.load_model(
        os.path.join(resume_folder(run_dir), _model_file(state))
    )


def recover(run_dir: str, state: dict) -> None:
    """Finishes what a kill after an epoch's commit may have left undone.

    The commit (state.json) comes before best.keras is updated; if the last
    committed epoch is the best, best.keras is written again from its model.
    """
    if state.get("best_epoch") == state["epoch"]:
        _export_best(run_dir, state)
    _tidy(run_dir, state)


def _model_file(state: dict) -> str:
    # Runs saved before state.json named its model kept it as last.keras.
    return state.get("model", "last.keras")


def _export_best(run_dir: str, state: dict, epoch: int | None = None) -> None:
    """Copies the committed model, the best epoch's, to best.keras."""
    source = os.path.join(run_dir, RESUME, _model_file(state))
    save_atomically(
        lambda tmp: shutil.copyfile(source, tmp),
        os.path.join(run_dir, BEST_MODEL),
        crash="best_write",
        epoch=epoch,
    )


def _tidy(run_dir: str, state: dict) -> None:
    """Removes what a kill or an earlier epoch left in the resume folder."""
    folder = os.path.join(run_dir, RESUME)
    keep = {"state.json", _model_file(state)}
    for name in os.listdir(folder):
        if name not in keep:
            # Left for the next epoch's tidying if it cannot be removed now.
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


class RunCheckpoint(keras.callbacks.Callback):
    """Commits every finished epoch: its model, state.json, and best.keras.

    Keras's own callbacks fall short of a run that any kill leaves resumable.
    `BackupAndRestore` overwrites its weights in place, then writes the epoch
    in a second file: a kill between the two resumes the new weights as the old
    epoch (trained twice), a kill during the first leaves no weights at all;
    it also cannot carry our state (best epoch, wall time) and deletes itself
    when fit ends. `ModelCheckpoint(save_best_only=True)` writes best.keras in
    place (a kill truncates it), forgets the best value on resume unless given
    `initial_value_threshold`, and keeps no record of which epoch it saved.
    Here one rename commits an epoch: the model goes to a new file named by
    epoch, then state.json, which names that file, replaces the old one; the
    best model is a copy of a committed model file, remade on resume.

    Args:
        run_dir: The folder the run writes.
        state: The last committed state (`{"epoch": 0}` for a new run),
            updated in place at each commit.
    """

    def __init__(self, run_dir: str, state: dict):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.started = time.time()
        self.epoch = state["epoch"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            faults.crash_at("train_batch", self.epoch)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # counted from 1, as the progress bar counts
        faults.crash_at("epoch_end", done)
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if not all(math.isfinite(v) for v in logs.values()):
            return  # TerminateOnNaN stops the run; keep the last good epoch.
        state = dict(self.state)
        best = logs["val_loss"] < state.get("best_logs", {}).get("val_loss", math.inf)
        if best:
            state["best_logs"] = logs
            state["best_epoch"] = done
        now = time.time()
        state["epoch"] = done
        state["wall_seconds"] = state.get("wall_seconds", 0.0) + now - self.started
        state["model"] = f"epoch-{done}.keras"
        folder = os.path.join(self.run_dir, RESUME)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise WriteError(folder, error) from error
        save_atomically(self.model.save, os.path.join(folder, state["model"]))
        write_json(
            state,
            os.path.join(folder, "state.json"),
            crash="checkpoint_write",
            epoch=done,
        )
        # Committed: what resuming reads is now this epoch.
        self.state.clear()
        self.state.update(state)
        self.started = now
        faults.crash_at("checkpoint_saved", done)
        if best:
            _export_best(self.run_dir, state, done)
        faults.crash_at("best_saved", done)
        _tidy(self.run_dir, state)
