"""One training run: its folder, model, callbacks and results."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import keras

try:
    import fcntl
except ImportError:  # Windows: runs are not locked against a second train.py.
    fcntl = None

from keras_lstm import (
    LSTM,
    VARIANTS,
    ArgumentError,
    GateTensorBoard,
    bits_per_char,
)
from keras_lstm.experiments.config import LAYERS, PRECISIONS, STRATEGIES, TrainConfig
from keras_lstm.experiments.reporting import (
    TextSamples,
    write_final_metrics,
    write_hparams,
)
from keras_lstm.experiments.tasks import TASKS, Task

# The last finished epoch: state.json, and the model (with its optimizer) that
# state.json names. Writing state.json commits an epoch (see RunCheckpoint).
RESUME = "resume"
# Its name in runs written before: the name of TensorFlow's checkpoint state
# file, which TensorBoard's projector looks for beside each folder of logs on
# every page load, warning that it is a directory. --resume renames it.
OLD_RESUME = "checkpoint"
BEST_MODEL = "best.keras"
LOCK = "lock"  # flock-ed by the train.py writing the run
# Below this many validation sequences the report warns that small differences
# from the baseline may be chance (an accuracy's standard error can exceed 0.05).
FEW_VALIDATION_SEQUENCES = 100


# The moments at which KERAS_LSTM_CRASH_AT=<moment>[:<epoch>] kills this process
# with SIGKILL, so that a test can reproduce a kill at each (the epoch counts from
# 1; without one, the first). The run must resume from each with --resume.
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


def _crash_at(moment: str, epoch: int | None = None) -> None:
    """SIGKILLs this process if KERAS_LSTM_CRASH_AT names this moment."""
    name, _, at = os.environ.get(CRASH_AT, "").partition(":")
    if name == moment and (epoch is None or epoch == int(at or 1)):
        os.kill(os.getpid(), signal.SIGKILL)


def _check_crash_at() -> None:
    spec = os.environ.get(CRASH_AT)
    if not spec:
        return
    name, _, at = spec.partition(":")
    if name not in CRASH_MOMENTS or not (at == "" or at.isdigit()):
        raise ValueError(
            f"Received an invalid value for {CRASH_AT}: expected <moment>[:<epoch>] "
            f"with a moment from {', '.join(CRASH_MOMENTS)}, got {spec!r}"
        )


class NaNLossError(RuntimeError):
    """The loss became NaN; the run stopped with its best model kept."""


class WriteError(RuntimeError):
    """A file of the run could not be written (disk full, permission lost)."""

    def __init__(self, path: str, error: OSError):
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot write {path} ({self.reason})")


def layer_name(kind: str, k: int) -> str:
    """The name of the k-th (from 1) layer of a kind: lstm, lstm_2, lstm_3, ...

    Fixed names, not Keras's counters, so that a layer's TensorBoard tags do not
    depend on what else the process built, and the first layer is `lstm` in
    every run, however deep.
    """
    return kind if k == 1 else f"{kind}_{k}"


def build_model(
    config: TrainConfig, task: Task, variant: str, layer: str = "keras_lstm"
) -> keras.Model:
    """LSTM layers, stacked (and bidirectional if asked), then a Dense head.

    `layer` picks the LSTM: "keras_lstm" (`keras_lstm.LSTM` of `variant`) or
    "keras" (`keras.layers.LSTM`, whose variant is standard), given the same
    options. The layers are named `lstm`, `lstm_2`, ... or, bidirectional,
    `bidirectional`, `bidirectional_2`, ... (see `layer_name`); a resumed run
    keeps them. The LSTM layers compute in `config.precision`, the head in
    float32 (Keras's advice for mixed precision: a float16 softmax or loss
    loses precision). Under a distribution strategy, call this inside
    `strategy.scope()`.
    """
    inputs = keras.Input(task.x_train.shape[1:], name="sequences")
    x = inputs
    for k in range(1, config.layers + 1):
        options = dict(
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            seed=config.seed + k - 1,
            return_sequences=task.return_sequences or k < config.layers,
            name=layer_name("lstm", k),
            dtype=config.precision,
        )
        if layer == "keras":
            lstm = keras.layers.LSTM(config.units, **options)
        else:
            lstm = LSTM(config.units, variant=variant, **options)
        if config.bidirectional:
            lstm = keras.layers.Bidirectional(
                lstm, name=layer_name("bidirectional", k), dtype=config.precision
            )
        x = lstm(x)
    outputs = keras.layers.Dense(task.output_units, name="head", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"{task.name}_{variant}")
    optimizer = keras.optimizers.Adam(config.lr, clipnorm=config.clipnorm or None)
    if config.precision == "mixed_float16":
        # float16 gradients underflow to 0 unless the loss is scaled up first.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    if task.kind == "regression":
        model.compile(optimizer, loss="mse")
    else:
        metrics = ["accuracy"]
        if task.kind == "language_model":
            metrics.append(bits_per_char)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer, loss=loss, metrics=metrics)
    return model


def check_model(config: TrainConfig, task: Task) -> None:
    """Raises an ArgumentError for a model that would read its own targets."""
    if config.bidirectional and task.causal:
        raise ArgumentError(
            "bidirectional",
            f"a model that reads forward only, for task {task.name!r}: the input "
            "at step t+1 is the target at step t, which the backward direction "
            "would read",
            repr(config.bidirectional),
        )


def default_run_name(config: TrainConfig, variant: str, layer: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    lstm = f"keras_{variant}" if layer == "keras" else variant
    shape = f"u{config.units}x{config.layers}" + ("bi" if config.bidirectional else "")
    return f"{stamp}_{config.task}_{lstm}_{shape}_s{config.seed}"


def _repeatable(config: dict) -> dict:
    """The settings that make two commands the same run (epochs may grow)."""
    # Where a run trains does not change what it computes: a run started on
    # one device may go on under --strategy mirrored, and back.
    ignored = ("resume", "run_name", "argv", "epochs", "strategy", "devices")
    # A run saved before a setting existed ran with its default.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    config = {**defaults, **config}
    return {k: v for k, v in config.items() if k not in ignored}


def _read_config(path: str) -> dict | None:
    """A run's config.json, or None if it cannot be read."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _check_same_run(run_dir: str, run_config: dict) -> None:
    """Raises unless the run in `run_dir` was started with these settings."""
    saved = _read_config(os.path.join(run_dir, "config.json"))
    if saved is None:
        raise ArgumentError(
            "resume",
            "a run with a readable config.json",
            f"{run_dir!r}, whose config.json is not valid JSON",
        )
    saved, current = _repeatable(saved), _repeatable(run_config)
    differ = [k for k in current if saved.get(k) != current[k]]
    if differ:
        k = differ[0]
        raise ArgumentError(
            "resume",
            f"the settings of run {run_dir!r}",
            f"--{k.replace('_', '-')} {current[k]!r}, where the run has "
            f"{saved.get(k)!r}",
        )


def plan_run_dir(config: TrainConfig, variant: str, layer: str) -> str:
    """The folder of the run of this variant and layer: new, or the one to resume.

    Raises an ArgumentError, creating nothing, when the named run exists and
    `--resume` is not given, or when there is nothing to resume.
    """
    run_config = run_record(config, variant, layer, argv=None)
    if config.run_name is not None:
        # In a sweep, <run-name>_<what the runs differ in>.
        name = config.run_name
        if len({v for _, v in config.runs}) > 1:
            name = f"{name}_{variant}"
        if len({lstm for lstm, _ in config.runs}) > 1:
            name = f"{name}_{layer}"
        run_dir = os.path.join(config.logdir, name)
        if config.resume:
            if not os.path.isfile(os.path.join(run_dir, "config.json")):
                raise ArgumentError(
                    "resume",
                    "an existing run to continue",
                    f"{run_dir!r}, which holds none",
                )
            _check_same_run(run_dir, run_config)
        elif os.path.exists(run_dir):
            raise ArgumentError(
                "run_name",
                "a new run name",
                f"{config.run_name!r} ({run_dir!r} exists; add --resume to "
                "continue it)",
            )
        return run_dir
    if config.resume:
        candidates = []
        if os.path.isdir(config.logdir):
            for name in os.listdir(config.logdir):
                path = os.path.join(config.logdir, name, "config.json")
                saved = _read_config(path) if os.path.isfile(path) else None
                if saved is not None and _repeatable(saved) == _repeatable(run_config):
                    candidates.append((os.path.getmtime(path), name))
        if not candidates:
            raise ArgumentError(
                "resume",
                f"a run of the same settings in {config.logdir!r} to continue",
                "none there",
            )
        return os.path.join(config.logdir, max(candidates)[1])
    base = os.path.join(config.logdir, default_run_name(config, variant, layer))
    run_dir, n = base, 1
    while os.path.exists(run_dir):
        n += 1
        run_dir = f"{base}-{n}"
    return run_dir


def run_record(config: TrainConfig, variant: str, layer: str, argv) -> dict:
    record = dataclasses.asdict(config)
    record["variant"] = variant
    record["layer"] = layer
    record["argv"] = argv
    return record


def open_runs(
    config: TrainConfig, run_dirs: dict[tuple[str, str], str], argv
) -> contextlib.ExitStack:
    """Creates (with --resume: reopens) each run folder and locks it; the last
    check of a command, and its first write.

    Creating the folders is what proves that they can be created and written
    (a permission check cannot: root passes it for /proc). A new run's
    config.json is written here. Each folder's `lock` file is held with an
    exclusive `flock` while this process runs, so a second train.py on the same
    run is refused instead of writing into it; the system releases the lock when
    the process ends, however it ends (kill -9 included).

    Returns:
        An ExitStack holding the locks; closing it releases them.

    Raises:
        ArgumentError: For `logdir` when a folder cannot be created or written,
            for `run_name` (or `resume`) when another process holds a run. What
            this call wrote is removed first: a refused command leaves nothing.
    """
    argument = "resume" if config.run_name is None else "run_name"
    locks = contextlib.ExitStack()
    undo = contextlib.ExitStack()  # what this call wrote, last first
    try:
        for (layer, variant), run_dir in run_dirs.items():
            if not config.resume:
                _make_run_dir(run_dir, undo)
            fd = _lock(run_dir, argument, undo)
            locks.callback(os.close, fd)
            if not config.resume:
                path = os.path.join(run_dir, "config.json")
                _write_json(run_record(config, variant, layer, argv), path)
                undo.callback(os.remove, path)
    except (OSError, WriteError) as error:
        locks.close()
        undo.close()
        if isinstance(error, WriteError):
            reason, path = error.reason, error.path
        else:
            reason, path = error.strerror, error.filename
        raise ArgumentError(
            "logdir",
            "a directory in which run folders can be created and written",
            f"{config.logdir!r} ({reason}: {path!r})",
        ) from None
    except BaseException:
        locks.close()
        undo.close()
        raise
    undo.pop_all()
    return locks


def _make_run_dir(run_dir: str, undo: contextlib.ExitStack) -> None:
    """Creates `run_dir`, which must be new, and its missing parents."""
    missing, parent = [], os.path.dirname(os.path.abspath(run_dir))
    while not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for path in reversed(missing):
        os.mkdir(path)
        undo.callback(os.rmdir, path)
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        raise ArgumentError(
            "run_name",
            "a run folder that no other train.py creates at the same time",
            repr(run_dir),
        ) from None
    undo.callback(os.rmdir, run_dir)


def _lock(run_dir: str, argument: str, undo: contextlib.ExitStack) -> int:
    """Opens <run_dir>/lock, holds an exclusive flock on it and writes our pid."""
    path = os.path.join(run_dir, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        undo.callback(os.remove, path)
    except FileExistsError:
        fd = os.open(path, os.O_RDWR)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                raise ArgumentError(
                    argument,
                    "a run that no other train.py is writing",
                    f"{run_dir!r} (process {holder or '?'} is writing it)",
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _save_atomically(write, path, crash: str | None = None, epoch=None):
    """Writes `path` through a temporary file, so a kill leaves old or new.

    Raises:
        WriteError: When the file cannot be written; the temporary file is
            removed and `path` is as it was.
    """
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    try:
        # A temporary file left by a kill is written anew, never appended to.
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        write(tmp)
        if crash:
            _crash_at(crash, epoch)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise WriteError(path, error) from error


def _write_json(data, path, crash: str | None = None, epoch=None):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    _save_atomically(write, path, crash, epoch)


def _model_file(state: dict) -> str:
    # Runs saved before state.json named its model kept it as last.keras.
    return state.get("model", "last.keras")


def _export_best(run_dir: str, state: dict, epoch: int | None = None) -> None:
    """Copies the committed model, the best epoch's, to best.keras."""
    source = os.path.join(run_dir, RESUME, _model_file(state))
    _save_atomically(
        lambda tmp: shutil.copyfile(source, tmp),
        os.path.join(run_dir, BEST_MODEL),
        crash="best_write",
        epoch=epoch,
    )


def _tidy_checkpoint(run_dir: str, state: dict) -> None:
    """Removes what a kill or an earlier epoch left in the resume folder."""
    folder = os.path.join(run_dir, RESUME)
    keep = {"state.json", _model_file(state)}
    for name in os.listdir(folder):
        if name not in keep:
            # Left for the next epoch's tidying if it cannot be removed now.
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


def _rename_old_resume(run_dir: str) -> None:
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


def _resume_folder(run_dir: str) -> str:
    """Where a run's last finished epoch is read from: RESUME, or OLD_RESUME in
    a run that only has the old. A worker that is not the chief reads the run
    as it finds it, before or after the chief renames the folder."""
    new = os.path.join(run_dir, RESUME)
    old = os.path.join(run_dir, OLD_RESUME)
    return old if os.path.isdir(old) and not os.path.isdir(new) else new


def _recover(run_dir: str, state: dict) -> None:
    """Finishes what a kill after an epoch's commit may have left undone.

    The commit (state.json) comes before best.keras is updated; if the last
    committed epoch is the best, best.keras is written again from its model.
    """
    if state.get("best_epoch") == state["epoch"]:
        _export_best(run_dir, state)
    _tidy_checkpoint(run_dir, state)


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
            _crash_at("train_batch", self.epoch)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1  # counted from 1, as the progress bar counts
        _crash_at("epoch_end", done)
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
        _save_atomically(self.model.save, os.path.join(folder, state["model"]))
        _write_json(
            state,
            os.path.join(folder, "state.json"),
            crash="checkpoint_write",
            epoch=done,
        )
        # Committed: what resuming reads is now this epoch.
        self.state.clear()
        self.state.update(state)
        self.started = now
        _crash_at("checkpoint_saved", done)
        if best:
            _export_best(self.run_dir, state, done)
        _crash_at("best_saved", done)
        _tidy_checkpoint(self.run_dir, state)


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

    `run_dir` is new (made by `open_runs`, with its config.json) or, with
    `config.resume`, a run to continue. The model is built (or loaded) inside
    `strategy.scope()`. A worker that is not the chief (`chief=False`) reads
    the run to resume from `run_dir` (None for a new run) and writes nothing
    there: its logs and checkpoints go to a temporary folder, deleted at the
    end, as TensorFlow's multi-worker Keras guide does.
    """
    _check_crash_at()
    try:
        if chief:
            return _run(config, task, variant, layer, run_dir, run_dir, strategy)
        out_dir = tempfile.mkdtemp(prefix="keras_lstm_worker_")
        try:
            return _run(config, task, variant, layer, run_dir, out_dir, strategy)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    except WriteError as error:
        # Like a logdir that cannot be written before the run (exit code 2), but
        # found during it. Every write is atomic, so the last checkpoint is whole.
        print(
            f"train.py: error: {error}; the run stopped, its last finished epoch "
            "is kept (--resume continues it)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def _run(config, task, variant, layer, run_dir, out_dir, strategy) -> dict:
    """`run`, reading the run to resume from `run_dir`, writing to `out_dir`."""
    if run_dir is None:
        run_dir = out_dir
    if config.resume and out_dir == run_dir:
        _rename_old_resume(run_dir)
    state_path = os.path.join(_resume_folder(run_dir), "state.json")
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
        if out_dir == run_dir:
            _recover(run_dir, state)
        if state["epoch"] >= config.epochs:
            # Killed after its last epoch: only the final metrics are missing.
            return _finish(config, task, variant, layer, state, out_dir)
        # A new seed per resumption, so that resumed epochs get their own order.
        keras.utils.set_random_seed(config.seed + state["epoch"])
        with _scope(strategy):
            model = keras.saving.load_model(
                os.path.join(_resume_folder(run_dir), _model_file(state))
            )
    else:
        state = {"epoch": 0}
        keras.utils.set_random_seed(config.seed)
        with _scope(strategy):
            model = build_model(config, task, variant, layer)
        write_hparams(
            out_dir,
            hparams(config, variant, layer, task),
            trial_id=os.path.basename(run_dir),
            choices=HPARAM_CHOICES,
            shown=HPARAMS_SHOWN,
        )

    probe = task.x_val[: config.probe_size]
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(out_dir),
        GateTensorBoard(
            os.path.join(out_dir, "gates"),
            probe,
            freq=config.gate_freq,
            labels=[task.step_labels(sequence) for sequence in probe],
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
    _crash_at("before_fit")
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
    diverged = [
        e for e, v in zip(history.epoch, losses, strict=True) if not math.isfinite(v)
    ]
    if diverged:
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
    _crash_at("last_epoch")
    return _finish(config, task, variant, layer, state, out_dir)


def _finish(config, task, variant, layer, state, out_dir) -> dict:
    """Writes the final metrics of a run whose last epoch is committed."""
    metrics = final_metrics(config, task, variant, layer, state)
    write_final_metrics(out_dir, metrics, step=state["epoch"])
    _crash_at("final_metrics")
    _write_json(metrics, os.path.join(out_dir, "metrics.json"), crash="metrics_write")
    return metrics


def _scope(strategy):
    return contextlib.nullcontext() if strategy is None else strategy.scope()


# Every value of the string hparams. TensorBoard reads one run's list of
# hparams for the whole log directory, so each lists what any run can record.
HPARAM_CHOICES = {
    "task": TASKS,
    "variant": VARIANTS,
    "layer": LAYERS,
    "strategy": STRATEGIES,
    "precision": PRECISIONS,
}
# Shown first in the HParams dashboard: what tells the runs of a sweep, or of
# a log directory, apart.
HPARAMS_SHOWN = ("task", "variant", "layer")


def hparams(config: TrainConfig, variant: str, layer: str, task: Task) -> dict:
    return {
        "task": config.task,
        "variant": variant,
        "layer": layer,
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
        # Where and how precisely the run started; --resume may change where.
        "strategy": config.strategy,
        "precision": config.precision,
    }


def final_metrics(
    config: TrainConfig, task: Task, variant: str, layer: str, state: dict
) -> dict:
    """The best epoch's validation metrics beside the task's trivial baseline."""
    best = state.get("best_logs", {})
    metrics = {
        "task": config.task,
        "variant": variant,
        "layer": layer,
        "val_loss": best.get("val_loss"),
        "baseline_val_loss": task.baseline["val_loss"],
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state["epoch"],
        "val_sequences": len(task.x_val),
        "wall_seconds": round(state.get("wall_seconds", 0.0), 2),
    }
    if task.kind in ("classification", "sequence_classification", "language_model"):
        metrics["val_accuracy"] = best.get("val_accuracy")
        metrics["baseline_accuracy"] = task.baseline.get("val_accuracy")
    if task.kind == "language_model":
        metrics["val_bits_per_char"] = best.get("val_bits_per_char")
        metrics["baseline_bits_per_char"] = task.baseline["val_bits_per_char"]
    return metrics


def baseline_name(task: Task, metric: str) -> str:
    """What scores a metric's baseline, in words, for the report."""
    return task.baseline_names[metric]
