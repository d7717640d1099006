"""Training and prediction speed: keras_lstm against keras.layers.LSTM (and PyTorch).

Model: LSTM(128) -> Dense(1), Adam, MSE, `model.compile(optimizer="adam", loss="mse")`
with default arguments, batch 64, 32 features. Throughput is steps per second of
`model.fit` / `model.predict` after warm-up, timed from the end of the first batch to
the end of the last with a callback. Each repeat measures the two Keras layers, in
one process, and then PyTorch, in a process of its own that waits for its turn, so that
all three see the same machine load; the table shows medians over repeats.

Peak memory is the peak RSS of a fresh process over three training steps after a
warm-up step, minus its RSS before them. The last line compares
`keras_lstm.gate_activations` on a batch with a forward pass (`predict_on_batch`).

Every variant of keras_lstm is measured at length 100 against keras.layers.LSTM
(standard equations; Keras has no variants). The last column is the fraction of
this machine's matmul peak the run reaches: the step's matmul FLOPs (forward
2*B*T*(F+U)*4U, backward twice that) per second, over the FLOP/s of one large
float32 matmul on all cores, measured in the same run.

    python benchmarks/bench.py            # full run
    python benchmarks/bench.py --quick    # seq length 100 only
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Run from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

BATCH, FEATURES, UNITS = 64, 32, 128


def machine_description():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            )
    except (OSError, StopIteration):
        pass
    import tensorflow as tf

    versions = f"python {platform.python_version()}, tensorflow {tf.__version__}"
    versions += f", keras {keras.__version__}, numpy {np.__version__}"
    try:
        versions += f", torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        pass
    return f"{cpu}, {os.cpu_count()} cores; {versions}"


def ours(variant="standard"):
    from keras_lstm import LSTM

    return lambda units: LSTM(units, variant=variant)


def matmul_peak():
    """FLOP/s of a large float32 matmul (TensorFlow, all cores), best of 5."""
    import tensorflow as tf

    a = tf.random.normal((2048, 2048))
    run = tf.function(lambda a: tf.matmul(a, a))
    run(a).numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            out = run(a)
        out.numpy()
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * 2048**3 / best


def step_flops(seq_len, what):
    forward = 2 * BATCH * seq_len * (FEATURES + UNITS) * 4 * UNITS
    return forward if what == "predict" else 3 * forward


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
    return " ".join(flag for flag in wanted if flag in flags)


def build_model(layer_class, seq_len):
    model = keras.Sequential(
        [keras.Input((seq_len, FEATURES)), layer_class(UNITS), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


class _BatchClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    on_predict_batch_end = on_train_batch_end

    def rate(self):
        return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def data(seq_len, steps, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * BATCH, seq_len, FEATURES)).astype("float32")
    return x, rng.normal(size=(steps * BATCH, 1)).astype("float32")


def train_rate(model, x, y):
    clock = _BatchClock()
    model.fit(
        x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[clock]
    )
    return clock.rate()


def predict_rate(model, x):
    clock = _BatchClock()
    model.predict(x, batch_size=BATCH, verbose=0, callbacks=[clock])
    return clock.rate()


def steps_for(seq_len, quick):
    return max(4, (10 if quick else 20) * 100 // seq_len)


def measure(layers, seq_len, repeats, quick, predict, torch=None):
    """{name: {"train": [...], "predict": [...]}}, measured alternately: each
    repeat measures every layer in turn, then PyTorch (a `TorchChild`, if given)."""
    x, y = data(seq_len, steps_for(seq_len, quick))
    models = {name: build_model(cls, seq_len) for name, cls in layers.items()}
    for model in models.values():  # warm-up: tracing, XLA compilation
        train_rate(model, x[: 3 * BATCH], y[: 3 * BATCH])
        if predict:
            predict_rate(model, x[: 3 * BATCH])
    rates = {name: {"train": [], "predict": []} for name in [*models, "torch"]}
    for _ in range(repeats):
        for name, model in models.items():
            rates[name]["train"].append(train_rate(model, x, y))
            if predict:
                rates[name]["predict"].append(predict_rate(model, x))
        if torch is not None:
            for what in ("train", "predict") if predict else ("train",):
                rates["torch"][what].append(torch.rate(seq_len, what))
    return rates


def child_memory(which, seq_len):
    """Runs in a fresh process: peak RSS growth of training steps, in MiB.

    Measured after a warm-up step (tracing, compilation), from the RSS before
    three more steps to their peak (VmHWM, reset through /proc/self/clear_refs).
    """
    layer = keras.layers.LSTM if which == "keras" else ours()
    model = build_model(layer, seq_len)
    x, y = data(seq_len, 3)
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets the peak RSS to the current RSS.
    before = _status_mib("VmRSS")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    return {"peak_mib": _status_mib("VmHWM") - before}


def _status_mib(field):
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


def gate_cost(repeats):
    """Seconds of `gate_activations` and of a forward pass, one batch of 100 steps."""
    from keras_lstm import gate_activations

    model = build_model(ours(), 100)
    x, _ = data(100, 1)
    model.predict_on_batch(x)
    gate_activations(model, x)
    times = {"forward": [], "gate_activations": []}
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times["forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        gate_activations(model, x)
        times["gate_activations"].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def child_torch(quick):
    """Runs in a process of its own: PyTorch nn.LSTM, same model, default threads.

    Reads requests "SEQ_LEN WHAT" (WHAT: train or predict) from stdin and answers
    each with one measurement, steps per second, so that the parent alternates
    PyTorch with the Keras layers in time. Answers "unavailable" first if PyTorch
    cannot be imported, else "ready".
    """
    try:
        import torch
    except ImportError:
        print("unavailable", flush=True)
        return

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(FEATURES, UNITS, batch_first=True)
            self.dense = torch.nn.Linear(UNITS, 1)

        def forward(self, x):
            return self.dense(self.lstm(x)[0][:, -1])

    def steps_for_length(seq_len):
        model = Model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = (torch.from_numpy(a) for a in data(seq_len, 1))

        def train():
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

        def predict():
            with torch.no_grad():
                model(x)

        train()  # warm-up
        predict()
        return {"train": train, "predict": predict}

    print("ready", flush=True)
    models = {}
    for request in sys.stdin:
        seq_len, what = request.split()
        seq_len = int(seq_len)
        if seq_len not in models:
            models[seq_len] = steps_for_length(seq_len)
        step, steps = models[seq_len][what], steps_for(seq_len, quick)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        print(steps / (time.perf_counter() - start), flush=True)


class TorchChild:
    """The PyTorch process of `child_torch`, measured on request."""

    def __init__(self, quick):
        args = [sys.executable, __file__, "--child", "torch"]
        self.process = subprocess.Popen(
            args + (["--quick"] if quick else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.available = self.process.stdout.readline().strip() == "ready"

    def rate(self, seq_len, what):
        self.process.stdin.write(f"{seq_len} {what}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def _in_child(*args):
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seq length 100 only")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip peak RSS")
    parser.add_argument("--no-variants", action="store_true", help="standard only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seq_lens = [100]
    if args.child:
        if args.child[0] == "torch":
            child_torch(args.quick)
        else:
            print(json.dumps(child_memory(args.child[0], int(args.child[1]))))
        return

    print(machine_description())
    print(f"CPU flags: {cpu_flags()}")
    peak = matmul_peak()
    print(f"matmul peak (2048^3 float32, all cores): {peak / 1e9:.0f} GFLOP/s")
    layers = {"keras": keras.layers.LSTM, "ours": ours()}
    print(
        f"batch {BATCH}, {FEATURES} features, {UNITS} units; medians of "
        f"{args.repeats} repeats; ours = keras_lstm.LSTM\n"
    )

    torch = TorchChild(args.quick)
    if not torch.available:
        print("torch not importable: PyTorch column skipped")
        torch.close()
        torch = None

    header = f"{'seq':>5} {'what':>8} {'keras/s':>8} {'ours/s':>8} {'ours/keras':>10}"
    header += f" {'torch/s':>8} {'ours/torch':>10} {'of peak':>8}"
    print(header)
    memory = []
    for seq_len in args.seq_lens:
        rates = measure(
            layers, seq_len, args.repeats, args.quick, seq_len == 100, torch
        )
        for what in ("train", "predict"):
            if not rates["ours"][what]:
                continue
            k = statistics.median(rates["keras"][what])
            o = statistics.median(rates["ours"][what])
            row = f"{seq_len:>5} {what:>8} {k:>8.2f} {o:>8.2f} {o / k:>9.2f}x"
            if rates["torch"][what]:
                t = statistics.median(rates["torch"][what])
                row += f" {t:>8.2f} {o / t:>9.2f}x"
            else:
                row += f" {'':>8} {'':>10}"
            row += f" {o * step_flops(seq_len, what) / peak:>7.0%}"
            print(row, flush=True)
        if not args.no_memory:
            which = ["keras", "ours"]
            mib = [_in_child("--child", w, str(seq_len))["peak_mib"] for w in which]
            memory.append(f"{seq_len:>5} {mib[0]:>11.0f} {mib[1]:>11.0f}")
    if torch is not None:
        torch.close()
    if not args.no_variants:
        print("\nevery variant, seq 100 (ratios to keras.layers.LSTM, standard)")
        columns = ("train/s", "x keras", "predict/s", "x keras")
        print(f"{'variant':>22} " + " ".join(f"{c:>9}" for c in columns))
        from keras_lstm import VARIANTS

        variant_layers = {"keras": keras.layers.LSTM}
        variant_layers.update({v: ours(v) for v in VARIANTS})
        rates = measure(variant_layers, 100, args.repeats, args.quick, True)
        k = {w: statistics.median(rates["keras"][w]) for w in ("train", "predict")}
        for v in VARIANTS:
            t, p = (statistics.median(rates[v][w]) for w in ("train", "predict"))
            row = f"{v:>22} {t:>9.2f} {t / k['train']:>8.2f}x"
            print(row + f" {p:>9.2f} {p / k['predict']:>8.2f}x", flush=True)
    if memory:
        print(
            "\npeak RSS growth of 3 training steps after warm-up (MiB, fresh process)"
        )
        print(f"{'seq':>5} {'keras':>11} {'ours':>11}")
        print("\n".join(memory))
    cost = gate_cost(args.repeats)
    print(
        f"\none batch (64 x 100 steps): forward {1000 * cost['forward']:.1f} ms, "
        f"gate_activations {1000 * cost['gate_activations']:.1f} ms "
        f"({cost['gate_activations'] / cost['forward']:.2f}x)"
    )


if __name__ == "__main__":
    main()
