"""What seeing the gates costs: `gate_activations` against the model's own `predict`.

Model: LSTM(128) -> Dense(1) on batches of 64 sequences of 100 steps of 32
features, for `keras_lstm.LSTM` and for `keras.layers.LSTM`, on each Keras
backend installed (TensorFlow, JAX, PyTorch), each backend in a fresh process
of its own. After a warm-up call of each, `model.predict(x, batch_size=64)` and
`gate_activations(model, x, batch_size=64)` on the same 256 sequences alternate
`--repeats` times; the table shows the medians and their ratio, measured side
by side in one process (machines are noisy; only the ratio means something),
of wall time and of CPU time (`time.process_time`, all the process's threads:
less sensitive to other jobs on a shared machine, blind to parallelism). "loop
alone" is the recording forward passes over the same batches with the gates
left where the backend computed them, against `predict`: the rest of
`gate_activations` is copying them out into the arrays it returns.

    python benchmarks/gates_cost.py               # every installed backend
    python benchmarks/gates_cost.py --backends jax --repeats 7
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

BATCH, TIME, FEATURES, UNITS, BATCHES = 64, 100, 32, 128, 4
BACKENDS = ("tensorflow", "jax", "torch")
WHATS = ("predict", "gates", "loop")


def cpu_description():
    """The CPU's model name, core count and the vector flags that matter here."""
    name, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
    shown = " ".join(flag for flag in wanted if flag in flags) or "unknown"
    return f"{name}, {os.cpu_count()} cores, flags: {shown}"


def child(repeats):
    """Runs in a fresh process with KERAS_BACKEND set; prints JSON medians."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm.gates import _reader

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * BATCHES, TIME, FEATURES)).astype("float32")
    layers = {
        "keras_lstm.LSTM": keras_lstm.LSTM,
        "keras.layers.LSTM": keras.layers.LSTM,
    }
    models = {}
    for name, layer in layers.items():
        keras.utils.set_random_seed(0)
        models[name] = keras.Sequential(
            [keras.Input((TIME, FEATURES)), layer(UNITS), keras.layers.Dense(1)]
        )

    def predict(model):
        model.predict(x, batch_size=BATCH, verbose=0)

    def gates(model):
        keras_lstm.gate_activations(model, x, batch_size=BATCH)

    def loop(model):
        # The recording forward passes alone, results left on the backend:
        # what gate_activations costs beyond them is copying the gates out.
        reader = _reader(model)
        for start in range(0, len(x), BATCH):
            records = reader._run(x[start : start + BATCH], None)
            for record in records.values():
                for part in record.parts:
                    keras.ops.convert_to_numpy(part[-1, :1])  # waits for it

    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {
        (clock, name, what): [] for clock in clocks for name in models for what in WHATS
    }
    for model in models.values():  # warm-up: tracing and compilation
        predict(model)
        gates(model)
    for _ in range(repeats):
        for name, model in models.items():
            for what, run in (("predict", predict), ("gates", gates), ("loop", loop)):
                start = {clock: read() for clock, read in clocks.items()}
                run(model)
                for clock, read in clocks.items():
                    times[clock, name, what].append(read() - start[clock])
    result = {
        f"{clock}|{name}|{what}": statistics.median(values)
        for (clock, name, what), values in times.items()
    }
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repeats)
        return
    print(cpu_description())
    print(
        f"batch {BATCH}, {TIME} steps, {FEATURES} features, {UNITS} units, "
        f"{BATCHES} batches; medians of {args.repeats} alternations, seconds"
    )
    print()
    print(
        "| backend | layer | predict | gate_activations | ratio | loop alone "
        "| CPU: predict | gate_activations | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        if importlib.util.find_spec(module) is None:
            print(f"| {backend} | not installed | | | | | | | |")
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"| {backend} | failed: {last} | | | | | | | |")
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        for name in ("keras_lstm.LSTM", "keras.layers.LSTM"):
            cells = []
            for clock in ("wall", "cpu"):
                predict = result[f"{clock}|{name}|predict"]
                gates = result[f"{clock}|{name}|gates"]
                cells += [f"{predict:.3f}", f"{gates:.3f}", f"{gates / predict:.2f}x"]
                if clock == "wall":
                    loop = result[f"wall|{name}|loop"]
                    cells.append(f"{loop / predict:.2f}x")
            print(f"| {backend} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
