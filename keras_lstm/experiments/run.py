"""One training run, from its folder to its metrics.

`run` orchestrates; each step is another module's job: the model
(`model`), the commit of every epoch and what resuming reads (`checkpoint`),
files written whole (`atomic`), the points where a test may kill the run
(`faults`), and what the run reports (`reporting`, `samples`). The folder
itself is planned, created and locked before (`rundir`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile

import keras

from keras_lstm import GateTensorBoard
from keras_lstm.experiments import checkpoint, faults, reporting
from keras_lstm.experiments.atomic import write_json
from keras_lstm.experiments.checkpoint import BEST_MODEL, RunCheckpoint
from keras_lstm.experiments.config import TrainConfig
from keras_lstm.experiments.model import build_model
from keras_lstm.experiments.samples import TextSamples
from keras_lstm.experiments.tasks import Task, target_names


class NaNLossError(RuntimeError):
    """The loss became NaN; the run stopped with its best model kept."""


def run(
    config: TrainConfig,
    task: Task,
    variant: str,
    layer: str,
    run_dir: str | None,
    argv,
    strategy=None,
    chief: bool = True,
) -> dict:
    """Trains one variant of one layer (see `build_model`) in `run_dir` and
    returns its metrics.

    `run_dir` is new (made by `rundir.open_runs`, with its config.json) or,
    with `config.resume`, a run to continue. The model is built (or loaded)
    inside `strategy.scope()`. A worker that is not the chief (`chief=False`)
    reads the run to resume from `run_dir` (None for a new run) and writes
    nothing there: its logs and checkpoints go to a temporary folder, deleted
    at the end, as TensorFlow's multi-worker Keras guide does.

    Raises:
        NaNLossError: When the loss became NaN or infinite.
        atomic.WriteError: When a file of the run cannot be written; every
            write is atomic, so the last committed epoch is whole.
    """
    faults.check_crash_at()
    if chief:
        return _run(config, task, variant, layer, run_dir, run_dir, strategy)
    out_dir = tempfile.mkdtemp(prefix="keras_lstm_worker_")
    try:
        return _run(config, task, variant, layer, run_dir, out_dir, strategy)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _run(config, task, variant, layer, run_dir, out_dir, strategy) -> dict:
    """`run`, reading the run to resume from `run_dir`, writing to `out_dir`."""
    if run_dir is None:
        run_dir = out_dir
    holder = out_dir == run_dir  # the chief, which writes the run
    state = metrics = None
    if config.resume:
        if holder:
            checkpoint.rename_old_resume(run_dir)
        state = checkpoint.read_state(run_dir)
        metrics = _read_metrics(run_dir)
    if metrics is not None and (state is None or state["epoch"] >= config.epochs):
        reporting.finished_already(run_dir, metrics)
        return metrics

    if state is not None:
        # A finished run asked for more epochs, or an interrupted one, goes on.
        if holder:
            checkpoint.recover(run_dir, state)
        if state["epoch"] >= config.epochs:
            # Killed after its last epoch: only the final metrics are missing.
            return _finish(config, task, variant, layer, state, out_dir)
        # A new seed per resumption, so that resumed epochs get their own order.
        keras.utils.set_random_seed(config.seed + state["epoch"])
        with _scope(strategy):
            model = checkpoint.load_model(run_dir, state)
    else:
        state = {"epoch": 0}
        keras.utils.set_random_seed(config.seed)
        with _scope(strategy):
            model = build_model(config, task, variant, layer)
        reporting.write_hparams(
            out_dir,
            reporting.hparams(config, variant, layer, task),
            trial_id=os.path.basename(run_dir),
        )

    callbacks = _callbacks(config, task, state, out_dir)
    faults.crash_at("before_fit")
    history = model.fit(
        task.x_train,
        task.y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        initial_epoch=state["epoch"],
        validation_data=(task.x_val, task.y_val),
        callbacks=callbacks,
        shuffle=True,
    )
    _check_finite(history, state, run_dir)
    faults.crash_at("last_epoch")
    return _finish(config, task, variant, layer, state, out_dir)


def _read_metrics(run_dir: str) -> dict | None:
    """The metrics.json of a run that finished, or None."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _callbacks(config, task, state, out_dir) -> list[keras.callbacks.Callback]:
    """What watches the run: NaN, Keras's logs, the gates (with the probe's
    targets: what the model answered at each step, and what each unit's removal
    costs), the checkpoint and, for a language model, sampled text."""
    probe = task.x_val[: config.probe_size]
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(out_dir),
        GateTensorBoard(
            os.path.join(out_dir, "gates"),
            probe,
            freq=config.gate_freq,
            labels=[task.step_labels(sequence) for sequence in probe],
            targets=task.y_val[: config.probe_size],
            target_names=target_names(task),
        ),
        RunCheckpoint(out_dir, state),
    ]
    if task.kind == "language_model":
        callbacks.append(
            TextSamples(
                os.path.join(out_dir, "samples"),
                prompts=task.x_val[:3],
                decode=task.decode,
                freq=config.gate_freq,
                seed=config.seed,
            )
        )
    return callbacks


def _check_finite(history, state: dict, run_dir: str) -> None:
    """Raises a NaNLossError if an epoch's loss was not finite."""
    losses = history.history.get("loss", [])
    diverged = [
        e for e, v in zip(history.epoch, losses, strict=True) if not math.isfinite(v)
    ]
    if not diverged:
        return
    kept = (
        f"best model so far: {os.path.join(run_dir, BEST_MODEL)}"
        if "best_logs" in state
        else "no epoch had a finite validation loss, so no model was kept"
    )
    # history.epoch counts from 0; the progress bar and the user from 1.
    raise NaNLossError(
        f"the loss became NaN or infinite in epoch {diverged[0] + 1}; the run "
        f"stopped ({kept})"
    )


def _finish(config, task, variant, layer, state, out_dir) -> dict:
    """Writes the final metrics of a run whose last epoch is committed."""
    metrics = reporting.final_metrics(config, task, variant, layer, state)
    reporting.write_final_metrics(out_dir, metrics, step=state["epoch"])
    faults.crash_at("final_metrics")
    write_json(metrics, os.path.join(out_dir, "metrics.json"), crash="metrics_write")
    return metrics


def _scope(strategy):
    return contextlib.nullcontext() if strategy is None else strategy.scope()
