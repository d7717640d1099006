"""keras_lstm: an LSTM for Keras 3 that shows its work."""

# First: the package's commands import Keras quietly (see there).
from keras_lstm import _quiet  # noqa: F401
from keras_lstm._checks import ArgumentError
from keras_lstm.ablation import ablate
from keras_lstm.cell import GATES, VARIANTS, LSTMCell
from keras_lstm.gates import gate_activations
from keras_lstm.layer import LSTM
from keras_lstm.metrics import bits_per_char
from keras_lstm.tensorboard import GateTensorBoard, write_gate_dashboard

__all__ = [
    "ArgumentError",
    "GATES",
    "LSTM",
    "GateTensorBoard",
    "LSTMCell",
    "VARIANTS",
    "ablate",
    "bits_per_char",
    "gate_activations",
    "write_gate_dashboard",
]
__version__ = "0.1.0"
