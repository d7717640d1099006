"""A NumPy LSTM written from the cell docstring's equations, in float64.

The reference the cell, the layer and the gate inspection are compared with.
"""

import numpy as np

import keras_lstm

EPS = 1e-5
EPS32 = float(np.finfo(np.float32).eps)


def assert_close_normwise(actual, expected, k, err_msg=""):
    """Within k float32 roundings of the tensor's largest value: the rounding of a
    sum (a matmul, a gradient summed over steps) scales with its largest terms."""
    expected = np.asarray(expected, np.float64)
    atol = k * EPS32 * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=err_msg)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _layer_norm(a, gamma, beta, groups, units):
    # (batch, groups*units), normalised per group over its units, biased variance.
    a = a.reshape(a.shape[0], groups, units)
    a = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + EPS)
    return a.reshape(a.shape[0], groups * units) * gamma + beta


def reference_step(variant, w, x, h_prev, c_prev):
    """One step of the equations; `w` maps weight names to float64 arrays."""
    units = h_prev.shape[-1]
    u_x = x @ w["kernel"]
    w_h = h_prev @ w["recurrent_kernel"]
    if variant == "layer_norm":
        u_x = _layer_norm(u_x, w["input_norm_gamma"], w["input_norm_beta"], 4, units)
        w_h = _layer_norm(
            w_h, w["recurrent_norm_gamma"], w["recurrent_norm_beta"], 4, units
        )
    z = u_x + w_h + w["bias"]
    z_i, z_f, z_g, z_o = (z[:, k * units : (k + 1) * units] for k in range(4))
    if variant == "peephole":
        p = w["peephole"]
        p_i, p_f, p_o = p[:units], p[units : 2 * units], p[2 * units :]
        z_i = z_i + p_i * c_prev
        z_f = z_f + p_f * c_prev
    one = np.ones_like(c_prev)
    i = one if variant == "no_input_gate" else sigmoid(z_i)
    if variant == "cifg":
        f = 1.0 - i
    elif variant == "no_forget_gate":
        f = one
    else:
        f = sigmoid(z_f)
    g = z_g if variant == "no_input_activation" else np.tanh(z_g)
    c = f * c_prev + i * g
    if variant == "peephole":
        z_o = z_o + p_o * c
    o = one if variant == "no_output_gate" else sigmoid(z_o)
    if variant == "layer_norm":
        h = o * np.tanh(
            _layer_norm(c, w["cell_norm_gamma"], w["cell_norm_beta"], 1, units)
        )
    elif variant == "no_output_activation":
        h = o * c
    else:
        h = o * np.tanh(c)
    return {
        "input_gate": i,
        "forget_gate": f,
        "candidate": g,
        "output_gate": o,
        "cell_state": c,
        "hidden_state": h,
    }


def reference_sequence(variant, w, x, h0=None, c0=None):
    """The equations over `x` (batch, time, features); gates (batch, time, units)."""
    units = w["recurrent_kernel"].shape[0]
    h = np.zeros((x.shape[0], units)) if h0 is None else h0
    c = np.zeros((x.shape[0], units)) if c0 is None else c0
    steps = []
    for t in range(x.shape[1]):
        gates = reference_step(variant, w, x[:, t], h, c)
        h, c = gates["hidden_state"], gates["cell_state"]
        steps.append(gates)
    return {k: np.stack([s[k] for s in steps], axis=1) for k in steps[0]}


def reference_gates(variant, w, x, mask=None, go_backwards=False, h0=None, c0=None):
    """What `gate_activations` reports for one cell, from the equations.

    x (batch, time, features); mask (batch, time) or None; h0, c0 (batch,
    units), zeros if None. The cell reads the real steps in reading order (from
    the end under `go_backwards`). A masked step shows the last real step before
    it in reading order; before the first real step, the gates are zeros and the
    states the initial states. Returns `{gate: (batch, time, units)}` in input
    order.
    """
    batch, time, _ = x.shape
    units = w["recurrent_kernel"].shape[0]
    mask = np.ones((batch, time), bool) if mask is None else mask
    h0 = np.zeros((batch, units)) if h0 is None else h0
    c0 = np.zeros((batch, units)) if c0 is None else c0
    gates = {name: np.zeros((batch, time, units)) for name in keras_lstm.GATES}
    for b in range(batch):
        h, c = h0[b : b + 1], c0[b : b + 1]
        shown = {name: np.zeros(units) for name in keras_lstm.GATES}
        shown.update(hidden_state=h[0], cell_state=c[0])
        for t in reversed(range(time)) if go_backwards else range(time):
            if mask[b, t]:
                step = reference_step(variant, w, x[b : b + 1, t], h, c)
                h, c = step["hidden_state"], step["cell_state"]
                shown = {name: value[0] for name, value in step.items()}
            for name in keras_lstm.GATES:
                gates[name][b, t] = shown[name]
    return gates


def named_weights(layer):
    """`{name: float64 array}` of a layer's or a cell's weights."""
    return {v.name: np.asarray(v.numpy(), dtype="float64") for v in layer.weights}
