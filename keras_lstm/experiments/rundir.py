"""Run folders: which folder a run writes, and holding it while it does.

`plan_runs` names each run's folder (new, or the one `--resume` continues)
without writing anything; `open_runs` then creates (or reopens) and locks
them, the last check of a command and its first write. A bad command is
refused before either writes, and what `open_runs` wrote is removed when it
refuses, so a refused command leaves the log directory as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os

try:
    import fcntl
except ImportError:  # Windows: runs are not locked against a second train.py.
    fcntl = None

from keras_lstm import ArgumentError
from keras_lstm.experiments.atomic import WriteError, write_json
from keras_lstm.experiments.config import TrainConfig

LOCK = "lock"  # flock-ed by the train.py writing the run


def run_record(config: TrainConfig, variant: str, layer: str, argv) -> dict:
    """What config.json holds: the settings of one run and its command line."""
    record = dataclasses.asdict(config)
    record["variant"] = variant
    record["layer"] = layer
    record["argv"] = argv
    return record


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


def plan_runs(config: TrainConfig, chief: bool = True) -> dict:
    """`(layer, variant) -> folder` for each run of the command, in its order.

    A worker that is not the chief writes nothing in the log directory: it
    gets the folder of a run it resumes, which the chief holds, to read it,
    and None for a new run.
    """
    return {
        (layer, v): plan_run_dir(config, v, layer) if chief or config.resume else None
        for layer, v in config.runs
    }


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
                write_json(run_record(config, variant, layer, argv), path)
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
