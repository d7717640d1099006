"""Train keras_lstm models on sequence tasks and watch every gate in TensorBoard.

    python train.py                                   # adding problem, length 50
    python train.py --task text --epochs 5            # character model of Python's docs
    python train.py --variant standard,cifg,no_forget_gate --epochs 4
    python train.py --help                            # every option and its default

Each run writes logs/<run>/: config.json, TensorBoard logs (train/, validation/,
gates/), best.keras and, at the end, metrics.json.
"""

from __future__ import annotations

import csv
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly():
    """Imports keras_lstm with TensorFlow's start-up lines kept off stderr.

    TensorFlow writes them to file descriptor 2 while it loads, whatever
    TF_CPP_MIN_LOG_LEVEL says; a bad command must print one line only.
    """
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras_lstm.config
        import keras_lstm.experiment
        import keras_lstm.tasks
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)
    return keras_lstm.config, keras_lstm.experiment, keras_lstm.tasks


config_lib, experiment, tasks = _import_quietly()
from keras_lstm.callbacks import HPARAMS_METRICS  # noqa: E402  (loaded above)

# summary.csv keeps one set of columns, so sweeps of any task append to it: the
# results every run reports to TensorBoard's HParams dashboard, and its best epoch.
SUMMARY_COLUMNS = ["task", "variant", *HPARAMS_METRICS, "best_epoch"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything that can be wrong with the command is found before anything is
    # written, so a bad command leaves the log directory as it was.
    try:
        config = config_lib.from_args(argv)
        experiment.check_logdir(config.logdir)
        task = tasks.make_task(
            config.task,
            seq_len=config.seq_len,
            seed=config.seed,
            num_train=config.num_train,
            num_val=config.num_val,
            data=config.data,
        )
        run_dirs = {v: experiment.plan_run_dir(config, v) for v in config.variants}
    except ValueError as error:
        message = str(error).replace("argument `name`", "argument `--task`")
        for name in ("data", "seq_len", "num_train", "num_val", "seed"):
            flag = "--" + name.replace("_", "-")
            message = message.replace(f"argument `{name}`", f"argument `{flag}`")
        print(f"train.py: error: {message}", file=sys.stderr)
        return 2

    results, diverged = [], False
    for variant, run_dir in run_dirs.items():
        print(f"\n== {task.name}, variant {variant}: {run_dir}", flush=True)
        try:
            metrics = experiment.run(config, task, variant, run_dir, argv)
        except experiment.NaNLossError as error:
            # The other variants of a sweep still run; the exit code tells.
            print(f"train.py: {run_dir}: {error}", file=sys.stderr)
            diverged = True
            continue
        results.append((run_dir, metrics))
        report(run_dir, metrics, task)
    if not results:
        return 1

    if len(results) > 1:
        summarize(config.logdir, results)
    where = results[0][0] if len(results) == 1 else config.logdir
    print(f"\nLook at the gates: tensorboard --logdir {where}")
    return 1 if diverged else 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def report(run_dir: str, metrics: dict, task) -> None:
    print(f"\nRun directory: {run_dir}")
    baseline = experiment.baseline_name(task)
    rows = [("val_loss", "baseline_val_loss")]
    if metrics.get("baseline_accuracy") is not None:
        rows.append(("val_accuracy", "baseline_accuracy"))
    if "val_bits_per_char" in metrics:
        rows.append(("val_bits_per_char", "baseline_bits_per_char"))
    for name, base in rows:
        value, reference = _fmt(metrics[name]), _fmt(metrics[base])
        print(f"  {name:<18} {value:>9}   ({baseline}: {reference})")
    if metrics["val_loss"]:
        ratio = metrics["baseline_val_loss"] / metrics["val_loss"]
        if ratio >= 1.05:
            print(f"  val_loss is {ratio:.1f}x below the baseline")
        else:
            print("  val_loss is at the baseline or above: nothing learned yet")
    print(
        f"  best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
        f"{metrics['wall_seconds']:.0f} s"
    )


def summarize(logdir: str, results: list[tuple[str, dict]]) -> None:
    """Prints the runs side by side and appends them to <logdir>/summary.csv."""
    columns = ["variant", "val_loss", "baseline_val_loss"]
    for extra in ("val_accuracy", "val_bits_per_char"):
        if extra in results[0][1]:
            columns.append(extra)
    columns += ["best_epoch", "epochs_run", "wall_seconds"]
    print("\n" + "  ".join(f"{c:>17}" for c in columns) + "  run")
    for run_dir, metrics in results:
        cells = [f"{_fmt(metrics.get(c)):>17}" for c in columns]
        print("  ".join(cells) + f"  {os.path.basename(run_dir)}")
    path = os.path.join(logdir, "summary.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["run", *SUMMARY_COLUMNS])
        for run_dir, metrics in results:
            row = [metrics.get(c) for c in SUMMARY_COLUMNS]
            writer.writerow([os.path.basename(run_dir), *row])
    print(f"Summary: {path}")


if __name__ == "__main__":
    sys.exit(main())
