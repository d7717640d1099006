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
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_stderr():
    """Keeps TensorFlow's start-up lines off stderr while keras_lstm imports.

    TensorFlow writes them to file descriptor 2 while it loads, whatever
    TF_CPP_MIN_LOG_LEVEL says; a bad command must print one line only. (Not
    `keras_lstm._quiet`: importing it would import keras_lstm, and TensorFlow.)
    """
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)


with _quiet_stderr():
    from keras_lstm import ArgumentError
    from keras_lstm.experiments import config as config_lib
    from keras_lstm.experiments import distribute, reporting, rundir, tasks
    from keras_lstm.experiments import model as model_lib
    from keras_lstm.experiments import run as experiment
    from keras_lstm.experiments.atomic import WriteError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)

    # Parse. Everything that can be wrong with the command is found before
    # anything is written, so a bad command leaves the log directory as it
    # was. Each check raises an ArgumentError naming a setting, which is also
    # the name of its flag.
    try:
        config = config_lib.from_args(argv)
        # First: devices can be configured only before TensorFlow's first op.
        chief = distribute.is_chief(config)
        strategy = distribute.make_strategy(config)
        task = tasks.task_for(config)
        model_lib.check_model(config, task)
        run_dirs = rundir.plan_runs(config, chief)
        # The last check and the first write: the chief creates and locks the
        # run folders; another worker writes nothing in the log directory.
        locks = (
            rundir.open_runs(config, run_dirs, argv)
            if chief
            else contextlib.nullcontext()
        )
    except ArgumentError as error:
        reporting.error(error.message("--" + error.argument.replace("_", "-")))
        return 2

    # Run each (layer, variant) in its folder, and report it. A worker that is
    # not the chief trains in step with it and reports nothing.
    results, diverged = [], False
    with locks:
        for (layer, variant), run_dir in run_dirs.items():
            where = reporting.start(task, layer, variant, run_dir, chief)
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
                reporting.stopped(where, error)
                diverged = True
                continue
            except WriteError as error:
                # Like a logdir that cannot be written before the run (exit
                # code 2), but found during it.
                reporting.error(
                    f"{error}; the run stopped, its last finished epoch is kept "
                    "(--resume continues it)"
                )
                return 2
            except distribute.LOST_WORKER_ERRORS as error:
                lost = distribute.describe_lost_worker(error)
                reporting.error(f"a worker of the cluster stopped answering ({lost})")
                return 1
            results.append((run_dir, metrics))
            if chief:
                reporting.report(run_dir, metrics, task)

    # Report the command: the runs side by side, and where to look.
    if chief and results:
        reporting.conclude(config.logdir, results)
    return 0 if results and not diverged else 1


if __name__ == "__main__":
    sys.exit(main())
