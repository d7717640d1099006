"""Quiet start-up for the package's commands."""

import os
import sys


def import_keras_quietly():
    """Imports Keras with TensorFlow's start-up lines kept off stderr.

    Only for the package's commands (`python -m keras_lstm.inspect`), during
    whose start Python sets `sys.argv[0]` to "-m": TensorFlow writes those
    lines to file descriptor 2 as it loads, whatever TF_CPP_MIN_LOG_LEVEL
    says, and a bad command must print one line only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)


if sys.argv[:1] == ["-m"] and "keras" not in sys.modules:
    import_keras_quietly()
