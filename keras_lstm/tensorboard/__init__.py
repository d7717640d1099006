"""keras_lstm's TensorBoard output: the gates callback, its pictures, and the
LSTM gates dashboard (its data and its TensorBoard plugin)."""

from keras_lstm.tensorboard.callback import GateTensorBoard
from keras_lstm.tensorboard.summary import PLUGIN_NAME, write_gate_dashboard

__all__ = ["PLUGIN_NAME", "GateTensorBoard", "write_gate_dashboard"]
