"""The model a run trains: LSTM layers and a Dense head, compiled for the task.

Built from a `TrainConfig` and a `Task` alone, so that `--resume`, a sweep and
a benchmark build the same model from the same settings.
"""

from __future__ import annotations

import keras

from keras_lstm import LSTM, ArgumentError, bits_per_char
from keras_lstm.experiments.config import TrainConfig
from keras_lstm.experiments.tasks import Task


def layer_name(kind: str, k: int) -> str:
    """The name of the k-th (from 1) layer of a kind: lstm, lstm_2, lstm_3, ...

    Fixed names, not Keras's counters, so that a layer's TensorBoard tags do not
    depend on what else the process built, and the first layer is `lstm` in
    every run, however deep.
    """
    return kind if k == 1 else f"{kind}_{k}"


def build_model(
    config: TrainConfig, task: Task, variant: str, layer: str = "keras_lstm"
) -> keras.Model:
    """LSTM layers, stacked (and bidirectional if asked), then a Dense head.

    `layer` picks the LSTM: "keras_lstm" (`keras_lstm.LSTM` of `variant`) or
    "keras" (`keras.layers.LSTM`, whose variant is standard), given the same
    options. The layers are named `lstm`, `lstm_2`, ... or, bidirectional,
    `bidirectional`, `bidirectional_2`, ... (see `layer_name`); a resumed run
    keeps them. The LSTM layers compute in `config.precision`, the head in
    float32 (Keras's advice for mixed precision: a float16 softmax or loss
    loses precision). Under a distribution strategy, call this inside
    `strategy.scope()`.
    """
    inputs = keras.Input(task.x_train.shape[1:], name="sequences")
    x = inputs
    for k in range(1, config.layers + 1):
        options = dict(
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            seed=config.seed + k - 1,
            return_sequences=task.return_sequences or k < config.layers,
            name=layer_name("lstm", k),
            dtype=config.precision,
        )
        if layer == "keras":
            lstm = keras.layers.LSTM(config.units, **options)
        else:
            lstm = LSTM(config.units, variant=variant, **options)
        if config.bidirectional:
            lstm = keras.layers.Bidirectional(
                lstm, name=layer_name("bidirectional", k), dtype=config.precision
            )
        x = lstm(x)
    outputs = keras.layers.Dense(task.output_units, name="head", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"{task.name}_{variant}")
    optimizer = keras.optimizers.Adam(config.lr, clipnorm=config.clipnorm or None)
    if config.precision == "mixed_float16":
        # float16 gradients underflow to 0 unless the loss is scaled up first.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    if task.kind == "regression":
        model.compile(optimizer, loss="mse")
    else:
        metrics = ["accuracy"]
        if task.kind == "language_model":
            metrics.append(bits_per_char)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer, loss=loss, metrics=metrics)
    return model


def check_model(config: TrainConfig, task: Task) -> None:
    """Raises an ArgumentError for a model that would read its own targets."""
    if config.bidirectional and task.causal:
        raise ArgumentError(
            "bidirectional",
            f"a model that reads forward only, for task {task.name!r}: the input "
            "at step t+1 is the target at step t, which the backward direction "
            "would read",
            repr(config.bidirectional),
        )
