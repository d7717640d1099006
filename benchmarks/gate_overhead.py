"""What logging gates to TensorBoard costs a training run.

Trains the default `train.py` model (adding problem, length 50, 64 units) for a few
epochs with and without `GateTensorBoard`, alternating in one process, and reports
the median epoch time of each and their ratio.

    python benchmarks/gate_overhead.py [--epochs 4] [--repeats 3] [--gate-freq 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from keras_lstm import GateTensorBoard  # noqa: E402
from keras_lstm.experiments.config import TrainConfig  # noqa: E402
from keras_lstm.experiments.run import build_model  # noqa: E402
from keras_lstm.experiments.tasks import make_task  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.times = []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gate-freq", type=int, default=TrainConfig.gate_freq)
    args = parser.parse_args()

    config = TrainConfig()
    task = make_task(
        config.task,
        seq_len=config.seq_len,
        seed=config.seed,
        num_train=config.num_train,
        num_val=config.num_val,
    )
    probe = task.x_val[: config.probe_size]
    timings = {"without gates": [], "with gates": []}
    with tempfile.TemporaryDirectory() as logdir:
        for repeat in range(args.repeats):
            for name in timings:
                model = build_model(config, task, "standard")
                timer = EpochTimer()
                callbacks = [timer]
                if name == "with gates":
                    gates_dir = os.path.join(logdir, f"{repeat}", "gates")
                    callbacks.append(
                        GateTensorBoard(
                            gates_dir,
                            probe,
                            freq=args.gate_freq,
                            step_labels=task.step_labels(probe[0]),
                        )
                    )
                start = time.perf_counter()
                model.fit(
                    task.x_train,
                    task.y_train,
                    batch_size=config.batch_size,
                    epochs=args.epochs + 1,
                    validation_data=(task.x_val, task.y_val),
                    callbacks=callbacks,
                    verbose=0,
                )
                total = time.perf_counter() - start
                # The first epoch compiles and is left out.
                timings[name].append(total - timer.times[0])
                print(
                    f"repeat {repeat}: {name:<14} {timings[name][-1]:.2f} s", flush=True
                )
    # The same cost measured directly: what one write takes, against an epoch.
    model = build_model(config, task, "standard")
    logger = GateTensorBoard(
        os.path.join(tempfile.mkdtemp(), "gates"),
        probe,
        step_labels=task.step_labels(probe[0]),
    )
    logger.set_model(model)
    logger.write(0)  # Compiles the probe's forward pass.
    writes = []
    for step in range(1, 6):
        start = time.perf_counter()
        logger.write(step)
        writes.append(time.perf_counter() - start)
    logger.close()
    write = statistics.median(writes)

    without = statistics.median(timings["without gates"])
    with_gates = statistics.median(timings["with gates"])
    print(
        f"\nmedian of {args.repeats}, {args.epochs} epochs after the first, "
        f"gate-freq {args.gate_freq}:"
    )
    print(f"  without gates {without:.2f} s")
    print(f"  with gates    {with_gates:.2f} s")
    print(f"  overhead      {100 * (with_gates / without - 1):+.1f}%")
    epoch = without / args.epochs
    print(
        f"one gate write {1000 * write:.0f} ms (median of 5), one epoch {epoch:.2f} s: "
        f"{100 * write / (epoch * args.gate_freq):.1f}% at gate-freq {args.gate_freq}"
    )


if __name__ == "__main__":
    main()
