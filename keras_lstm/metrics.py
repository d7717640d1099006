"""Metrics that models saved by train.py refer to, registered for loading."""

import math

import keras


@keras.saving.register_keras_serializable(package="keras_lstm")
def bits_per_char(y_true, y_pred):
    """Cross-entropy of next-character logits in bits (nats / ln 2)."""
    loss = keras.losses.sparse_categorical_crossentropy(
        y_true, y_pred, from_logits=True
    )
    return loss / math.log(2)
