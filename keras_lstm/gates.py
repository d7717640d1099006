"""Gate inspection: what every gate of every keras_lstm layer did, step by step."""

from __future__ import annotations

import keras
import numpy as np

from keras_lstm.layer import LSTM


def lstm_layers(model_or_layer) -> dict[str, LSTM]:
    """Every keras_lstm layer inside `model_or_layer`, keyed by the name gates get.

    Stacked layers, nested models and both directions of a
    `keras.layers.Bidirectional` (`<name>/forward`, `<name>/backward`) are found.
    """
    found = {}

    def visit(layer, key):
        if isinstance(layer, LSTM):
            found[key] = layer
        elif isinstance(layer, keras.layers.Bidirectional):
            visit(layer.forward_layer, f"{key}/forward")
            visit(layer.backward_layer, f"{key}/backward")
        for child in getattr(layer, "layers", ()):
            visit(child, child.name if key is None else f"{key}/{child.name}")

    # A model's own name is left out of its layers' keys; nested models' are kept.
    if isinstance(model_or_layer, (LSTM, keras.layers.Bidirectional)):
        visit(model_or_layer, model_or_layer.name)
    else:
        visit(model_or_layer, None)
    return found


def gate_activations(
    model_or_layer, inputs, mask=None
) -> dict[str, dict[str, np.ndarray]]:
    """Runs `model_or_layer` on `inputs` and returns what every LSTM gate did.

    Args:
        model_or_layer: A Keras model (Sequential, functional or subclassed, with
            keras_lstm layers anywhere inside, nested models and `Bidirectional`
            included), a `keras_lstm.LSTM` or a `Bidirectional` around one.
        inputs: What the model is called on, e.g. a batch of sequences.
        mask: Optional boolean `(batch, time)` mask passed to the call.

    Returns:
        `{layer_key: {gate: array}}`, one entry per keras_lstm layer: the layer's
        name (`<name>/forward` and `<name>/backward` for a `Bidirectional`,
        `<model>/<name>` inside a nested model). Gates `input_gate`,
        `forget_gate`, `output_gate`, `candidate`, `cell_state` and
        `hidden_state` are float arrays `(batch, time, units)`, with the time
        axis in input order (also for `go_backwards` layers); a gate the variant
        removes holds its constant. `mask` is a boolean `(batch, time)`: `False`
        marks masked steps, where the layer repeats its previous output and
        states, so statistics should leave them out.

    The call runs in inference mode (no dropout) and leaves stateful layers'
    states as they were.
    """
    layers = lstm_layers(model_or_layer)
    if not layers:
        raise ValueError(
            "Received an invalid value for argument `model_or_layer`: expected a "
            f"model or layer containing keras_lstm.LSTM layers, got {model_or_layer!r}"
        )
    saved_states = {
        key: [keras.ops.convert_to_numpy(v.value) for v in layer.states]
        for key, layer in layers.items()
        if layer.stateful and layer.states is not None
    }
    for layer in layers.values():
        layer._gate_record = []
    try:
        kwargs = {} if mask is None else {"mask": mask}
        model_or_layer(inputs, training=False, **kwargs)
        records = {key: layer._gate_record for key, layer in layers.items()}
    finally:
        for layer in layers.values():
            layer._gate_record = None
        for key, values in saved_states.items():
            for variable, value in zip(layers[key].states, values, strict=True):
                variable.assign(value)
    # A layer called more than once in the model (shared weights) reports its
    # first call.
    return {key: record[0] for key, record in records.items() if record}


# Karpathy, Johnson and Fei-Fei 2015: a gate is saturated below 0.1 or above 0.9.
LEFT_SATURATED = 0.1
RIGHT_SATURATED = 0.9
SIGMOID_GATES = ("input_gate", "forget_gate", "output_gate")


def unmasked_values(gates: dict[str, np.ndarray], gate: str) -> np.ndarray:
    """The gate's values at the steps the mask keeps, shape `(steps, units)`."""
    return gates[gate][gates["mask"]]


def saturation(
    gates: dict[str, np.ndarray], gate: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the fractions of kept steps left- and right-saturated.

    Returns:
        `(left, right)`, each of shape `(units,)`: the fraction of kept steps
        (all sequences of the batch) at which the unit is below 0.1, resp. above
        0.9. Forget gates right-saturated most of the time are the units that
        remember for long (Karpathy, Johnson and Fei-Fei 2015).
    """
    values = unmasked_values(gates, gate)
    if len(values) == 0:
        units = gates[gate].shape[-1]
        return np.zeros(units), np.zeros(units)
    left = np.mean(values < LEFT_SATURATED, axis=0)
    right = np.mean(values > RIGHT_SATURATED, axis=0)
    return left, right
