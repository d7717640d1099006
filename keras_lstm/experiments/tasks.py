"""Tasks for LSTM experiments: generated on the fly or read from a local file.

Nothing is downloaded. The synthetic tasks (`adding`, `copy`, `order`) are drawn
from `numpy.random.default_rng`, so a seed gives the same data on every machine;
the training and validation sets use independent streams, so the validation set
does not change when `num_train` does. `text` reads any UTF-8 file, or by default
the English prose that ships with Python in `pydoc_data.topics`. `npz` reads the
user's own arrays.

Every task returns float32 inputs of shape (samples, time, features), so one model
builder fits all of them; text arrives one-hot. `Task.kind` says what the targets
are and which loss fits them.

Example:

    task = make_task("adding", seq_len=50, seed=0, num_train=1000, num_val=200)
    task.x_train.shape  # (1000, 50, 2)
    task.baseline       # {"val_loss": 0.1667, "val_loss_empirical": ...}
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import zipfile
from collections.abc import Callable
from typing import NoReturn

import numpy as np

from keras_lstm import ArgumentError, _checks

TASKS = ("adding", "copy", "order", "text", "npz")
# The tasks whose sequence length `seq_len` chooses; npz keeps the file's.
LENGTH_TASKS = ("adding", "copy", "order", "text")

# Copy memory (Arjovsky et al. 2016): remember 10 symbols drawn from 8.
COPY_LENGTH = 10
COPY_SYMBOLS = 8
COPY_DELIMITER = COPY_SYMBOLS + 1

# Temporal order (Hochreiter and Schmidhuber 1997, experiment 6a): distractors
# a-d, relevant symbols X and Y, start marker E and end marker B (the trigger).
ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")
ORDER_CLASSES = ("XX", "XY", "YX", "YY")

# Text: one-hot inputs stay small when the rarest characters share one id.
MAX_VOCAB = 100
UNK = "\ufffd"
TEXT_VAL_FRACTION = 0.1
NPZ_VAL_FRACTION = 0.2
# Fewer samples leave a validation split of 3 or fewer: a baseline comparison
# on it says nothing.
NPZ_MIN_SAMPLES = 20


@dataclasses.dataclass
class Task:
    """A data set and what a model needs to know to learn it.

    Attributes:
        name: One of `TASKS`.
        x_train: float32 inputs, (samples, time, features).
        y_train: Targets, as `kind` describes.
        x_val: Validation inputs, like `x_train`.
        y_val: Validation targets, like `y_train`.
        kind: What the targets are and the loss that fits them:
            "regression": float32 (samples, k); mean squared error.
            "classification": int32 labels (samples,); sparse categorical
                cross-entropy.
            "sequence_classification": int32 labels (samples, time), one per
                step; sparse categorical cross-entropy.
            "language_model": int32 ids of the next character (samples, time);
                sparse categorical cross-entropy, and bits per character is
                that loss divided by ln 2.
        output_units: Units of the final Dense layer.
        return_sequences: Whether the model predicts at every step.
        causal: Whether the prediction at step t may use only the inputs up to
            step t: true where a later input is an earlier step's target (a
            language model's next character), so a model that reads ahead, like
            the backward half of a `Bidirectional`, would read the answers.
        baseline: What a predictor that ignores the inputs scores, keyed by the
            Keras metric it compares with ("val_loss", "val_accuracy",
            "val_bits_per_char"). Losses are in nats. Keys that are not metric
            names (e.g. "val_loss_empirical") give a second, measured value.
        baseline_names: What scores each metric's baseline, in words, keyed as
            `baseline`, for the report (e.g. "predicting the mean").
        step_labels: One input sequence (time, features) -> one short string per
            step, for the time axis of heatmaps.
        vocab: Text only: the character of each id; `UNK` stands for the
            characters that did not fit in the vocabulary.
        decode: Text only: integer ids -> string.
    """

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_val: np.ndarray = dataclasses.field(repr=False)
    y_val: np.ndarray = dataclasses.field(repr=False)
    kind: str
    output_units: int
    return_sequences: bool
    baseline: dict[str, float]
    baseline_names: dict[str, str]
    step_labels: Callable[[np.ndarray], list[str]] = dataclasses.field(repr=False)
    causal: bool = False
    vocab: list[str] | None = dataclasses.field(default=None, repr=False)
    decode: Callable[[np.ndarray], str] | None = dataclasses.field(
        default=None, repr=False
    )


def make_task(
    task: str,
    *,
    seq_len: int | None = None,
    seed: int,
    num_train: int,
    num_val: int,
    data: str | os.PathLike | None = None,
) -> Task:
    """Builds the task `task`, one of `TASKS`.

    Args:
        task: The task's name.
        seq_len: Time steps per sequence (`copy`: the length of the blank gap,
            so sequences have seq_len + 20 steps). Required by the tasks in
            `LENGTH_TASKS`; `npz` sequences keep the length they have in the
            file, so `npz` refuses any value but None.
        seed: Seeds every random draw.
        num_train: Training sequences; for `text` and `npz`, at most this many.
        num_val: Validation sequences; for `text` and `npz`, at most this many.
        data: A file: required by `npz` (an .npz archive), optional for `text`
            (UTF-8 text; default: `pydoc_data.topics`), refused by the others.

    Returns:
        A `Task`.

    Raises:
        ArgumentError: (a ValueError) For any invalid argument or unusable file,
            in one line that names the argument, the value received and what was
            expected; `.argument` is the argument's name.
    """
    _checks.one_of("task", task, TASKS)
    if task not in LENGTH_TASKS and seq_len is not None:
        _invalid(
            "seq_len",
            f"no value for task {task!r} (its sequences keep the length they "
            "have in the file)",
            seq_len,
        )
    sizes = [("num_train", num_train), ("num_val", num_val)]
    if task in LENGTH_TASKS:
        sizes.insert(0, ("seq_len", seq_len))
    for arg, value in sizes:
        _checks.positive_int(arg, value)
    _checks.non_negative_int("seed", seed)
    if task in ("adding", "copy", "order") and data is not None:
        _invalid("data", f"None, since task {task!r} generates its data", data)
    if task == "npz" and data is None:
        _invalid("data", "the path of an .npz file for task 'npz'", data)

    # Independent streams: the validation set does not depend on num_train.
    train_seed, val_seed = np.random.SeedSequence(seed).spawn(2)
    rng_train = np.random.default_rng(train_seed)
    rng_val = np.random.default_rng(val_seed)
    num_train, num_val = int(num_train), int(num_val)
    if task == "npz":
        return _npz(data, num_train, num_val, seed)
    seq_len = int(seq_len)
    if task == "adding":
        return _adding(seq_len, num_train, num_val, rng_train, rng_val)
    if task == "copy":
        return _copy(seq_len, num_train, num_val, rng_train, rng_val)
    if task == "order":
        return _order(seq_len, num_train, num_val, rng_train, rng_val)
    return _text(data, seq_len, num_train, num_val, rng_train, rng_val)


def task_for(config) -> Task:
    """The task a `TrainConfig` describes (`make_task` with its settings)."""
    return make_task(
        config.task,
        seq_len=config.seq_len,
        seed=config.seed,
        num_train=config.num_train,
        num_val=config.num_val,
        data=config.data,
    )


def _adding(seq_len, num_train, num_val, rng_train, rng_val) -> Task:
    """Adding problem (Hochreiter and Schmidhuber 1997; modern form).

    Inputs (samples, T, 2): channel 0 holds values from U[0, 1], channel 1 is 1 at
    exactly two steps, one in each half (first half: steps [0, T // 2)). Target
    (samples, 1): the sum of the two marked values. Predicting the mean, 1.0,
    gives MSE Var(U1 + U2) = 2/12 = 1/6; `val_loss_empirical` is the MSE of the
    training-set mean on the validation set.
    """
    _checks.int_at_least("seq_len", seq_len, 2, "for task 'adding'")

    def draw(n, rng):
        x = np.zeros((n, seq_len, 2), np.float32)
        x[:, :, 0] = rng.random((n, seq_len))
        half = seq_len // 2
        rows = np.arange(n)
        x[rows, rng.integers(0, half, n), 1] = 1.0
        x[rows, rng.integers(half, seq_len, n), 1] = 1.0
        y = np.sum(x[:, :, 0] * x[:, :, 1], axis=1, keepdims=True)
        return x, y.astype(np.float32)

    x_train, y_train = draw(num_train, rng_train)
    x_val, y_val = draw(num_val, rng_val)
    empirical = float(np.mean((y_val - np.mean(y_train)) ** 2))
    return Task(
        name="adding",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        kind="regression",
        output_units=1,
        return_sequences=False,
        baseline={"val_loss": 1 / 6, "val_loss_empirical": empirical},
        baseline_names={"val_loss": "predicting the mean"},
        step_labels=_adding_labels,
    )


def _adding_labels(sequence: np.ndarray) -> list[str]:
    return [f"{v:.2f}" if m else "" for v, m in np.asarray(sequence)]


def _copy(seq_len, num_train, num_val, rng_train, rng_val) -> Task:
    """Copy memory (Arjovsky et al. 2016).

    A sequence of T + 20 steps: 10 symbols drawn uniformly from 1..8, T - 1
    blanks (0), the delimiter (9), then 10 blanks during which the model must
    output the 10 symbols. Inputs: one-hot over 10 classes, (samples, T + 20, 10).
    Targets (samples, T + 20): blank (0) for the first T + 10 steps, then the 10
    symbols; 9 output classes, since the delimiter is never a target.

    Baseline: predict blank for T + 10 steps and a uniform guess over the 8
    symbols for the last 10: cross-entropy 10 ln 8 / (T + 20), per-step accuracy
    (T + 10 + 10/8) / (T + 20).
    """
    length = seq_len + 2 * COPY_LENGTH

    def draw(n, rng):
        symbols = rng.integers(1, COPY_SYMBOLS + 1, (n, COPY_LENGTH))
        ids = np.zeros((n, length), np.int32)
        ids[:, :COPY_LENGTH] = symbols
        ids[:, length - COPY_LENGTH - 1] = COPY_DELIMITER
        y = np.zeros((n, length), np.int32)
        y[:, -COPY_LENGTH:] = symbols
        return _one_hot(ids, COPY_DELIMITER + 1), y

    x_train, y_train = draw(num_train, rng_train)
    x_val, y_val = draw(num_val, rng_val)
    recall = COPY_LENGTH / COPY_SYMBOLS
    return Task(
        name="copy",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        kind="sequence_classification",
        output_units=COPY_SYMBOLS + 1,
        return_sequences=True,
        baseline={
            "val_loss": COPY_LENGTH * math.log(COPY_SYMBOLS) / length,
            "val_accuracy": (length - COPY_LENGTH + recall) / length,
        },
        baseline_names=dict.fromkeys(
            ("val_loss", "val_accuracy"), "the best memoryless guess"
        ),
        step_labels=_copy_labels,
    )


def _copy_labels(sequence: np.ndarray) -> list[str]:
    names = {0: "", COPY_DELIMITER: ":"}
    return [names.get(int(i), str(int(i))) for i in np.argmax(sequence, axis=-1)]


def _order(seq_len, num_train, num_val, rng_train, rng_val) -> Task:
    """Temporal order (Hochreiter and Schmidhuber 1997, experiment 6a).

    A sequence of T one-hot symbols from a, b, c, d, X, Y, E, B: E at the start,
    B at the end, random distractors a-d between, except for two steps holding X
    or Y. The paper places them at t1 in [10, 20] and t2 in [50, 60] of ~100
    steps; here t1 is in [0.1 T, 0.2 T] and t2 in [0.5 T, 0.6 T] (floored,
    inclusive, kept inside the sequence, t1 < t2). Label: the order of the two,
    0 = XX, 1 = XY, 2 = YX, 3 = YY. Inputs (samples, T, 8), labels (samples,).

    Baseline: chance, accuracy 1/4 and cross-entropy ln 4.
    """
    # E, X or Y at t1, X or Y at t2 > t1, B: from 4 steps, t2 <= T - 2.
    _checks.int_at_least("seq_len", seq_len, 4, "for task 'order'")
    lo1 = max(1, int(0.1 * seq_len))
    hi1 = max(lo1, int(0.2 * seq_len))
    lo2 = max(hi1 + 1, int(0.5 * seq_len))
    hi2 = max(lo2, int(0.6 * seq_len))
    x_sym, y_sym = ORDER_SYMBOLS.index("X"), ORDER_SYMBOLS.index("Y")

    def draw(n, rng):
        ids = rng.integers(0, 4, (n, seq_len))
        ids[:, 0] = ORDER_SYMBOLS.index("E")
        ids[:, -1] = ORDER_SYMBOLS.index("B")
        first, second = rng.integers(0, 2, n), rng.integers(0, 2, n)
        rows = np.arange(n)
        ids[rows, rng.integers(lo1, hi1 + 1, n)] = np.where(first, y_sym, x_sym)
        ids[rows, rng.integers(lo2, hi2 + 1, n)] = np.where(second, y_sym, x_sym)
        y = (2 * first + second).astype(np.int32)
        return _one_hot(ids, len(ORDER_SYMBOLS)), y

    x_train, y_train = draw(num_train, rng_train)
    x_val, y_val = draw(num_val, rng_val)
    return Task(
        name="order",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        kind="classification",
        output_units=len(ORDER_CLASSES),
        return_sequences=False,
        baseline={"val_loss": math.log(4), "val_accuracy": 0.25},
        baseline_names={"val_loss": "chance", "val_accuracy": "chance"},
        step_labels=_order_labels,
    )


def _order_labels(sequence: np.ndarray) -> list[str]:
    return [ORDER_SYMBOLS[i] for i in np.argmax(sequence, axis=-1)]


def _text(data, seq_len, num_train, num_val, rng_train, rng_val) -> Task:
    """Character-level language model.

    The text is `data` (UTF-8) or, by default, the values of
    `pydoc_data.topics.topics` joined in sorted key order (~465 k characters of
    English prose about Python). Vocabulary: the sorted distinct characters; if
    there are more than `MAX_VOCAB`, the `MAX_VOCAB - 1` most frequent and `UNK`
    for the rest. The last 10% of the text is the validation split. Each split
    is cut into windows of T + 1 characters starting every T characters, so the
    inputs of consecutive windows tile the text; when there are more windows
    than `num_train` / `num_val`, a seeded random subset, kept in text order.
    Inputs: one-hot (samples, T, vocab); targets: the ids of the next characters
    (samples, T), i.e. the inputs shifted by one, so the task is `causal`.

    Baseline: the unigram entropy of the training split, in bits per character
    (`val_bits_per_char`) and in nats (`val_loss`).
    """
    if data is None:
        from pydoc_data.topics import topics

        text = "".join(topics[key] for key in sorted(topics))
    else:
        text = _read_text(data)

    counts = collections.Counter(text)
    if len(counts) > MAX_VOCAB:
        frequent = sorted(counts, key=lambda c: (-counts[c], c))
        kept = [c for c in frequent if c != UNK][: MAX_VOCAB - 1]
        vocab = sorted(kept) + [UNK]
    else:
        vocab = sorted(counts)
    index = {c: i for i, c in enumerate(vocab)}
    unk = index.get(UNK, -1)
    ids = np.array([index.get(c, unk) for c in text], np.int32)

    num_val_chars = int(len(ids) * TEXT_VAL_FRACTION)
    if num_val_chars < seq_len + 1:
        need = math.ceil((seq_len + 1) / TEXT_VAL_FRACTION)
        if data is None:
            _checks.int_at_most(
                "seq_len", seq_len, num_val_chars - 1, "for the default text"
            )
        _invalid(
            "data",
            f"a text of at least {need} characters for seq_len={seq_len}, whose "
            f"last 10% holds one window of seq_len + 1 (it has {len(text)})",
            data,
        )
    train_ids, val_ids = ids[:-num_val_chars], ids[-num_val_chars:]

    def windows(split, n, rng):
        starts = np.arange(0, len(split) - seq_len, seq_len)
        if len(starts) > n:
            starts = np.sort(rng.choice(starts, n, replace=False))
        w = split[starts[:, None] + np.arange(seq_len + 1)]  # (samples, T + 1)
        return _one_hot(w[:, :-1], len(vocab)), np.ascontiguousarray(w[:, 1:])

    x_train, y_train = windows(train_ids, num_train, rng_train)
    x_val, y_val = windows(val_ids, num_val, rng_val)
    p = np.bincount(train_ids, minlength=len(vocab)) / len(train_ids)
    p = p[p > 0]
    bits = float(-np.sum(p * np.log2(p)))

    def decode(token_ids: np.ndarray) -> str:
        return "".join(vocab[int(i)] for i in np.ravel(token_ids))

    def step_labels(sequence: np.ndarray) -> list[str]:
        return [_show_char(vocab[i]) for i in np.argmax(sequence, axis=-1)]

    return Task(
        name="text",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        kind="language_model",
        output_units=len(vocab),
        return_sequences=True,
        baseline={"val_loss": bits * math.log(2), "val_bits_per_char": bits},
        baseline_names=dict.fromkeys(
            ("val_loss", "val_bits_per_char"),
            "predicting the training character frequencies (unigram)",
        ),
        step_labels=step_labels,
        causal=True,
        vocab=vocab,
        decode=decode,
    )


def _read_text(data) -> str:
    path = _existing_file(data)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _invalid("data", f"a UTF-8 text file (bad byte at offset {e.start})", data)
    if not text:
        _invalid("data", "a non-empty text file", data)
    return text


def target_names(task: Task) -> list[str] | None:
    """How the dashboard shows each class id of a text task's targets: its
    character, as on the time axis. None for other tasks (ids as numbers)."""
    return None if task.vocab is None else [_show_char(c) for c in task.vocab]


def _show_char(c: str) -> str:
    # Whitespace would leave a heatmap's axis label blank.
    return {" ": "·", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, c)


def read_npz(data) -> tuple[np.ndarray, np.ndarray]:
    """The arrays `x` and `y` of the .npz archive at `data`, as stored.

    Raises ArgumentError (`data`) for a missing, unreadable or malformed file.
    """
    path = _existing_file(data)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        archive = None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        # None: unreadable; an ndarray: an .npy file rather than an archive.
        _invalid("data", "a valid .npz file with arrays 'x' and 'y'", data)
    with archive:
        names = sorted(archive.files)
        if "x" not in names or "y" not in names:
            _invalid(
                "data",
                "an .npz file with arrays 'x' and 'y'",
                f"{data!r} with arrays {names}",
                quote=False,
            )
        try:
            x, y = archive["x"], archive["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            # A corrupt member, or an object array that only pickle could read.
            _invalid("data", "readable numeric arrays 'x' and 'y'", data)
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        # A zip whose members are not .npy files.
        _invalid("data", "an .npz file of .npy arrays 'x' and 'y'", data)
    return x, y


def _npz(data, num_train, num_val, seed) -> Task:
    """The user's own arrays, from an .npz archive with `x` and `y`.

    `x`: numbers, (samples, time, features). `y`: one target per sample. An
    integer (or boolean) `y` of shape (samples,) or (samples, 1) holds class
    labels 0..K-1: classification with K = max + 1 classes. Any float `y`, even
    one holding whole numbers, is regression: (samples,) or (samples, k). At
    least `NPZ_MIN_SAMPLES` samples, shuffled by the seed and split 80/20 into
    training and validation, each then cut to at most `num_train` / `num_val`.

    Baselines, from the training split, measured on the validation split:
    classification: the majority class's accuracy and the cross-entropy of the
    class frequencies (add-one smoothed, so a class missing from training does
    not give an infinite loss); regression: the MSE of the training mean.
    """
    x, y = read_npz(data)
    if x.dtype.kind not in "biuf" or x.ndim != 3 or 0 in x.shape:
        _invalid(
            "data",
            "'x' of numbers with shape (samples, time, features)",
            f"{data!r} with 'x' of dtype {x.dtype} and shape {x.shape}",
            quote=False,
        )
    if y.dtype.kind not in "biuf" or y.ndim == 0 or len(y) != len(x):
        _invalid(
            "data",
            f"'y' of numbers with {len(x)} samples like 'x'",
            f"{data!r} with 'y' of dtype {y.dtype} and shape {y.shape}",
            quote=False,
        )
    x = x.astype(np.float32)
    classify = y.dtype.kind in "biu"
    for key, array in (("x", x), ("y", y)):
        if not classify or key == "x":
            if not np.all(np.isfinite(array)):
                _invalid(
                    "data",
                    f"finite values in '{key}'",
                    f"{data!r} with NaN or inf in '{key}'",
                    quote=False,
                )
    if classify:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or np.min(y) < 0:
            _invalid(
                "data",
                "integer 'y' of class labels >= 0 with shape (samples,)",
                f"{data!r} with 'y' of shape {y.shape} and minimum {np.min(y)}",
                quote=False,
            )
        y = y.astype(np.int32)
    else:
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            _invalid(
                "data",
                "float 'y' with shape (samples,) or (samples, k)",
                f"{data!r} with 'y' of shape {y.shape}",
                quote=False,
            )
        y = y.astype(np.float32)
    if len(x) < NPZ_MIN_SAMPLES:
        _invalid(
            "data",
            f"at least {NPZ_MIN_SAMPLES} samples, a fifth of them to validate on",
            f"{data!r} with {len(x)}",
            quote=False,
        )

    order = np.random.default_rng(seed).permutation(len(x))
    split = max(1, round(len(x) * NPZ_VAL_FRACTION))
    val, train = order[:split][:num_val], order[split:][:num_train]
    x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]

    if classify:
        units = int(np.max(y)) + 1
        counts = np.bincount(y_train, minlength=units)
        p = (counts + 1) / (len(y_train) + units)
        baseline = {
            "val_loss": float(-np.mean(np.log(p[y_val]))),
            "val_accuracy": float(np.mean(y_val == np.argmax(counts))),
        }
        baseline_names = {
            "val_loss": "predicting the training class frequencies",
            "val_accuracy": "predicting the majority class",
        }
        kind = "classification"
    else:
        units = y.shape[1]
        mse = np.mean((y_val - np.mean(y_train, axis=0)) ** 2)
        baseline = {"val_loss": float(mse)}
        baseline_names = {"val_loss": "predicting the training mean"}
        kind = "regression"
    return Task(
        name="npz",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        kind=kind,
        output_units=units,
        return_sequences=False,
        baseline=baseline,
        baseline_names=baseline_names,
        step_labels=_npz_labels,
    )


def _npz_labels(sequence: np.ndarray) -> list[str]:
    return [str(t) for t in range(len(sequence))]


def _existing_file(data) -> str:
    try:
        path = os.fspath(data)
    except TypeError:
        _invalid("data", "a file path", data)
    if not os.path.isfile(path):
        _invalid("data", "an existing file", data)
    return path


def _one_hot(ids: np.ndarray, depth: int) -> np.ndarray:
    return np.eye(depth, dtype=np.float32)[ids]


def _invalid(argument: str, expected: str, value, quote: bool = True) -> NoReturn:
    raise ArgumentError(argument, expected, repr(value) if quote else value)
