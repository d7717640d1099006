"""Files written whole or not at all: a kill leaves the old file or the new.

Every file of a run that a later `--resume` reads (config.json, the epoch's
model and state.json, best.keras, metrics.json) is written to a temporary
file beside it and renamed over it; a rename within one folder is atomic.
A write that fails (disk full, permission lost) raises `WriteError`, which
train.py reports in one line.
"""

from __future__ import annotations

import contextlib
import json
import os

from keras_lstm.experiments import faults


class WriteError(RuntimeError):
    """A file of the run could not be written (disk full, permission lost)."""

    def __init__(self, path: str, error: OSError):
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot write {path} ({self.reason})")


def save_atomically(write, path, crash: str | None = None, epoch=None) -> None:
    """Writes `path` through a temporary file, so a kill leaves old or new.

    Args:
        write: Writes a file at the path it is given (e.g. `model.save`).
        path: The file to write.
        crash: The fault moment (see `faults`) between writing the temporary
            file and renaming it, if a test may kill the process there.
        epoch: The epoch of that moment, counted from 1.

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
            faults.crash_at(crash, epoch)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise WriteError(path, error) from error


def write_json(data, path, crash: str | None = None, epoch=None) -> None:
    """Writes `data` as indented JSON with sorted keys, atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    save_atomically(write, path, crash, epoch)
