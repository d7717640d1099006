"""What train.py reports: HParams, final metrics, the report and summary.csv.

Everything a run tells the user beyond its gates and its Keras logs is
written here: the hyperparameters and final results for TensorBoard's HParams
dashboard, metrics.json's numbers beside the task's baseline, the lines
train.py prints (each run's report, a sweep's table, errors), and the
summary.csv that sweeps append to.
"""

from __future__ import annotations

import csv
import os
import sys

from keras_lstm import VARIANTS
from keras_lstm.experiments.config import LAYERS, PRECISIONS, STRATEGIES, TrainConfig
from keras_lstm.experiments.tasks import TASKS, Task

# Below this many validation sequences the report warns that small differences
# from the baseline may be chance (an accuracy's standard error can exceed 0.05).
FEW_VALIDATION_SEQUENCES = 100

# --- TensorBoard's HParams dashboard ------------------------------------------

# Every value of the string hparams. TensorBoard reads one run's list of
# hparams for the whole log directory, so each lists what any run can record.
HPARAM_CHOICES = {
    "task": TASKS,
    "variant": VARIANTS,
    "layer": LAYERS,
    "strategy": STRATEGIES,
    "precision": PRECISIONS,
}
# Shown first in the HParams dashboard: what tells the runs of a sweep, or of
# a log directory, apart.
HPARAMS_SHOWN = ("task", "variant", "layer")


def hparams(config: TrainConfig, variant: str, layer: str, task: Task) -> dict:
    """The hyperparameters of one run, as the HParams dashboard shows them."""
    return {
        "task": config.task,
        "variant": variant,
        "layer": layer,
        "units": config.units,
        "layers": config.layers,
        "bidirectional": config.bidirectional,
        "dropout": config.dropout,
        "recurrent_dropout": config.recurrent_dropout,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "clipnorm": config.clipnorm,
        "seq_len": int(task.x_train.shape[1]),
        "seed": config.seed,
        # Where and how precisely the run started; --resume may change where.
        "strategy": config.strategy,
        "precision": config.precision,
    }


HPARAMS_METRICS = (
    "val_loss",
    "baseline_val_loss",
    "val_accuracy",
    "baseline_accuracy",
    "val_bits_per_char",
    "baseline_bits_per_char",
    "epochs_run",
    "wall_seconds",
)


def write_hparams(
    run_dir: str,
    hparams: dict,
    trial_id: str,
    choices: dict[str, tuple[str, ...]] = HPARAM_CHOICES,
    shown: tuple[str, ...] = HPARAMS_SHOWN,
) -> None:
    """Records a run's hyperparameters for TensorBoard's HParams dashboard.

    Args:
        run_dir: Directory of the TensorBoard run to write.
        hparams: Name -> value: a string, a bool, or a number that is not
            negative (a size, a seed, a rate).
        trial_id: The run's name in the dashboard.
        choices: Name -> every value of each string hparam (default: those
            of train.py's settings).
        shown: Names of the hparams the dashboard shows before the others
            (default: task, variant, layer).
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import plugin_data_pb2

    # The same experiment in every run (TensorBoard reads one, whichever it finds
    # first): the run settings, and as metrics the final results beside their
    # baselines rather than every scalar of the run.
    metrics = [
        hp.Metric(f"final/{name}", display_name=name) for name in HPARAMS_METRICS
    ]
    metrics += [
        hp.Metric("epoch_loss", group="validation", display_name="val_loss per epoch"),
        hp.Metric("epoch_loss", group="train", display_name="loss per epoch"),
    ]
    declared = [
        hp.HParam(name, _domain(hp, name, value, choices))
        for name, value in hparams.items()
    ]
    config = hp.hparams_config_pb(hparams=declared, metrics=metrics)
    # The dashboard shows five hparams until the user picks others: those
    # marked `differs` first, then by name. TensorBoard computes `differs` from
    # the runs' values only where no run wrote an experiment; a written one is
    # read as it is, so `shown` is marked here.
    (value,) = config.value
    data = plugin_data_pb2.HParamsPluginData.FromString(
        value.metadata.plugin_data.content
    )
    for info in data.experiment.hparam_infos:
        info.differs = info.name in shown
    value.metadata.plugin_data.content = data.SerializeToString()
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(config.SerializeToString(), step=0)
        hp.hparams(hparams, trial_id=trial_id)
    writer.close()


def _domain(hp, name: str, value, choices: dict):
    """The values of an hparam in any run, not only this one's."""
    if isinstance(value, bool):
        return hp.Discrete([False, True])
    if isinstance(value, str):
        return hp.Discrete(list(choices[name]))
    if value < 0:
        raise ValueError(
            f"Received an invalid value for hparam `{name}`: expected a number "
            f"that is not negative, got {value!r}"
        )
    if isinstance(value, int):
        # TensorBoard keeps every number as a float64, exact up to 2**53.
        return hp.IntInterval(0, 2**53)
    return hp.RealInterval(0.0, sys.float_info.max)


# --- final metrics --------------------------------------------------------------


def final_metrics(
    config: TrainConfig, task: Task, variant: str, layer: str, state: dict
) -> dict:
    """The best epoch's validation metrics beside the task's trivial baseline."""
    best = state.get("best_logs", {})
    metrics = {
        "task": config.task,
        "variant": variant,
        "layer": layer,
        "val_loss": best.get("val_loss"),
        "baseline_val_loss": task.baseline["val_loss"],
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state["epoch"],
        "val_sequences": len(task.x_val),
        "wall_seconds": round(state.get("wall_seconds", 0.0), 2),
    }
    if task.kind in ("classification", "sequence_classification", "language_model"):
        metrics["val_accuracy"] = best.get("val_accuracy")
        metrics["baseline_accuracy"] = task.baseline.get("val_accuracy")
    if task.kind == "language_model":
        metrics["val_bits_per_char"] = best.get("val_bits_per_char")
        metrics["baseline_bits_per_char"] = task.baseline["val_bits_per_char"]
    return metrics


def write_final_metrics(run_dir: str, metrics: dict, step: int) -> None:
    """Writes a run's final metrics and baselines as scalars beside its hparams."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default(step=step):
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(
                    f"final/{name}",
                    float(value),
                    description=f"{name} at the end of the run (best epoch)",
                )
    writer.close()


# --- what train.py prints ---------------------------------------------------------

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


def error(message: str) -> None:
    """The one line on stderr of a command that stops with an error."""
    print(f"train.py: error: {message}", file=sys.stderr)


def start(task: Task, layer: str, variant: str, run_dir: str, chief: bool) -> str:
    """Announces a run; returns where it writes, in words, for later lines."""
    where = run_dir if chief else "a temporary folder (the chief writes the run)"
    print(f"\n== {task.name}, {layer} {variant}: {where}", flush=True)
    return where


def stopped(where: str, reason: Exception) -> None:
    """A run of the command stopped; the others still run."""
    print(f"train.py: {where}: {reason}", file=sys.stderr)


def finished_already(run_dir: str, metrics: dict) -> None:
    """`--resume` of a run that has trained its epochs: nothing to do."""
    print(
        f"{run_dir} finished {metrics['epochs_run']} epochs already; "
        "a larger --epochs trains on"
    )


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


def report(run_dir: str, metrics: dict, task: Task) -> None:
    """One run's results, each beside its baseline and what scores that."""
    print(f"\nRun directory: {run_dir}")
    names = {}
    for name, (base, lower_is_better) in COMPARED.items():
        value, baseline = metrics.get(name), metrics.get(base)
        if value is None or baseline is None:
            continue
        comparison = compare(value, baseline, lower_is_better)
        print(f"  {name:<18} {_fmt(value):>9}   {comparison}")
        names[name] = task.baseline_names[name]
    if len(set(names.values())) == 1:
        print(f"  baseline: {next(iter(names.values()))}")
    elif names:
        print("  baselines: " + "; ".join(f"{k}: {v}" for k, v in names.items()))
    sequences = metrics.get("val_sequences")
    if sequences is not None and sequences < FEW_VALIDATION_SEQUENCES:
        print(
            f"  measured on {sequences} validation sequences only: too few to "
            "trust a difference of a few percent"
        )
    print(
        f"  best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
        f"{metrics['wall_seconds']:.0f} s"
    )


def conclude(logdir: str, results: list[tuple[str, dict]]) -> None:
    """After the last run: a sweep's table, and where to look at the gates."""
    if len(results) > 1:
        summarize(logdir, results)
    where = results[0][0] if len(results) == 1 else logdir
    print(f"\nLook at the gates: tensorboard --logdir {where}")


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
