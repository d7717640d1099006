"""On a GPU: `keras_lstm.LSTM` against `keras.layers.LSTM`, numbers and speed.

LSTM(128) -> Dense(1), sequences of 100 steps of 32 features, batches of 64, on
each installed Keras backend, each in a fresh process. Our model gets the
weights of Keras's. Checks, max |ours - Keras| / max(1, max |Keras|) <= 1e-4:
`predict`, the gradients of an MSE loss with respect to the LSTM's weights (the
backend's own autodiff), `predict` of a `Bidirectional` of each, and every gate
of `keras_lstm.gate_activations`. Speed, medians of `--repeats` alternations
after a warm-up: `model.fit` steps/s (Adam, MSE), predict batches/s (plain and
`Bidirectional`), `gate_activations` against `predict` on the same sequences;
the last column is ours / Keras's. Exits 1 if a check fails; prints one line
and exits 0 if no backend sees a GPU. (`--allow-cpu`, hidden, runs it all on
the CPU, to test the script: there our layer runs its own CPU kernels.)

    python benchmarks/gpu.py --backends jax,torch --repeats 5
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

BATCH, TIME, FEATURES, UNITS, BATCHES, CHECKED = 64, 100, 32, 128, 16, 256
TOLERANCE = 1e-4
BACKENDS = ("tensorflow", "jax", "torch")
OURS, KERAS = "keras_lstm.LSTM", "keras.layers.LSTM"


def gpu_name(backend):
    """The name of the backend's first GPU, or None if it sees none."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", gpus[0].name)
    elif backend == "jax":
        import jax

        if jax.default_backend() == "gpu":
            return jax.devices()[0].device_kind
    else:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return None


def deviation(ours, theirs):
    """max |ours - theirs| / max(1, max |theirs|), over paired arrays."""
    import numpy as np

    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
        worst = max(worst, np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))
    return float(worst)


def lstm_gradients(model, x, y):
    """d mean((model(x) - y)^2) / d (the LSTM's weights), as numpy arrays."""
    import keras

    lstm_weights = model.layers[0].trainable_variables  # Sequential lists them first
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def loss(outputs):
        return keras.ops.mean((outputs - y) ** 2)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(model(x, training=True))
        grads = tape.gradient(value, lstm_weights)
    elif keras.backend.backend() == "jax":
        import jax

        def stateless_loss(trainable, non_trainable):
            outputs, _ = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return loss(outputs)

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        grads = jax.grad(stateless_loss)(trainable, non_trainable)[: len(lstm_weights)]
    else:
        for v in lstm_weights:
            v.value.grad = None
        loss(model(x, training=True)).backward()
        grads = [v.value.grad for v in lstm_weights]
    return [keras.ops.convert_to_numpy(g) for g in grads]


def child(backend, repeats, allow_cpu):
    """In a fresh process with KERAS_BACKEND set: what the backend's GPU gives."""
    device = gpu_name(backend)
    if device is None and not allow_cpu:
        return {"gpu": None}
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm.layer import sequence_kernel

    if device is None:
        from gates_cost import cpu_description

        device = f"CPU ({cpu_description()})"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * BATCHES, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH * BATCHES, 1)).astype("float32")

    def pair(wrap):
        """{layer name: model}, ours with the weights of Keras's."""
        models = {}
        for name, lstm in ((KERAS, keras.layers.LSTM), (OURS, keras_lstm.LSTM)):
            keras.utils.set_random_seed(0)
            layers = [keras.Input((TIME, FEATURES)), wrap(lstm(UNITS))]
            models[name] = keras.Sequential(layers + [keras.layers.Dense(1)])
        models[OURS].set_weights(models[KERAS].get_weights())
        return models

    plain, bidi = pair(lambda layer: layer), pair(keras.layers.Bidirectional)

    def predict(model, data=x):
        return model.predict(data, batch_size=BATCH, verbose=0)

    def gates(model, data=x):
        return keras_lstm.gate_activations(model, data, batch_size=BATCH)

    def all_gates(model):  # the two layers' names differ: their gates in order
        found = gates(model, x[:CHECKED]).values()
        return [a for layer in found for gate, a in layer.items() if gate != "mask"]

    checks = {
        "predict": lambda name: [predict(plain[name], x[:CHECKED])],
        "gradients": lambda name: lstm_gradients(plain[name], x[:CHECKED], y[:CHECKED]),
        "Bidirectional predict": lambda name: [predict(bidi[name], x[:CHECKED])],
        "gate_activations": lambda name: all_gates(plain[name]),
    }
    checks = {check: deviation(run(OURS), run(KERAS)) for check, run in checks.items()}

    runs = {
        "train": lambda name: plain[name].fit(x, y, batch_size=BATCH, verbose=0),
        "predict": lambda name: predict(plain[name]),
        "Bidirectional predict": lambda name: predict(bidi[name]),
        "gate_activations": lambda name: gates(plain[name]),
    }
    for model in plain.values():
        model.compile(optimizer="adam", loss="mse")
    times = {name: {what: [] for what in runs} for name in (OURS, KERAS)}
    for repeat in range(repeats + 1):  # the first round is the warm-up
        for name, measured in times.items():
            for what, run in runs.items():
                start = time.perf_counter()
                run(name)
                if repeat:
                    measured[what].append(time.perf_counter() - start)
    versions = {"keras": keras.__version__, backend: __import__(backend).__version__}
    return {
        "gpu": device,
        "versions": versions,
        "kernel": sequence_kernel(plain[OURS].layers[0], None, False),
        "checks": checks,
        "times": {
            name: {what: statistics.median(t) for what, t in measured.items()}
            for name, measured in times.items()
        },
    }


def table(times):
    """The markdown table of one backend's median times."""
    rows = {
        "train steps/s": lambda t: BATCHES / t["train"],
        "predict batches/s": lambda t: BATCHES / t["predict"],
        "Bidirectional batches/s": lambda t: BATCHES / t["Bidirectional predict"],
        "predict (s)": lambda t: t["predict"],
        "gate_activations (s)": lambda t: t["gate_activations"],
        "gate_activations / predict": lambda t: t["gate_activations"] / t["predict"],
    }
    lines = [f"| | {OURS} | {KERAS} | ours / Keras |", "|---|---|---|---|"]
    for label, value in rows.items():
        ours, theirs = value(times[OURS]), value(times[KERAS])
        lines.append(f"| {label} | {ours:.3g} | {theirs:.3g} | {ours / theirs:.2f}x |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.allow_cpu)))
        return 0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if args.allow_cpu:  # every backend on the CPU, even where there is a GPU
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    results = {}
    for backend in args.backends.split(","):
        if importlib.util.find_spec(backend) is None:
            continue
        command = [sys.executable, __file__, "--child", backend]
        command += ["--repeats", str(args.repeats)] + ["--allow-cpu"] * args.allow_cpu
        env["KERAS_BACKEND"] = backend
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode == 0:
            results[backend] = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            error = (run.stderr.strip().splitlines() or ["no output"])[-1]
            results[backend] = {"gpu": "", "error": error}
    if all(result["gpu"] is None for result in results.values()):
        searched = ", ".join(results) or "none installed"
        print(f"No GPU found by any Keras backend ({searched}); nothing to compare.")
        return 0
    print(
        f"batch {BATCH}, {TIME} steps, {FEATURES} features, {UNITS} units; {BATCHES} "
        f"batches per timing, medians of {args.repeats} alternations after a warm-up"
    )
    failed = False
    for backend, result in results.items():
        if "error" in result or result["gpu"] is None:
            print(f"\n## {backend}: {result.get('error', 'no GPU')}")
            failed |= "error" in result
            continue
        versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        print(f"\n## {backend} on {result['gpu']} ({versions})\n")
        expected = "" if result["kernel"] == "cudnn" else " (expected cudnn on a GPU)"
        print(f"keras_lstm.LSTM runs kernel: {result['kernel']}{expected}")
        for check, worst in result["checks"].items():
            failed |= worst > TOLERANCE
            verdict = "agree" if worst <= TOLERANCE else "DISAGREE, max deviation"
            print(f"- {check}: {verdict} {worst:.1e}")
        print("\n" + table(result["times"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
