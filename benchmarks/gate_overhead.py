"""What logging gates to TensorBoard costs a training run, in time and in bytes.

Trains the default `train.py` model (adding problem, length 50, 64 units) for a few
epochs without `GateTensorBoard`, with it but without the LSTM gates dashboard's
data (`dashboard=False`), and with both (the default), alternating in one process,
and reports the median time of each, their ratios to the run without gates, one
write of each, and the bytes each wrote.

    python benchmarks/gate_overhead.py [--epochs 4] [--repeats 3] [--gate-freq 1]
    python benchmarks/gate_overhead.py --size-of logs/<run>   # bytes of a run

`--size-of` prints what a run folder holds (`du -sb`), its gates run, and the
dashboard's share of it (the `lstm_gates` summaries in the event files).
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
import tensorflow as tf  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402

from keras_lstm import GateTensorBoard  # noqa: E402
from keras_lstm.experiments.config import TrainConfig  # noqa: E402
from keras_lstm.experiments.run import build_model  # noqa: E402
from keras_lstm.experiments.tasks import task_for  # noqa: E402
from keras_lstm.gates import GateReader  # noqa: E402
from keras_lstm.tensorboard.summary import (  # noqa: E402
    PLUGIN_NAME,
    dashboard_labels,
    write_all,
)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)

    def on_train_begin(self, logs=None):
        self.times = []


SETTINGS = {
    "without gates": None,
    "gates, no dashboard": {"dashboard": False},
    "gates + dashboard": {"dashboard": True},
}


def du(path) -> int:
    """Bytes of the files under `path`, as `du -sb` counts file sizes."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def dashboard_bytes(path) -> int:
    """Bytes of the `lstm_gates` summaries in the event files under `path`."""
    from tensorboard.backend.event_processing import event_file_loader

    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if "tfevents" not in name:
                continue
            loader = event_file_loader.RawEventFileLoader(os.path.join(root, name))
            for record in loader.Load():
                event = event_pb2.Event.FromString(record)
                for value in event.summary.value:
                    if value.tag.endswith(("/gates", "/mask")) or value.tag == "labels":
                        plugin = value.metadata.plugin_data.plugin_name
                        # Only the first value of a tag carries its metadata.
                        if plugin in ("", PLUGIN_NAME):
                            total += value.ByteSize()
    return total


def size_of(run_dir) -> None:
    gates_dir = os.path.join(run_dir, "gates")
    run, gates, dashboard = du(run_dir), du(gates_dir), dashboard_bytes(gates_dir)
    print(f"{run_dir}: {run:,} bytes; gates/ {gates:,}, of which the dashboard's")
    print(f"  data {dashboard:,} ({100 * dashboard / run:.0f}% of the run)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gate-freq", type=int, default=TrainConfig.gate_freq)
    parser.add_argument("--size-of", metavar="RUN_DIR")
    args = parser.parse_args()
    if args.size_of:
        size_of(args.size_of)
        return

    config = TrainConfig()
    task = task_for(config)
    probe = task.x_val[: config.probe_size]
    labels = [task.step_labels(sequence) for sequence in probe]
    timings = {name: [] for name in SETTINGS}
    sizes = {}
    with tempfile.TemporaryDirectory() as logdir:
        for repeat in range(args.repeats):
            for name, options in SETTINGS.items():
                model = build_model(config, task, "standard")
                timer = EpochTimer()
                callbacks = [timer]
                gates_dir = os.path.join(logdir, f"{repeat}", name, "gates")
                if options is not None:
                    callbacks.append(
                        GateTensorBoard(
                            gates_dir,
                            probe,
                            freq=args.gate_freq,
                            labels=labels,
                            **options,
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
                if options is not None:
                    sizes[name] = du(gates_dir)
                print(
                    f"repeat {repeat}: {name:<20} {timings[name][-1]:.2f} s",
                    flush=True,
                )
    # The same cost measured directly: what one write takes, against an epoch.
    writes = {}
    for name, options in SETTINGS.items():
        if options is None:
            continue
        model = build_model(config, task, "standard")
        logger = GateTensorBoard(
            os.path.join(tempfile.mkdtemp(), "gates"), probe, labels=labels, **options
        )
        logger.set_model(model)
        logger.write(0)  # Compiles the probe's forward pass.
        times = []
        for step in range(1, 6):
            start = time.perf_counter()
            logger.write(step)
            times.append(time.perf_counter() - start)
        logger.close()
        writes[name] = statistics.median(times)

    # The dashboard's own part of a write, alone: the least disturbed by a busy
    # machine (its minimum), beside the median.
    model = build_model(config, task, "standard")
    gates = GateReader(model)(probe)
    shown = dashboard_labels(gates, labels, probe)
    writer = tf.summary.create_file_writer(tempfile.mkdtemp())
    dashboard = []
    for step in range(20):
        start = time.perf_counter()
        with writer.as_default(step=step):
            write_all(gates, shown)
        writer.flush()
        dashboard.append(time.perf_counter() - start)
    writer.close()

    without = statistics.median(timings["without gates"])
    epoch = without / args.epochs
    print(
        f"\nmedian of {args.repeats}, {args.epochs} epochs after the first, "
        f"gate-freq {args.gate_freq}:"
    )
    print(f"  {'without gates':<20} {without:.2f} s")
    for name in list(SETTINGS)[1:]:
        median = statistics.median(timings[name])
        print(
            f"  {name:<20} {median:.2f} s, {100 * (median / without - 1):+.1f}%; "
            f"one write {1000 * writes[name]:.0f} ms (median of 5), "
            f"{100 * writes[name] / (epoch * args.gate_freq):.1f}% of a "
            f"{epoch:.2f} s epoch; gates/ {sizes[name]:,} bytes for "
            f"{args.epochs + 1} epochs"
        )
    fastest = min(timings["without gates"]) / args.epochs
    print(
        f"the dashboard's data alone: {1000 * min(dashboard):.1f} ms per write "
        f"(median {1000 * statistics.median(dashboard):.1f} ms of 20), "
        f"{100 * min(dashboard) / fastest:.2f}% of the fastest epoch "
        f"({fastest:.2f} s)"
    )


if __name__ == "__main__":
    main()
