"""keras_lstm's TensorBoard output: the gates callback and its pictures."""

from keras_lstm.tensorboard.callback import GateTensorBoard

__all__ = ["GateTensorBoard"]
