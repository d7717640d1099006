"""Quiet start-up for the package's commands (and train.py)."""

import contextlib
import os
import sys


@contextlib.contextmanager
def stderr_silenced():
    """File descriptor 2 goes to /dev/null inside the block.

    TensorFlow writes its start-up lines there as it loads, whatever
    TF_CPP_MIN_LOG_LEVEL says; a bad command must print one line only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)


# The package's commands (`python -m keras_lstm.inspect`): while Python starts
# one, it sets sys.argv[0] to "-m", and the package imports Keras first.
if sys.argv[:1] == ["-m"] and "keras" not in sys.modules:
    with stderr_silenced():
        import keras  # noqa: F401
