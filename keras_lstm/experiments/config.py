"""The training configuration: one dataclass, its command line, its checks."""

from __future__ import annotations

import argparse
import dataclasses
import os

from keras_lstm import VARIANTS, ArgumentError, _checks
from keras_lstm.experiments.tasks import LENGTH_TASKS, TASKS

SEQ_LEN = 50  # the default --seq-len of the tasks that take one
# See keras_lstm.experiments.distribute.
STRATEGIES = ("none", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# The LSTM a run trains: ours, or Keras's own to compare against (whose gates
# are logged the same way; it has the standard variant only).
LAYERS = ("keras_lstm", "keras")


def _field(default, help, shown=None):
    """A setting: its default, a short why, and the default as --help shows it
    (`shown`, where the value itself would not tell the user what happens)."""
    shown = default if shown is None else shown
    return dataclasses.field(default=default, metadata={"help": help, "shown": shown})


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json so it can be repeated."""

    task: str = _field("adding", f"task to learn: {', '.join(TASKS)}")
    data: str | None = _field(
        None,
        "data file: UTF-8 text for 'text', .npz with arrays x (samples, time, "
        "features) and y for 'npz'",
        shown="none; text reads Python's pydoc prose",
    )
    seq_len: int | None = _field(
        None,
        "time steps per sequence (copy: the blank gap); not for npz, whose "
        "sequences keep the length they have in the file",
        shown=SEQ_LEN,
    )
    units: int = _field(64, "units per LSTM layer")
    layers: int = _field(1, "stacked LSTM layers")
    bidirectional: bool = _field(False, "wrap each LSTM layer in Bidirectional")
    variant: str = _field(
        "standard",
        "LSTM variant, or a comma-separated list for one run per variant "
        f"(same data and seed): {', '.join(VARIANTS)}",
    )
    layer: str = _field(
        "keras_lstm",
        "LSTM layer: keras_lstm (keras_lstm.LSTM), keras (keras.layers.LSTM, to "
        "compare against; standard variant only), or a comma-separated list for "
        "one run per layer",
    )
    dropout: float = _field(0.0, "dropout of the LSTM inputs, in [0, 1)")
    recurrent_dropout: float = _field(0.0, "dropout of h_{t-1}, in [0, 1)")
    epochs: int = _field(8, "epochs to train")
    batch_size: int = _field(64, "sequences per training step")
    lr: float = _field(3e-3, "Adam learning rate")
    clipnorm: float = _field(1.0, "clip each gradient to this norm; 0 disables")
    seed: int = _field(0, "seed of the data, the weights and dropout")
    num_train: int = _field(16000, "training sequences (text, npz: at most)")
    num_val: int = _field(1000, "validation sequences (text, npz: at most)")
    logdir: str = _field("logs", "directory that holds one folder per run")
    run_name: str | None = _field(
        None, "name of the run folder", shown="the start time and main settings"
    )
    resume: bool = _field(
        False,
        "continue the run (--run-name, else the latest run of this command) "
        "from its last finished epoch",
    )
    strategy: str = _field(
        "none",
        "where to train: none (one device), mirrored (every local GPU, or "
        "--devices CPU devices), multi_worker (the machines TF_CONFIG names)",
    )
    devices: int | None = _field(
        None,
        "with --strategy mirrored: split each batch over this many logical CPU devices",
        shown="every local GPU",
    )
    precision: str = _field(
        "float32",
        "float32, or Keras mixed precision: mixed_float16 (loss scaled), "
        "mixed_bfloat16; the output layer stays float32",
    )
    gate_freq: int = _field(1, "log gates to TensorBoard every this many epochs")
    probe_size: int = _field(32, "validation sequences whose gates are logged")

    def __post_init__(self):
        # Recorded resolved in config.json, so the run can be repeated exactly.
        if self.seq_len is None and self.task in LENGTH_TASKS:
            self.seq_len = SEQ_LEN

    @property
    def variants(self) -> list[str]:
        return _listed(self.variant)

    @property
    def runs(self) -> list[tuple[str, str]]:
        """`(layer, variant)` of each run of this command, in the order listed."""
        return [(layer, v) for layer in _listed(self.layer) for v in self.variants]


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",")]


def validate(config: TrainConfig) -> None:
    """Raises an `ArgumentError` (a ValueError) for the first unusable setting.

    Each setting is checked in one place, the one that uses it: here those of
    the model and its training; the task's (task, data, seq_len, num_train,
    num_val, seed) in `tasks.make_task`, which reads the data; whether a run
    folder can be created or continued (logdir, run_name, resume) in `rundir`;
    whether the model fits the task (bidirectional) in `model.check_model`.
    Ranges are checked by `keras_lstm._checks`, in Keras's phrasing.
    """
    for name, choices in (("variant", VARIANTS), ("layer", LAYERS)):
        given = getattr(config, name)
        _checks.names_in(name, _listed(given), choices, given)
    if "keras" in _listed(config.layer) and config.variants != ["standard"]:
        raise ArgumentError(
            "layer",
            "keras_lstm for a variant other than standard (keras.layers.LSTM has none)",
            f"{config.layer!r} with --variant {config.variant}",
        )
    _checks.name_in("strategy", config.strategy, STRATEGIES)
    _checks.name_in("precision", config.precision, PRECISIONS)
    if config.devices is not None:
        _checks.positive_int("devices", config.devices)
        if config.strategy != "mirrored":
            raise ArgumentError(
                "devices",
                "no value unless --strategy mirrored",
                f"{config.devices!r} with --strategy {config.strategy}",
            )
    for name in ("units", "layers", "epochs", "batch_size", "gate_freq", "probe_size"):
        _checks.positive_int(name, getattr(config, name))
    _checks.positive_number("lr", config.lr)
    _checks.non_negative_number("clipnorm", config.clipnorm)
    for name in ("dropout", "recurrent_dropout"):
        _checks.number_in(name, getattr(config, name), 0, 1)
    if config.run_name is not None and (
        not config.run_name
        or config.run_name in (".", "..")
        or os.sep in config.run_name
        or (os.altsep and os.altsep in config.run_name)
    ):
        raise ArgumentError(
            "run_name",
            "a folder name without path separators",
            repr(config.run_name),
        )


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad command line in one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    """The command line of `train.py`, generated from `TrainConfig`."""
    parser = _OneLineParser(
        prog="train.py",
        description=(
            "Train a keras_lstm model on a sequence task and log every gate to "
            "TensorBoard."
        ),
    )
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help = f"{field.metadata['help']} (default: {field.metadata['shown']})"
        if field.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=help)
            continue
        kind = {"int": int, "float": float}.get(field.type.removesuffix(" | None"), str)
        parser.add_argument(
            flag,
            type=kind,
            default=field.default,
            help=help,
            metavar=field.name.upper(),
        )
    return parser


def from_args(argv=None) -> TrainConfig:
    """Parses `argv` into a checked `TrainConfig` (exits 2 on bad syntax).

    Raises:
        ArgumentError: For a setting `validate` refuses.
    """
    args = parser().parse_args(argv)
    config = TrainConfig(**vars(args))
    validate(config)
    return config
