"""Train keras_lstm models on sequence tasks and watch every gate in TensorBoard.

    python train.py                                   # adding problem, length 50
    python train.py --task text --epochs 5            # character model of Python's docs
    python train.py --variant standard,cifg,no_forget_gate --epochs 4
    python train.py --layer keras,keras_lstm          # beside keras.layers.LSTM
    python train.py --strategy mirrored --devices 2   # a batch split over 2 CPU devices
    python train.py --help                            # every option and its default

Each run writes logs/<run>/: config.json, TensorBoard logs (train/, validation/,
gates/), best.keras and, at the end, metrics.json. A bad command writes nothing:
it exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly():
    """Imports keras_lstm with TensorFlow's start-up lines kept off stderr.

    TensorFlow writes them to file descriptor 2 while it loads, whatever
    TF_CPP_MIN_LOG_LEVEL says; a bad command must print one line only. (Not
    `keras_lstm._quiet`: importing it would import keras_lstm, and TensorFlow.)
    """
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras_lstm.experiments.config
        import keras_lstm.experiments.distribute
        import keras_lstm.experiments.run
        import keras_lstm.experiments.tasks
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)
    return (
        keras_lstm.experiments.config,
        keras_lstm.experiments.distribute,
        keras_lstm.experiments.run,
        keras_lstm.experiments.tasks,
    )


config_lib, distribute, experiment, tasks = _import_quietly()
from keras_lstm import ArgumentError  # noqa: E402  (loaded above)
from keras_lstm.experiments.reporting import HPARAMS_METRICS  # noqa: E402

# summary.csv keeps one set of columns, so sweeps of any task append to it: the
# results every run reports to TensorBoard's HParams dashboard, and its best epoch.
SUMMARY_COLUMNS = ["task", "variant", "layer", *HPARAMS_METRICS, "best_epoch"]
# The results reported beside a baseline: metric -> (its baseline in
# metrics.json, whether lower is better).
COMPARED = {
    "val_loss": ("baseline_val_loss", True),
    "val_accuracy": ("baseline_accuracy", False),
    "val_bits_per_char": ("baseline_bits_per_char", True),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything that can be wrong with the command is found before anything is
    # written, so a bad command leaves the log directory as it was. Each check
    # raises an ArgumentError naming a setting, which is also the name of its
    # flag.
    try:
        config = config_lib.from_args(argv)
        # First: devices can be configured only before TensorFlow's first op.
        chief = distribute.is_chief(config)
        strategy = distribute.make_strategy(config)
        task = tasks.task_for(config)
        experiment.check_model(config, task)
        if chief:
            run_dirs = {
                (layer, v): experiment.plan_run_dir(config, v, layer)
                for layer, v in config.runs
            }
            locks = experiment.open_runs(config, run_dirs, argv)
        else:
            # Another worker writes nothing in the log directory; it reads the
            # run it resumes, which the chief holds.
            run_dirs = {
                (layer, v): experiment.plan_run_dir(config, v, layer)
                if config.resume
                else None
                for layer, v in config.runs
            }
            locks = contextlib.nullcontext()
    except ArgumentError as error:
        flag = "--" + error.argument.replace("_", "-")
        print(f"train.py: error: {error.message(flag)}", file=sys.stderr)
        return 2
    with locks:
        try:
            return run_all(config, task, run_dirs, argv, strategy, chief)
        except distribute.LOST_WORKER_ERRORS as error:
            print(
                "train.py: error: a worker of the cluster stopped answering ("
                f"{distribute.describe_lost_worker(error)})",
                file=sys.stderr,
            )
            return 1


def run_all(
    config, task, run_dirs: dict, argv, strategy=None, chief: bool = True
) -> int:
    """Runs each (layer, variant) in its folder, reports, and returns the exit code.

    A worker that is not the chief trains in step with it and reports nothing.
    """
    results, diverged = [], False
    for (layer, variant), run_dir in run_dirs.items():
        where = run_dir if chief else "a temporary folder (the chief writes the run)"
        print(f"\n== {task.name}, {layer} {variant}: {where}", flush=True)
        try:
            metrics = experiment.run(
                config,
                task,
                variant,
                layer,
                run_dir,
                argv,
                strategy=strategy,
                chief=chief,
            )
        except experiment.NaNLossError as error:
            # The other runs of a sweep still run; the exit code tells.
            print(f"train.py: {where}: {error}", file=sys.stderr)
            diverged = True
            continue
        results.append((run_dir, metrics))
        if chief:
            report(run_dir, metrics, task)
    if not results:
        return 1
    if not chief:
        return 1 if diverged else 0

    if len(results) > 1:
        summarize(config.logdir, results)
    where = results[0][0] if len(results) == 1 else config.logdir
    print(f"\nLook at the gates: tensorboard --logdir {where}")
    return 1 if diverged else 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def compare(value: float, baseline: float, lower_is_better: bool) -> str:
    """How `value` stands against `baseline`, in words: which side, how far."""
    difference = value - baseline
    if difference == 0:
        return f"at the baseline {_fmt(baseline)}"
    side = "below" if difference < 0 else "above"
    share = f"{difference / abs(baseline):+.1%}, " if baseline else ""
    verdict = "better" if (difference < 0) == lower_is_better else "worse"
    return (
        f"{_fmt(abs(difference))} {side} the baseline {_fmt(baseline)} "
        f"({share}{verdict})"
    )


def report(run_dir: str, metrics: dict, task) -> None:
    print(f"\nRun directory: {run_dir}")
    names = {}
    for name, (base, lower_is_better) in COMPARED.items():
        value, baseline = metrics.get(name), metrics.get(base)
        if value is None or baseline is None:
            continue
        comparison = compare(value, baseline, lower_is_better)
        print(f"  {name:<18} {_fmt(value):>9}   {comparison}")
        names[name] = experiment.baseline_name(task, name)
    if len(set(names.values())) == 1:
        print(f"  baseline: {next(iter(names.values()))}")
    elif names:
        print("  baselines: " + "; ".join(f"{k}: {v}" for k, v in names.items()))
    sequences = metrics.get("val_sequences")
    if sequences is not None and sequences < experiment.FEW_VALIDATION_SEQUENCES:
        print(
            f"  measured on {sequences} validation sequences only: too few to "
            "trust a difference of a few percent"
        )
    print(
        f"  best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
        f"{metrics['wall_seconds']:.0f} s"
    )


def summarize(logdir: str, results: list[tuple[str, dict]]) -> None:
    """Prints the runs side by side and appends them to <logdir>/summary.csv."""
    columns = ["layer", "variant", "val_loss", "baseline_val_loss"]
    for extra in ("val_accuracy", "val_bits_per_char"):
        if extra in results[0][1]:
            columns.append(extra)
    columns += ["best_epoch", "epochs_run", "wall_seconds"]
    print("\n" + "  ".join(f"{c:>17}" for c in columns) + "  run")
    for run_dir, metrics in results:
        cells = [f"{_fmt(metrics.get(c)):>17}" for c in columns]
        print("  ".join(cells) + f"  {os.path.basename(run_dir)}")
    path = os.path.join(logdir, "summary.csv")
    header = ["run", *SUMMARY_COLUMNS]
    rows = [
        {
            "run": os.path.basename(run_dir),
            **{c: metrics.get(c) for c in SUMMARY_COLUMNS},
        }
        for run_dir, metrics in results
    ]
    old, rewrite = [], not os.path.exists(path)
    if not rewrite:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != header:
                # Written before a column was added: rewritten in today's
                # columns, those it lacks left empty in its rows.
                old, rewrite = list(reader), True
    tmp = f"{path}.tmp"
    with open(tmp if rewrite else path, "w" if rewrite else "a", newline="") as f:
        writer = csv.DictWriter(f, header, restval="", extrasaction="ignore")
        if rewrite:
            writer.writeheader()
        writer.writerows(old + rows)
    if rewrite:
        os.replace(tmp, path)
    print(f"Summary: {path}")


if __name__ == "__main__":
    sys.exit(main())
