"""Peak memory of `keras_lstm.gate_activations` on 20,000 sequences of 50 x 8.

    python benchmarks/gate_memory.py                        # batch sizes 32 and 20000
    python benchmarks/gate_memory.py --batch-sizes 256,all

Each batch size runs in a fresh process: a 32-unit `keras_lstm.LSTM` and a Dense
layer, called once on two samples (TensorFlow and Keras loaded), then one
`gate_activations` call on all 20,000 samples, the first at that batch size (it
compiles). Reported: the size of what it returns, and the growth of the peak RSS
(VmHWM, reset through /proc/self/clear_refs) over the RSS just before the call.
`all` passes no `batch_size`, for a keras_lstm whose `gate_activations` has none.
"""

import argparse
import os
import subprocess
import sys
import time

SAMPLES, TIME, FEATURES, UNITS = 20_000, 50, 8, 32


def _status_mib(field):
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


def child(batch_size):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_lstm

    x = np.random.default_rng(0).normal(size=(SAMPLES, TIME, FEATURES))
    x = x.astype("float32")
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras_lstm.LSTM(UNITS), keras.layers.Dense(1)]
    )
    model.predict_on_batch(x[:2])
    kwargs = {} if batch_size == "all" else {"batch_size": int(batch_size)}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets the peak RSS to the current RSS.
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    gates = keras_lstm.gate_activations(model, x, **kwargs)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM") - before
    result = sum(a.nbytes for values in gates.values() for a in values.values())
    print(f"{batch_size},{result / 2**20:.0f},{peak:.0f},{seconds:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,20000")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"{SAMPLES} x {TIME} x {FEATURES} inputs, {UNITS} units")
    print(
        f"{'batch_size':>10} {'result MiB':>11} {'peak growth MiB':>16} {'seconds':>8}"
    )
    for batch_size in args.batch_sizes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", batch_size],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        size, result, peak, seconds = out.splitlines()[-1].split(",")
        print(f"{size:>10} {result:>11} {peak:>16} {seconds:>8}")


if __name__ == "__main__":
    main()
