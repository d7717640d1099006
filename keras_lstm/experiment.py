"""One training run: its folder, model, callbacks and results."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time

import keras

from keras_lstm.callbacks import (
    GateTensorBoard,
    TextSamples,
    write_final_metrics,
    write_hparams,
)
from keras_lstm.config import TrainConfig
from keras_lstm.layer import LSTM
from keras_lstm.metrics import bits_per_char
from keras_lstm.tasks import Task

CHECKPOINT = "checkpoint"  # last finished epoch: model, optimizer and state.json
BEST_MODEL = "best.keras"


class NaNLossError(RuntimeError):
    """The loss became NaN; the run stopped with its best model kept."""


def build_model(config: TrainConfig, task: Task, variant: str) -> keras.Model:
    """keras_lstm layers, stacked (and bidirectional if asked), then a Dense head."""
    inputs = keras.Input(task.x_train.shape[1:], name="sequences")
    x = inputs
    for k in range(config.layers):
        lstm = LSTM(
            config.units,
            variant=variant,
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            seed=config.seed + k,
            return_sequences=task.return_sequences or k < config.layers - 1,
            name=f"lstm_{k + 1}",
        )
        if config.bidirectional:
            lstm = keras.layers.Bidirectional(lstm, name=f"bidirectional_{k + 1}")
        x = lstm(x)
    outputs = keras.layers.Dense(task.output_units, name="head")(x)
    model = keras.Model(inputs, outputs, name=f"{task.name}_{variant}")
    optimizer = keras.optimizers.Adam(config.lr, clipnorm=config.clipnorm or None)
    if task.kind == "regression":
        model.compile(optimizer, loss="mse")
    else:
        metrics = ["accuracy"]
        if task.kind == "language_model":
            metrics.append(bits_per_char)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer, loss=loss, metrics=metrics)
    return model


def check_logdir(logdir: str) -> None:
    """Raises unless runs can be written under `logdir` (creates nothing)."""
    path = os.path.abspath(logdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            "Received an invalid value for argument `--logdir`: expected a "
            f"directory that can be written, got {logdir!r} ({existing!r} is not a "
            "writable directory)"
        )


def default_run_name(config: TrainConfig, variant: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    shape = f"u{config.units}x{config.layers}" + ("bi" if config.bidirectional else "")
    return f"{stamp}_{config.task}_{variant}_{shape}_s{config.seed}"


def _repeatable(config: dict) -> dict:
    """The settings that make two commands the same run (epochs may grow)."""
    ignored = ("resume", "run_name", "argv", "epochs")
    return {k: v for k, v in config.items() if k not in ignored}


def _check_same_run(run_dir: str, run_config: dict) -> None:
    """Raises unless the run in `run_dir` was started with these settings."""
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = _repeatable(json.load(f))
    current = _repeatable(run_config)
    differ = [k for k in current if saved.get(k) != current[k]]
    if differ:
        k = differ[0]
        raise ValueError(
            "Received an invalid value for argument `--resume`: expected the "
            f"settings of run {run_dir!r}, but --{k.replace('_', '-')} was "
            f"{saved.get(k)!r} there and is {current[k]!r} now"
        )


def plan_run_dir(config: TrainConfig, variant: str) -> str:
    """The folder of this variant's run: new, or the one to resume.

    Raises a ValueError, creating nothing, when the named run exists and
    `--resume` is not given, or when there is nothing to resume.
    """
    run_config = run_record(config, variant, argv=None)
    if config.run_name is not None:
        name = config.run_name
        if len(config.variants) > 1:
            name = f"{name}_{variant}"
        run_dir = os.path.join(config.logdir, name)
        if config.resume:
            if not os.path.isfile(os.path.join(run_dir, "config.json")):
                raise ValueError(
                    "Received an invalid value for argument `--resume`: expected an "
                    f"existing run to continue, but {run_dir!r} holds none"
                )
            _check_same_run(run_dir, run_config)
        elif os.path.exists(run_dir):
            raise ValueError(
                "Received an invalid value for argument `--run-name`: expected a "
                f"new run name, got {config.run_name!r} ({run_dir!r} exists; add "
                "--resume to continue it)"
            )
        return run_dir
    if config.resume:
        candidates = []
        if os.path.isdir(config.logdir):
            for name in os.listdir(config.logdir):
                path = os.path.join(config.logdir, name, "config.json")
                if os.path.isfile(path):
                    with open(path) as f:
                        saved = json.load(f)
                    if _repeatable(saved) == _repeatable(run_config):
                        candidates.append((os.path.getmtime(path), name))
        if not candidates:
            raise ValueError(
                "Received an invalid value for argument `--resume`: expected a run "
                f"of the same settings in {config.logdir!r}, found none"
            )
        return os.path.join(config.logdir, max(candidates)[1])
    base = os.path.join(config.logdir, default_run_name(config, variant))
    run_dir, n = base, 1
    while os.path.exists(run_dir):
        n += 1
        run_dir = f"{base}-{n}"
    return run_dir


def run_record(config: TrainConfig, variant: str, argv) -> dict:
    record = dataclasses.asdict(config)
    record["variant"] = variant
    record["argv"] = argv
    return record


def _save_atomically(write, path):
    """Writes `path` through a temporary file, so a kill leaves old or new."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(data, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    _save_atomically(write, path)


class RunCheckpoint(keras.callbacks.Callback):
    """Keeps the best model and, after every epoch, what resuming needs."""

    def __init__(self, run_dir: str, state: dict):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if not all(math.isfinite(v) for v in logs.values()):
            return  # TerminateOnNaN stops the run; keep the last good epoch.
        if logs["val_loss"] < self.state.get("best_logs", {}).get("val_loss", math.inf):
            self.state["best_logs"] = logs
            self.state["best_epoch"] = epoch + 1
            _save_atomically(self.model.save, os.path.join(self.run_dir, BEST_MODEL))
        checkpoint = os.path.join(self.run_dir, CHECKPOINT)
        os.makedirs(checkpoint, exist_ok=True)
        _save_atomically(self.model.save, os.path.join(checkpoint, "last.keras"))
        now = time.time()
        self.state["epoch"] = epoch + 1
        self.state["wall_seconds"] = (
            self.state.get("wall_seconds", 0.0) + now - self.started
        )
        self.started = now
        _write_json(self.state, os.path.join(checkpoint, "state.json"))


def run(config: TrainConfig, task: Task, variant: str, run_dir: str, argv) -> dict:
    """Trains one variant in `run_dir` (new or resumed) and returns its metrics."""
    state_path = os.path.join(run_dir, CHECKPOINT, "state.json")
    metrics_path = os.path.join(run_dir, "metrics.json")
    state = None
    if config.resume and os.path.isfile(state_path):
        with open(state_path) as f:
            state = json.load(f)
    if config.resume and os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        if state is None or state["epoch"] >= config.epochs:
            print(
                f"{run_dir} finished {metrics['epochs_run']} epochs already; "
                "a larger --epochs trains on"
            )
            return metrics
    if state is not None:
        # A finished run asked for more epochs, or an interrupted one, goes on.
        # A new seed per resumption, so that resumed epochs get their own order.
        keras.utils.set_random_seed(config.seed + state["epoch"])
        model = keras.saving.load_model(os.path.join(run_dir, CHECKPOINT, "last.keras"))
    else:
        state = {"epoch": 0}
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, task, variant)
        os.makedirs(run_dir, exist_ok=config.resume)
        _write_json(
            run_record(config, variant, argv), os.path.join(run_dir, "config.json")
        )
        write_hparams(
            run_dir, hparams(config, variant, task), trial_id=os.path.basename(run_dir)
        )

    probe = task.x_val[: config.probe_size]
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(run_dir),
        GateTensorBoard(
            os.path.join(run_dir, "gates"),
            probe,
            freq=config.gate_freq,
            step_labels=task.step_labels(probe[0]),
        ),
        RunCheckpoint(run_dir, state),
    ]
    if task.kind == "language_model":
        callbacks.append(
            TextSamples(
                os.path.join(run_dir, "samples"),
                prompts=task.x_val[:3],
                decode=task.decode,
                freq=config.gate_freq,
                seed=config.seed,
            )
        )
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
    losses = history.history.get("loss", [])
    if any(not math.isfinite(v) for v in losses):
        kept = (
            f"best model so far: {os.path.join(run_dir, BEST_MODEL)}"
            if "best_logs" in state
            else "no epoch had a finite validation loss, so no model was kept"
        )
        raise NaNLossError(
            f"the loss became NaN or infinite after epoch {state['epoch']}; the run "
            f"stopped ({kept})"
        )
    metrics = final_metrics(config, task, variant, state)
    write_final_metrics(run_dir, metrics, step=state["epoch"])
    _write_json(metrics, metrics_path)
    return metrics


def hparams(config: TrainConfig, variant: str, task: Task) -> dict:
    return {
        "task": config.task,
        "variant": variant,
        "units": config.units,
        "layers": config.layers,
        "bidirectional": config.bidirectional,
        "dropout": config.dropout,
        "recurrent_dropout": config.recurrent_dropout,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "clipnorm": config.clipnorm,
        "seq_len": int(task.x_train.shape[1]),
        "seed": config.seed,
    }


def final_metrics(config: TrainConfig, task: Task, variant: str, state: dict) -> dict:
    """The best epoch's validation metrics beside the task's trivial baseline."""
    best = state.get("best_logs", {})
    metrics = {
        "task": config.task,
        "variant": variant,
        "val_loss": best.get("val_loss"),
        "baseline_val_loss": task.baseline["val_loss"],
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state["epoch"],
        "wall_seconds": round(state.get("wall_seconds", 0.0), 2),
    }
    if task.kind in ("classification", "sequence_classification", "language_model"):
        metrics["val_accuracy"] = best.get("val_accuracy")
        metrics["baseline_accuracy"] = task.baseline.get("val_accuracy")
    if task.kind == "language_model":
        metrics["val_bits_per_char"] = best.get("val_bits_per_char")
        metrics["baseline_bits_per_char"] = task.baseline["val_bits_per_char"]
    return metrics


def baseline_name(task: Task) -> str:
    """What the baseline is, in words, for the report."""
    if task.name == "npz":
        return (
            "predicting the mean" if task.kind == "regression" else "class frequencies"
        )
    return {
        "adding": "predicting the mean",
        "copy": "the best memoryless guess",
        "order": "chance",
        "text": "character frequencies (unigram)",
    }[task.name]
