"""A pytest plugin that runs Keras's own RNN tests with keras_lstm's LSTM.

Load it with `-p keras_swap_plugin` (this folder on `PYTHONPATH`). Before
collection it puts `keras_lstm.LSTM` where Keras's tests find `LSTM`:
`keras.src.layers.LSTM` (their `from keras.src import layers`; none imports
the name directly) and `keras.layers.LSTM`; and `keras_lstm.LSTMCell` where
they find `LSTMCell`, which is all the StackedRNNCells tests build. Keras's
own module `keras.src.layers.rnn.lstm` keeps its classes: Bidirectional's
isinstance checks refer to its `LSTM`, and ours, a subclass, must pass them.

At the end it prints how many of ours were constructed (SUMMARY), so that a
run that never built one shows it.
"""

import functools

import keras
import keras.src.layers

import keras_lstm

SUMMARY = "keras_swap: constructed {LSTM} LSTM, {LSTMCell} LSTMCell of keras_lstm"
SUMMARY_PATTERN = r"keras_swap: constructed (\d+) LSTM, (\d+) LSTMCell of keras_lstm"

constructed = {"LSTM": 0, "LSTMCell": 0}


def _count_constructions(cls):
    """Counts `cls(...)` calls in `constructed`. Through `__new__`: Keras reads
    a layer's config off the signature of its `__init__`, which must stay."""
    if "__new__" in vars(cls):
        return
    new = cls.__new__

    @functools.wraps(new)
    def __new__(subclass, *args, **kwargs):
        constructed[cls.__name__] += 1
        return new(subclass, *args, **kwargs)

    cls.__new__ = staticmethod(__new__)


def pytest_configure(config):
    """The swap, before any test module is imported."""
    for name in constructed:
        ours = getattr(keras_lstm, name)
        _count_constructions(ours)
        setattr(keras.src.layers, name, ours)
        setattr(keras.layers, name, ours)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(SUMMARY.format(**constructed))
