"""Keras's own tests of LSTM, Bidirectional and StackedRNNCells, passed with
keras_lstm's LSTM and LSTMCell in place of Keras's (tests/keras_swap_plugin.py).

Each runs in a fresh pytest, on this run's backend, from the files Keras ships.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from keras_swap_plugin import SUMMARY_PATTERN

TESTS = Path(__file__).resolve().parent
KERAS_RNN_TESTS = Path(keras.__file__).resolve().parent / "src" / "layers" / "rnn"
TIMEOUT_S = 900  # the slowest, StackedRNNCells on JAX, takes about 2 minutes


def run_with_swap(test_file, cwd):
    """`test_file` through pytest with the swap; returns the exit code, the
    output and how many of ours it constructed, `{"LSTM": n, "LSTMCell": m}`."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "keras_swap_plugin", str(test_file)]
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    found = re.search(SUMMARY_PATTERN, output)
    counts = {"LSTM": int(found[1]), "LSTMCell": int(found[2])} if found else None
    return done.returncode, output, counts


@pytest.mark.parametrize(
    "test_file, ours",
    [
        ("lstm_test.py", "LSTM"),
        ("bidirectional_test.py", "LSTM"),
        # Builds LSTMCells in StackedRNNCells; no LSTM layer.
        ("stacked_rnn_cells_test.py", "LSTMCell"),
    ],
)
def test_keras_tests_pass_with_ours(test_file, ours, tmp_path):
    """Every test in the file passes, and the tests built `ours`: a run that
    built only Keras's classes would prove nothing."""
    code, output, counts = run_with_swap(KERAS_RNN_TESTS / test_file, tmp_path)
    assert code == 0, f"{test_file} failed with keras_lstm:\n{output[-4000:]}"
    assert counts is not None, f"no swap summary:\n{output[-2000:]}"
    assert counts[ours] > 0, counts


def test_the_swap_reaches_what_keras_tests_import(tmp_path):
    """The names Keras's tests use are ours, Keras's own module keeps its LSTM
    (of which ours is an instance), and the plugin counts exactly what was
    constructed (an LSTM builds its cell)."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import keras\n"
        "from keras.src import layers\n"
        "from keras.src.layers.rnn import lstm\n"
        "import keras_lstm\n"
        "\n"
        "def test_probe():\n"
        "    assert layers.LSTM is keras.layers.LSTM is keras_lstm.LSTM\n"
        "    assert layers.LSTMCell is keras.layers.LSTMCell is keras_lstm.LSTMCell\n"
        "    assert lstm.LSTM is not keras_lstm.LSTM\n"
        "    assert isinstance(layers.LSTM(2), lstm.LSTM)\n"
        "    layers.LSTMCell(2)\n"
    )
    code, output, counts = run_with_swap(probe, tmp_path)
    assert code == 0, output[-4000:]
    assert counts == {"LSTM": 1, "LSTMCell": 2}
