"""How much the chains gain from running concurrently, on this machine.

keras_lstm splits a batch into chains, one per core, that run the compiled chunks
concurrently (`keras_lstm/_fast_tf/`). At `bench.py`'s configuration (batch 64,
so two chains of 32 rows on two cores; 128 units, 32 features, 100 steps) this
times the forward pass that `predict` runs:

- one chain alone;
- two chains in one process, concurrently, as `predict` runs them;
- one chain in each of two processes at the same time;

and, for comparison, `bench.py`'s PyTorch `predict` on the whole batch (`nn.LSTM`
and its Dense output, default threads, a process of its own), where PyTorch is
installed. Each is reported in microseconds per step and as a ratio to one chain
alone, measured in the same run (medians of the repeats). Two chains that took no
longer than one chain alone would run a batch twice as fast as one chain of all its
rows; what they take beyond that, and what one chain takes, bound how fast `predict`
can be here.

    python benchmarks/chains.py
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import (  # noqa: E402
    BATCH,
    FEATURES,
    UNITS,
    TorchChild,
    cpu_flags,
    machine_description,
)

ROWS, STEPS = BATCH // 2, 100
CALLS = 10  # forward passes per timing


def forward_pass(chains):
    """A function running `chains` chains of ROWS rows over STEPS steps, and its
    input. The chunks and their loops are the layer's own."""
    import tensorflow as tf

    import keras_lstm
    from keras_lstm import _fast_tf
    from keras_lstm.layer import _step_weights

    layer = keras_lstm.LSTM(UNITS)
    layer.build((None, STEPS, FEATURES))
    cell = layer.cell
    loops = _fast_tf._loops_for(cell)
    kernel = tf.convert_to_tensor(cell.kernel)
    recurrent_kernel = tf.convert_to_tensor(cell.recurrent_kernel)
    weights = {k: tf.convert_to_tensor(v) for k, v in _step_weights(cell).items()}
    x = tf.random.normal((STEPS, ROWS * chains, FEATURES))
    padded = -(-STEPS // _fast_tf.CHUNK) * _fast_tf.CHUNK

    @tf.function
    def run(x):
        last = []
        for i in range(chains):
            x_i = _fast_tf._chunked(x[:, i * ROWS : (i + 1) * ROWS], padded)
            h = tf.zeros((ROWS, UNITS))
            _, h_last, _ = loops.run_chunks(
                x_i, h, h, None, STEPS, kernel, recurrent_kernel, weights, ("h",)
            )
            last.append(h_last)
        return tf.concat(last, axis=0)

    run(x).numpy()  # tracing, compilation
    return run, x


def microseconds_per_step(run, x):
    start = time.perf_counter()
    for _ in range(CALLS):
        run(x).numpy()
    return (time.perf_counter() - start) / CALLS / STEPS * 1e6


def child():
    """One chain, timed when the parent says "go" (one line per timing)."""
    run, x = forward_pass(1)
    print("ready", flush=True)
    for _ in sys.stdin:
        print(microseconds_per_step(run, x), flush=True)


def in_children(count, repeats):
    """Timings of one chain in each of `count` processes started together."""
    args = [sys.executable, os.path.abspath(__file__), "--child"]
    children = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for process in children:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("a timing process failed to start")
    timings = []
    for _ in range(repeats):
        for process in children:
            process.stdin.write("go\n")
            process.stdin.flush()
        timings += [float(process.stdout.readline()) for process in children]
    for process in children:
        process.stdin.close()
        process.wait()
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()

    one, two = forward_pass(1), forward_pass(2)
    one_alone, two_in_one = [], []
    for _ in range(args.repeats):  # alternated, so that both see the same load
        one_alone.append(microseconds_per_step(*one))
        two_in_one.append(microseconds_per_step(*two))
    alone = statistics.median(one_alone)
    process_alone = statistics.median(in_children(1, args.repeats))
    # (name, microseconds per step, the one-chain time it is compared with)
    rows = [
        ("one chain alone", alone, alone),
        ("two chains, one process", statistics.median(two_in_one), alone),
        ("one chain, a process alone", process_alone, process_alone),
        (
            "one chain, one process of two",
            statistics.median(in_children(2, args.repeats)),
            process_alone,
        ),
    ]
    torch = TorchChild(quick=True)  # bench.py's model, batch BATCH
    torch_timings = []
    if torch.available:
        for _ in range(args.repeats):
            torch_timings.append(1e6 / torch.rate(STEPS, "predict") / STEPS)
    torch.close()

    print(machine_description())
    print(f"CPU flags: {cpu_flags()}")
    print(
        f"{ROWS} rows a chain, {UNITS} units, {FEATURES} features, {STEPS} steps; "
        f"medians of {args.repeats} repeats"
    )
    print(f"\n{'':>32} {'us/step':>8} {'x alone':>8}")
    for name, median, base in rows:
        print(f"{name:>32} {median:8.1f} {median / base:8.2f}")
    if torch_timings:
        median = statistics.median(torch_timings)
        print(f"{'PyTorch nn.LSTM, both chains':>32} {median:8.1f}")


if __name__ == "__main__":
    main()
