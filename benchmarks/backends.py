"""Training and prediction speed on every Keras backend: keras_lstm against Keras.

Model: `keras.Input((100, 32)) -> LSTM(128) -> Dense(1)`, compiled with
`optimizer="adam", loss="mse"`, on a fixed dataset of 8 batches of 64 sequences
(100 steps, 32 features; `--quick`: 3 batches), for `keras.layers.LSTM` and
`keras_lstm.LSTM` (standard variant), on each backend installed (TensorFlow,
JAX, PyTorch), each backend in a fresh process with KERAS_BACKEND set.

What is timed is what a user calls: one whole `model.fit(x, y, batch_size=64,
epochs=1, shuffle=False, verbose=0)` over the dataset (train steps/s = batches /
seconds of the call) and one whole `model.predict(x, batch_size=64, verbose=0)`
(predict batches/s). Keras's per-call overhead (data adapter, callbacks) is in
both, the same for both layers. A warm-up `fit` and `predict` of every model
runs first, so tracing and compilation stay out of the timed part.

Each of `--repeats` rounds times every model in turn (the order rotated from
round to round), first training, then prediction, so that the models share the
machine's load; the table shows the median speeds and the median of the
per-round ratios with their range (machines are noisy; only ratios measured
side by side mean something). A second table gives the CPU time of the same
calls (`time.process_time`, all the process's threads) per batch and its ratio,
Keras's / this one's: less sensitive to other jobs on a shared machine than
wall time, blind to how well a layer uses several cores.

On the PyTorch backend the same process also runs PyTorch's own model,
`torch.nn.LSTM(32, 128, batch_first=True)` + `torch.nn.Linear(128, 1)`, Adam
(lr 1e-3, as Keras's default) and MSE, in the same rounds: training is a plain
loop over the same 8 batches (zero_grad, forward, loss, backward, step),
prediction the forward passes under `torch.no_grad()`; no Keras overhead. Its
row's ratio is nn.LSTM / keras.layers.LSTM, and a line under the table gives
keras_lstm.LSTM / torch.nn.LSTM.

With `--variants` (the default) every variant of keras_lstm
(`keras_lstm.cell.VARIANTS`) is then trained on TensorFlow and JAX, in rounds of
their own with `keras.layers.LSTM` (standard equations: Keras has no variants),
and shown as a ratio to it, of wall time and of CPU time. The layer column
names the kernel that runs keras_lstm's sequence
(`keras_lstm.layer.sequence_kernel`).

    python benchmarks/backends.py                        # everything, minutes
    python benchmarks/backends.py --quick --no-variants  # a fast check
    python benchmarks/backends.py --backends jax,torch --repeats 5
"""

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

# The same CPU line as every benchmark here (this script's folder is on sys.path).
from gates_cost import cpu_description

BATCH, TIME, FEATURES, UNITS = 64, 100, 32, 128
BATCHES, QUICK_BATCHES = 8, 3
BACKENDS = ("tensorflow", "jax", "torch")
VARIANT_BACKENDS = ("tensorflow", "jax")
KERAS, OURS, TORCH = "keras.layers.LSTM", "keras_lstm.LSTM", "torch.nn.LSTM"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def versions():
    """Versions of Python and the packages involved, without importing them."""
    parts = [f"python {platform.python_version()}"]
    for package in ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy"):
        try:
            parts.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package} not installed")
    try:
        with open(os.path.join(REPO, "keras_lstm", "__init__.py")) as f:
            ours = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
    except (OSError, AttributeError):
        ours = "unknown"
    parts.append(f"keras_lstm {ours} (this checkout)")
    return ", ".join(parts)


# --------------------------------------------------------------------- child


def child(batches, repeats, variants):
    """Runs in a fresh process with KERAS_BACKEND set; prints one JSON line.

    Everything the libraries write to stdout goes to stderr (file descriptor 1
    points there while they run); only the JSON line reaches the parent.
    """
    stdout = os.dup(1)
    os.dup2(2, 1)
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm.layer import sequence_kernel

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * BATCH, TIME, FEATURES)).astype("float32")
    y = rng.normal(size=(batches * BATCH, 1)).astype("float32")

    def keras_runners(layer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((TIME, FEATURES)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")

        def train():
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

        def predict():
            model.predict(x, batch_size=BATCH, verbose=0)

        return {"train": train, "predict": predict}

    def timed(run):
        """(wall-clock seconds, CPU seconds of this process's threads) of run()."""
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - cpu

    def rounds(runners, whats):
        """{"wall"|"cpu": {name: {what: [seconds per round]}}}, the models
        alternating in each round."""
        names = list(runners)
        seconds = {
            clock: {name: {what: [] for what in whats} for name in names}
            for clock in ("wall", "cpu")
        }
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for what in whats:
                for name in order:
                    wall, cpu = timed(runners[name][what])
                    seconds["wall"][name][what].append(wall)
                    seconds["cpu"][name][what].append(cpu)
        return seconds

    ours = keras_lstm.LSTM(UNITS)
    runners = {
        KERAS: keras_runners(keras.layers.LSTM(UNITS)),
        OURS: keras_runners(ours),
    }
    if backend == "torch":
        runners[TORCH] = torch_runners(x, y, batches)
    for run in runners.values():  # warm-up: tracing, compilation, optimizer state
        run["train"]()
        run["predict"]()
    result = {
        "kernel": {
            what: sequence_kernel(ours, None, what == "train")
            for what in ("train", "predict")
        },
        "main": rounds(runners, ("train", "predict")),
    }

    if variants and backend in VARIANT_BACKENDS:
        variant_runners, failed = {KERAS: runners[KERAS]}, {}
        for variant in keras_lstm.cell.VARIANTS:
            if variant == "standard":
                variant_runners[variant] = runners[OURS]
                continue
            try:
                run = keras_runners(keras_lstm.LSTM(UNITS, variant=variant))
                run["train"]()  # warm-up
            except Exception as error:  # reported in the table
                failed[variant] = f"{type(error).__name__}: {error}".splitlines()[0]
                continue
            variant_runners[variant] = run
        result["variants"] = rounds(variant_runners, ("train",))
        result["variants_failed"] = failed

    os.write(stdout, (json.dumps(result) + "\n").encode())


def torch_runners(x, y, batches):
    """PyTorch's own LSTM model, same shapes, train and predict over the batches."""
    import torch

    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(FEATURES, UNITS, batch_first=True)
            self.dense = torch.nn.Linear(UNITS, 1)

        def forward(self, inputs):
            return self.dense(self.lstm(inputs)[0][:, -1])

    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs = [torch.from_numpy(x[i * BATCH : (i + 1) * BATCH]) for i in range(batches)]
    ys = [torch.from_numpy(y[i * BATCH : (i + 1) * BATCH]) for i in range(batches)]

    def train():
        model.train()
        for inputs, targets in zip(xs, ys, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()

    def predict():
        model.eval()
        with torch.no_grad():
            for inputs in xs:
                model(inputs)

    return {"train": train, "predict": predict}


# -------------------------------------------------------------------- parent


def summary(seconds, reference, batches):
    """(median speed, median ratio to `reference`, min ratio, max ratio)."""
    speeds = [batches / s for s in seconds]
    ratios = [
        r / s for s, r in zip(seconds, reference, strict=True)
    ]  # speed / reference speed
    return (
        statistics.median(speeds),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
    )


def ratio_cell(median, low, high):
    return f"{median:.2f}x [{low:.2f}, {high:.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, default: %(default)s",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_BATCHES} batches, not {BATCHES}"
    )
    parser.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train every keras_lstm variant on TensorFlow and JAX (default: on)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = QUICK_BATCHES if args.quick else BATCHES
    if args.child:
        child(batches, args.repeats, args.variants)
        return

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; known: {BACKENDS}")
    print(cpu_description())
    print(versions())
    print(
        f"batch {BATCH}, {TIME} steps, {FEATURES} features, {UNITS} units, "
        f"{batches} batches per fit/predict call; medians of {args.repeats} rounds; "
        "ratio: median of per-round ratios [min, max]"
    )
    print()

    results, walls = {}, {}
    for backend in backends:
        if importlib.util.find_spec(backend) is None:
            results[backend] = "not installed"
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, os.path.abspath(__file__), "--child"]
        command += ["--repeats", str(args.repeats)]
        command += ["--quick"] if args.quick else []
        command += ["--variants" if args.variants else "--no-variants"]
        start, load = time.perf_counter(), os.getloadavg()[0]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        walls[backend] = time.perf_counter() - start, load, os.getloadavg()[0]
        lines = run.stdout.strip().splitlines()
        if run.returncode != 0 or not lines:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            results[backend] = f"failed: {last}"
            continue
        results[backend] = json.loads(lines[-1])

    against_torch = []
    print("| backend | layer | train steps/s | ratio | predict batches/s | ratio |")
    print("|---|---|---|---|---|---|")
    for backend, result in results.items():
        if isinstance(result, str):
            print(f"| {backend} | {result} | | | | |")
            continue
        wall = result["main"]["wall"]
        for name in wall:
            cells = []
            for what in ("train", "predict"):
                speed, *ratio = summary(wall[name][what], wall[KERAS][what], batches)
                cells += [f"{speed:.2f}", ratio_cell(*ratio)]
            print(f"| {backend} | {label(name, result)} | " + " | ".join(cells) + " |")
        if TORCH in wall:
            cells = [
                ratio_cell(*summary(wall[OURS][w], wall[TORCH][w], batches)[1:])
                for w in ("train", "predict")
            ]
            against_torch.append(
                f"{backend}: {OURS} / {TORCH}: train {cells[0]}, predict {cells[1]}"
            )
    print()
    for line in against_torch:
        print(line)
    if against_torch:
        print()

    print(
        "CPU time of the same calls (all the process's threads), ms per batch; "
        f"ratio: {KERAS}'s CPU time / this one's (above 1: less CPU work than "
        "Keras). Less sensitive than wall time to other jobs on the machine, "
        "blind to parallelism."
    )
    print()
    print("| backend | layer | train CPU ms | ratio | predict CPU ms | ratio |")
    print("|---|---|---|---|---|---|")
    for backend, result in results.items():
        if isinstance(result, str):
            continue
        cpu = result["main"]["cpu"]
        for name in cpu:
            cells = []
            for what in ("train", "predict"):
                rate, *ratio = summary(cpu[name][what], cpu[KERAS][what], batches)
                cells += [f"{1000 / rate:.0f}", ratio_cell(*ratio)]
            print(f"| {backend} | {label(name, result)} | " + " | ".join(cells) + " |")
    print()

    if args.variants:
        print(
            f"every keras_lstm variant, training; ratio to {KERAS} (standard "
            "equations), wall time and CPU time as above"
        )
        print()
        print("| backend | variant | train steps/s | ratio | CPU ratio |")
        print("|---|---|---|---|---|")
        for backend, result in results.items():
            if backend not in VARIANT_BACKENDS:
                continue
            if isinstance(result, str):
                print(f"| {backend} | {result} | | | |")
                continue
            wall, cpu = result["variants"]["wall"], result["variants"]["cpu"]
            for name in wall:
                speed, *ratio = summary(
                    wall[name]["train"], wall[KERAS]["train"], batches
                )
                cpu_ratio = summary(cpu[name]["train"], cpu[KERAS]["train"], batches)
                row = name if name == KERAS else f"{OURS}(variant={name!r})"
                row += f" | {speed:.2f} | {ratio_cell(*ratio)}"
                print(f"| {backend} | {row} | {ratio_cell(*cpu_ratio[1:])} |")
            for name, error in result["variants_failed"].items():
                print(f"| {backend} | {OURS}(variant={name!r}) | failed: {error} | | |")
        print()
    print(
        "wall time per backend process (1-minute load average at its start and "
        f"end, on {os.cpu_count()} cores): "
        + ", ".join(
            f"{b} {s:.0f} s (load {a:.1f} -> {z:.1f})" for b, (s, a, z) in walls.items()
        )
    )


def label(name, result):
    """The layer column: keras_lstm's row names the kernel that runs it."""
    if name == OURS:
        kernel = result["kernel"]
        if kernel["train"] == kernel["predict"]:
            return f"{OURS} ({kernel['train']})"
        return f"{OURS} ({kernel['train']} / {kernel['predict']})"
    return f"{TORCH} (PyTorch alone)" if name == TORCH else name


if __name__ == "__main__":
    main()
