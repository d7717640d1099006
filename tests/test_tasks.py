import collections
import math
import zipfile

import numpy as np
import pytest

from keras_lstm import ArgumentError
from keras_lstm.experiments.tasks import (
    LENGTH_TASKS,
    NPZ_MIN_SAMPLES,
    TASKS,
    make_task,
    read_npz,
)

SIZES = {"seq_len": 12, "seed": 0, "num_train": 40, "num_val": 20}
# npz sequences keep the length they have in the file.
NPZ_SIZES = {k: v for k, v in SIZES.items() if k != "seq_len"}


def sizes(name):
    return SIZES if name in LENGTH_TASKS else NPZ_SIZES


def write_text(tmp_path, text, name="text.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def classification_npz(tmp_path, n=50):
    rng = np.random.default_rng(1)
    return write_npz(tmp_path, x=rng.normal(size=(n, 6, 3)), y=rng.integers(0, 3, n))


def data_for(name, tmp_path):
    if name == "text":
        return write_text(
            tmp_path, "the quick brown fox jumps over the lazy dog. " * 30
        )
    if name == "npz":
        return classification_npz(tmp_path)
    return None


# Adding problem.


@pytest.mark.parametrize("seq_len", [2, 3, 7, 20])
def test_adding_has_one_marker_per_half_and_target_is_their_sum(seq_len):
    task = make_task("adding", **{**SIZES, "seq_len": seq_len})
    assert task.x_train.shape == (40, seq_len, 2)
    assert task.y_train.shape == (40, 1)
    for x, y in zip(task.x_train, task.y_train, strict=True):
        marked = np.flatnonzero(x[:, 1])
        assert set(np.unique(x[:, 1])) <= {0.0, 1.0}
        assert len(marked) == 2
        assert marked[0] < seq_len // 2 <= marked[1]
        assert y[0] == pytest.approx(x[marked[0], 0] + x[marked[1], 0])
    assert np.all((task.x_train[:, :, 0] >= 0) & (task.x_train[:, :, 0] < 1))


def test_adding_baseline_is_one_sixth():
    task = make_task("adding", seq_len=10, seed=3, num_train=4000, num_val=4000)
    assert task.baseline["val_loss"] == pytest.approx(1 / 6)
    empirical = np.mean((task.y_val - task.y_train.mean()) ** 2)
    assert task.baseline["val_loss_empirical"] == pytest.approx(empirical)
    assert empirical == pytest.approx(1 / 6, abs=0.015)
    assert task.kind == "regression"
    assert (task.output_units, task.return_sequences) == (1, False)


def test_adding_step_labels_show_marked_values():
    task = make_task("adding", **SIZES)
    x = task.x_train[0]
    labels = task.step_labels(x)
    assert len(labels) == 12
    assert [i for i, s in enumerate(labels) if s] == list(np.flatnonzero(x[:, 1]))


# Copy memory.


@pytest.mark.parametrize("seq_len", [1, 5, 30])
def test_copy_structure(seq_len):
    task = make_task("copy", **{**SIZES, "seq_len": seq_len})
    length = seq_len + 20
    assert task.x_train.shape == (40, length, 10)
    assert task.y_train.shape == (40, length)
    assert np.all(task.x_train.sum(axis=-1) == 1)
    ids = task.x_train.argmax(axis=-1)
    for seq, target in zip(ids, task.y_train, strict=True):
        assert np.all((seq[:10] >= 1) & (seq[:10] <= 8))
        assert np.all(seq[10 : length - 11] == 0)
        assert seq[length - 11] == 9
        assert np.all(seq[length - 10 :] == 0)
        assert np.all(target[: length - 10] == 0)
        assert np.array_equal(target[length - 10 :], seq[:10])
    assert task.kind == "sequence_classification"
    assert task.return_sequences
    assert task.output_units == 9
    assert task.y_train.max() < task.output_units


@pytest.mark.parametrize("seq_len", [1, 100])
def test_copy_baseline_is_the_memoryless_cross_entropy(seq_len):
    task = make_task("copy", **{**SIZES, "seq_len": seq_len})
    assert task.baseline["val_loss"] == pytest.approx(10 * math.log(8) / (seq_len + 20))
    # The memoryless strategy, scored directly: blank where blank, else 1/8.
    p = np.where(task.y_val == 0, 1.0, 1 / 8)
    assert task.baseline["val_loss"] == pytest.approx(np.mean(-np.log(p)))
    assert task.baseline["val_accuracy"] == pytest.approx(
        (seq_len + 10 + 10 / 8) / (seq_len + 20)
    )


def test_copy_symbols_are_roughly_uniform():
    task = make_task("copy", seq_len=1, seed=0, num_train=2000, num_val=1)
    counts = np.bincount(task.y_train[:, -10:].ravel(), minlength=9)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / counts.sum() - 1 / 8) < 0.02)


# Temporal order.


def scan_order(labels):
    relevant = [s for s in labels if s in ("X", "Y")]
    return ["XX", "XY", "YX", "YY"].index("".join(relevant))


@pytest.mark.parametrize("seq_len", [4, 9, 100])
def test_order_label_matches_a_scan_of_the_sequence(seq_len):
    task = make_task("order", **{**SIZES, "seq_len": seq_len, "num_train": 200})
    assert task.x_train.shape == (200, seq_len, 8)
    assert np.all(task.x_train.sum(axis=-1) == 1)
    for x, y in zip(task.x_train, task.y_train, strict=True):
        labels = task.step_labels(x)
        assert labels[0] == "E" and labels[-1] == "B"
        assert set(labels[1:-1]) <= {"a", "b", "c", "d", "X", "Y"}
        assert scan_order(labels) == y
        if seq_len == 100:
            t1, t2 = [t for t, s in enumerate(labels) if s in "XY"]
            assert 10 <= t1 <= 20 and 50 <= t2 <= 60
    assert set(task.y_train) == {0, 1, 2, 3}
    assert task.baseline == {
        "val_loss": pytest.approx(math.log(4)),
        "val_accuracy": 0.25,
    }
    assert (task.kind, task.output_units, task.return_sequences) == (
        "classification",
        4,
        False,
    )


# Text.


def test_text_windows_decode_back_to_the_text(tmp_path):
    text = "".join(chr(ord("a") + i % 7) + " \n"[i % 2] for i in range(500))
    task = make_task(
        "text",
        seq_len=9,
        seed=0,
        num_train=10_000,
        num_val=10_000,
        data=write_text(tmp_path, text),
    )
    assert task.vocab == sorted(set(text))
    assert task.x_train.shape[1:] == (9, len(task.vocab))
    inputs = task.x_train.argmax(axis=-1)
    # Targets are the inputs shifted by one.
    assert np.array_equal(task.y_train[:, :-1], inputs[:, 1:])
    # Consecutive windows tile the training text (the first 90%).
    train_text = text[: len(text) - len(text) // 10]
    tiled = task.decode(inputs)
    assert train_text.startswith(tiled)
    assert len(train_text) - len(tiled) <= 9
    for i, (x, y) in enumerate(zip(inputs, task.y_train, strict=True)):
        assert task.decode(x) + task.decode(y[-1:]) == text[9 * i : 9 * i + 10]
    val_text = text[len(text) - len(text) // 10 :]
    assert val_text.startswith(task.decode(task.x_val.argmax(axis=-1)))


def test_text_baseline_is_the_unigram_entropy_of_the_training_text(tmp_path):
    text = "abracadabra, said the magician.\n" * 20
    task = make_task(
        "text",
        seq_len=5,
        seed=0,
        num_train=5,
        num_val=5,
        data=write_text(tmp_path, text),
    )
    train_text = text[: len(text) - len(text) // 10]
    counts = collections.Counter(train_text)
    n = len(train_text)
    bits = -sum(c / n * math.log2(c / n) for c in counts.values())
    assert task.baseline["val_bits_per_char"] == pytest.approx(bits)
    assert task.baseline["val_loss"] == pytest.approx(bits * math.log(2))
    assert task.kind == "language_model"
    assert task.output_units == len(task.vocab)
    assert task.return_sequences


def test_text_subset_of_windows_is_seeded_and_keeps_text_order(tmp_path):
    letters = np.random.default_rng(0).integers(0, 26, 2000)
    text = "".join(chr(ord("a") + i) for i in letters)
    path = write_text(tmp_path, text)
    task = make_task("text", seq_len=10, seed=4, num_train=7, num_val=3, data=path)
    assert task.x_train.shape == (7, 10, 26)
    assert task.x_val.shape == (3, 10, 26)
    starts = []
    for x, y in zip(task.x_train.argmax(axis=-1), task.y_train, strict=True):
        starts.append(text.index(task.decode(x) + task.decode(y[-1:])))
    assert all(start % 10 == 0 for start in starts)
    assert starts == sorted(set(starts))
    assert starts[-1] + 11 <= 1800
    again = make_task("text", seq_len=10, seed=4, num_train=7, num_val=3, data=path)
    other = make_task("text", seq_len=10, seed=5, num_train=7, num_val=3, data=path)
    assert np.array_equal(task.x_train, again.x_train)
    assert not np.array_equal(task.x_train, other.x_train)


def test_text_rare_characters_share_one_id(tmp_path):
    common = "".join(chr(0x4E00 + i) for i in range(120))
    text = "ab" * 2000 + common
    task = make_task(
        "text",
        seq_len=8,
        seed=0,
        num_train=10,
        num_val=10,
        data=write_text(tmp_path, text),
    )
    assert len(task.vocab) == 100
    assert task.vocab[-1] == "\ufffd"
    assert {"a", "b"} <= set(task.vocab)
    assert task.x_train.shape[-1] == 100


def test_text_default_is_pydoc_topics():
    task = make_task("text", seq_len=32, seed=0, num_train=8, num_val=4)
    assert task.x_train.shape == (8, 32, len(task.vocab))
    assert len(task.vocab) <= 100
    assert 3.5 < task.baseline["val_bits_per_char"] < 6
    assert len(task.step_labels(task.x_train[0])) == 32
    assert all(label for label in task.step_labels(task.x_train[0]))


# Npz.


def test_npz_integer_labels_mean_classification(tmp_path):
    task = make_task(
        "npz",
        **{**NPZ_SIZES, "num_train": 100, "num_val": 100},
        data=classification_npz(tmp_path, n=50),
    )
    assert task.kind == "classification"
    assert (len(task.x_train), len(task.x_val)) == (40, 10)
    assert task.x_train.shape[1:] == (6, 3)
    assert task.x_train.dtype == np.float32
    assert task.y_train.shape == (40,)
    assert task.output_units == 3
    assert not task.return_sequences
    majority = np.bincount(task.y_train, minlength=3).argmax()
    assert task.baseline["val_accuracy"] == pytest.approx(
        np.mean(task.y_val == majority)
    )
    assert task.baseline["val_loss"] == pytest.approx(math.log(3), abs=0.3)


@pytest.mark.parametrize("y_shape, units", [((30,), 1), ((30, 4), 4)])
def test_npz_float_targets_mean_regression(tmp_path, y_shape, units):
    rng = np.random.default_rng(2)
    # Whole numbers stored as floats are still regression targets.
    y = rng.integers(0, 3, y_shape).astype(np.float64)
    path = write_npz(tmp_path, x=rng.normal(size=(30, 5, 2)), y=y)
    task = make_task("npz", **NPZ_SIZES, data=path)
    assert task.kind == "regression"
    assert task.output_units == units
    assert (len(task.x_train), len(task.x_val)) == (24, 6)
    assert task.y_train.shape == (24, units)
    expected = np.mean((task.y_val - task.y_train.mean(axis=0)) ** 2)
    assert task.baseline["val_loss"] == pytest.approx(expected)


def test_npz_split_is_a_seeded_partition(tmp_path):
    n = 25
    x = np.arange(n * 2 * 1, dtype=np.float64).reshape(n, 2, 1)
    path = write_npz(tmp_path, x=x, y=np.arange(n) % 2)
    task = make_task(
        "npz", **{**NPZ_SIZES, "num_train": 100, "num_val": 100}, data=path
    )
    seen = np.concatenate([task.x_train[:, 0, 0], task.x_val[:, 0, 0]]) / 2
    assert sorted(seen) == list(range(n))
    assert len(task.x_val) == 5
    capped = make_task("npz", seed=0, num_train=3, num_val=2, data=path)
    assert (len(capped.x_train), len(capped.x_val)) == (3, 2)


# Every task: determinism.


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_data_other_seed_other_data(name, tmp_path):
    data = data_for(name, tmp_path)
    a = make_task(name, **sizes(name), data=data)
    b = make_task(name, **sizes(name), data=data)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.baseline == b.baseline
    assert a.x_train.dtype == np.float32 and a.x_train.ndim == 3
    assert len(a.step_labels(a.x_train[0])) == a.x_train.shape[1]
    if name != "text":  # text uses every window at this size: nothing to draw
        c = make_task(name, **{**sizes(name), "seed": 1}, data=data)
        assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", ["adding", "copy", "order"])
def test_validation_set_does_not_depend_on_num_train(name):
    a = make_task(name, **SIZES)
    b = make_task(name, **{**SIZES, "num_train": 7})
    assert np.array_equal(a.x_val, b.x_val)


# Bad input: a one-line ValueError naming the argument and the value.


def raises(argument, value, **kwargs):
    task = kwargs.get("task", "adding")
    with pytest.raises(ArgumentError) as info:
        make_task(**{"task": task, **sizes(task), **kwargs})
    assert isinstance(info.value, ValueError)
    assert info.value.argument == argument
    message = str(info.value)
    assert f"argument `{argument}`" in message
    assert str(value) in message
    assert "\n" not in message
    return message


def test_unknown_task_lists_the_valid_ones():
    message = raises("task", "'lstm'", task="lstm")
    for name in TASKS:
        assert repr(name) in message


@pytest.mark.parametrize("argument", ["seq_len", "num_train", "num_val"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_sizes_must_be_positive_integers(argument, value):
    raises(argument, value, **{argument: value})


def test_seed_must_be_a_non_negative_integer():
    raises("seed", -1, seed=-1)


@pytest.mark.parametrize("name, seq_len", [("adding", 1), ("order", 3)])
def test_too_short_for_the_task(name, seq_len):
    raises("seq_len", seq_len, task=name, seq_len=seq_len)


@pytest.mark.parametrize("name", ["adding", "copy", "order"])
def test_synthetic_tasks_refuse_data(name, tmp_path):
    path = write_text(tmp_path, "hello")
    raises("data", path, task=name, data=path)


def test_npz_needs_data():
    raises("data", None, task="npz")


@pytest.mark.parametrize("name", ["text", "npz"])
def test_missing_file(name, tmp_path):
    path = str(tmp_path / "nowhere.bin")
    raises("data", path, task=name, data=path)
    raises("data", str(tmp_path), task=name, data=str(tmp_path))


def test_empty_text_file(tmp_path):
    path = write_text(tmp_path, "")
    raises("data", path, task="text", data=path)


def test_non_utf8_text_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    raises("data", str(path), task="text", data=str(path))


def test_npz_given_to_text_is_not_utf8(tmp_path):
    path = classification_npz(tmp_path)
    raises("data", path, task="text", data=path)


def test_text_too_short_for_seq_len(tmp_path):
    path = write_text(tmp_path, "x" * 50)
    message = raises("data", path, task="text", data=path, seq_len=10)
    assert "110" in message
    raises("seq_len", 10**7, task="text", seq_len=10**7)


def npz_cases(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4, 2))
    y = rng.integers(0, 2, 10)
    text = tmp_path / "text.npz"
    text.write_text("not an archive", encoding="utf-8")
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, x)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(
        open(write_npz(tmp_path, "full.npz", x=x, y=y), "rb").read()[:60]
    )
    bad_x = x.copy()
    bad_x[3, 1, 0] = np.nan
    inf_y = rng.normal(size=10)
    inf_y[2] = np.inf
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=x, y=np.array([None] * 10, dtype=object))
    plain_zip = tmp_path / "plain.npz"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("x", "not an array")
        archive.writestr("y", "nor this")
    return {
        "not_a_zip": str(text),
        "plain_zip": str(plain_zip),
        "npy": str(npy),
        "truncated": str(truncated),
        "objects": str(objects),
        "no_x": write_npz(tmp_path, "no_x.npz", y=y),
        "no_y": write_npz(tmp_path, "no_y.npz", x=x),
        "lengths": write_npz(tmp_path, "lengths.npz", x=x, y=y[:9]),
        "rank2": write_npz(tmp_path, "rank2.npz", x=x[:, :, 0], y=y),
        "rank4": write_npz(tmp_path, "rank4.npz", x=x[..., None], y=y),
        "strings": write_npz(tmp_path, "strings.npz", x=x.astype(str), y=y),
        "nan_x": write_npz(tmp_path, "nan_x.npz", x=bad_x, y=y),
        "inf_y": write_npz(tmp_path, "inf_y.npz", x=x, y=inf_y),
        "negative": write_npz(tmp_path, "negative.npz", x=x, y=y - 1),
        "labels_2d": write_npz(tmp_path, "labels_2d.npz", x=x, y=np.stack([y, y], 1)),
        "y_rank3": write_npz(tmp_path, "y_rank3.npz", x=x, y=x),
        "one_sample": write_npz(tmp_path, "one.npz", x=x[:1], y=y[:1]),
    }


NPZ_CASES = [
    "not_a_zip",
    "plain_zip",
    "npy",
    "truncated",
    "objects",
    "no_x",
    "no_y",
    "lengths",
    "rank2",
    "rank4",
    "strings",
    "nan_x",
    "inf_y",
    "negative",
    "labels_2d",
    "y_rank3",
    "one_sample",
]


def test_npz_sequences_keep_their_length_so_seq_len_is_refused(tmp_path):
    path = classification_npz(tmp_path)
    assert make_task("npz", **NPZ_SIZES, data=path).x_train.shape[1] == 6
    raises("seq_len", 12, task="npz", seq_len=12, data=path)
    raises("seq_len", None, task="adding", seq_len=None)


def test_npz_needs_enough_samples_to_validate_on(tmp_path):
    message = raises(
        "data", "with 19", task="npz", data=classification_npz(tmp_path, 19)
    )
    assert str(NPZ_MIN_SAMPLES) in message
    path = classification_npz(tmp_path, NPZ_MIN_SAMPLES)
    task = make_task("npz", seed=0, num_train=100, num_val=100, data=path)
    assert (len(task.x_train), len(task.x_val)) == (16, 4)


@pytest.mark.parametrize("name", TASKS)
def test_only_text_puts_later_targets_in_the_inputs(name, tmp_path):
    # A language model's input at t + 1 is its target at t; the other tasks'
    # targets are never among the inputs that follow them.
    task = make_task(name, **sizes(name), data=data_for(name, tmp_path))
    assert task.causal == (name == "text")
    if name == "text":
        inputs = task.x_train.argmax(axis=-1)
        assert np.array_equal(inputs[:, 1:], task.y_train[:, :-1])


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz(case, tmp_path):
    path = npz_cases(tmp_path)[case]
    raises("data", repr(path), task="npz", data=path)


def test_loading_writes_nothing(tmp_path):
    path = classification_npz(tmp_path)
    text = write_text(tmp_path, "some text to read. " * 20)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    make_task("npz", **NPZ_SIZES, data=path)
    make_task("text", **{**SIZES, "seq_len": 5}, data=text)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize("name", TASKS)
def test_every_baseline_metric_has_a_name(tmp_path, name):
    # The report words each baseline from the task itself.
    data = classification_npz(tmp_path) if name == "npz" else None
    seq_len = None if name == "npz" else 20
    task = make_task(name, seq_len=seq_len, seed=0, num_train=40, num_val=20, data=data)
    metrics = {"val_loss", "val_accuracy", "val_bits_per_char"} & set(task.baseline)
    assert set(task.baseline_names) == metrics
    assert all(task.baseline_names.values())


def test_read_npz_returns_the_stored_arrays(tmp_path):
    x = np.arange(24.0).reshape(2, 4, 3)
    y = np.array([1, 0])
    x_read, y_read = read_npz(write_npz(tmp_path, x=x, y=y))
    np.testing.assert_array_equal(x_read, x)
    np.testing.assert_array_equal(y_read, y)
